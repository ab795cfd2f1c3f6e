"""``hf-recurrent``: the command line (``generate``, ``train``, ``convert``, ``export``, ``push``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def bundled_model_path() -> Path:
    """The small GLA trained on the Python standard library that ships with the package (see the README)."""
    return Path(__file__).parent / "bundled" / "gla-stdlib"


def _sampling_options(args: argparse.Namespace) -> dict:
    """Generation options given on the command line; the rest come from the model's generation_config.json."""
    options: dict = {"max_new_tokens": args.max_new_tokens}
    if args.temperature is not None:
        options["do_sample"] = args.temperature > 0
        if args.temperature > 0:
            options["temperature"] = args.temperature
    for name in ("top_k", "top_p", "repetition_penalty"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def cmd_generate(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer

    import hf_recurrent  # noqa: F401  (registers the architectures)

    device = args.device or _default_device()
    dtype = DTYPES[args.dtype]
    path = args.model
    if path is None:
        path = bundled_model_path()
        print(f"[hf-recurrent] no --model given: using the bundled GLA ({path.name}, 4.1M parameters, trained on the "
              "Python standard library's source; see the README)", file=sys.stderr, flush=True)
    if not Path(path).exists() and str(path).startswith(("/", ".", "~")):  # a local path, not a Hub repo id
        print(f"[hf-recurrent] generate failed: --model {str(path)!r}: no such folder", file=sys.stderr)
        return 2
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:  # a missing folder, no config.json / tokenizer, an unknown model type
        print(f"[hf-recurrent] generate failed: cannot load a model and its tokenizer from {str(path)!r}: {err}",
              file=sys.stderr)
        return 2
    inputs = tokenizer(args.prompt, return_tensors="pt").to(device)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    streamer = TextStreamer(tokenizer, skip_prompt=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, **_sampling_options(args), streamer=streamer, pad_token_id=pad)
    elapsed = time.perf_counter() - start
    new_tokens = out.shape[1] - inputs["input_ids"].shape[1]
    print(f"\n[hf-recurrent] {new_tokens} tokens in {elapsed:.2f} s: {new_tokens / elapsed:.1f} tokens/s "
          f"({device}, {args.dtype})", file=sys.stderr)
    return 0


def _parse_overrides(pairs: list[str]) -> dict:
    """``key=value`` pairs; values parsed as JSON when they parse (numbers, true/false, null), else strings."""
    import json

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--config expects key=value, got {pair!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from .modeling.registry import ARCHITECTURES
    from .training import TrainSettings, train

    if args.arch not in ARCHITECTURES:  # before reading any data
        print(f"[hf-recurrent] train failed: unknown --arch {args.arch!r}; choose one of {', '.join(ARCHITECTURES)}",
              file=sys.stderr)
        return 2

    settings = TrainSettings(
        arch=args.arch, data=args.data, out=args.out, config=_parse_overrides(args.config), tokenizer=args.tokenizer,
        pattern=args.pattern, seq_len=args.seq_len, batch_size=args.batch_size, max_steps=args.max_steps,
        learning_rate=args.lr, bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing,
        pack=not args.no_pack, save_dtype=args.save_dtype, seed=args.seed, logging_steps=args.logging_steps,
        max_minutes=args.max_minutes,
    )
    try:
        out = train(settings)
    except (FileNotFoundError, ValueError) as err:  # no data files, too little data, a bad config override
        print(f"[hf-recurrent] train failed: {err}", file=sys.stderr)
        return 2
    print(f"[hf-recurrent] trained model written to {out} (loss curve: {out / 'loss_curve.png'})", file=sys.stderr)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .conversion import convert
    from .conversion.errors import ConversionError

    try:
        convert(args.format, args.src, args.dst, overwrite=args.overwrite)
    except ConversionError as err:
        print(f"[hf-recurrent] conversion failed: {err}", file=sys.stderr)
        return 2
    print(f"[hf-recurrent] converted {args.format} checkpoint {args.src} -> {args.dst}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .conversion.errors import ConversionError
    from .hub import CardInfo, ExportError, export_model

    card = CardInfo(model_name=args.model_name, license=args.license, base_model=args.base_model,
                    datasets=tuple(args.dataset), conversion_source=args.conversion_source, parity=args.parity)
    try:
        export_model(args.src, args.dst, max_shard_size=args.max_shard_size, card=card, overwrite=args.overwrite)
    except (ExportError, ConversionError) as err:
        print(f"[hf-recurrent] export failed: {err}", file=sys.stderr)
        return 2
    print(f"[hf-recurrent] exported {args.src} -> {args.dst} (loads with trust_remote_code=True)", file=sys.stderr)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from .hub import PushError, push_folder

    try:
        url = push_folder(args.dir, args.repo_id, private=args.private, revision=args.revision, token=args.token,
                          commit_message=args.commit_message)
    except PushError as err:
        print(f"[hf-recurrent] push failed: {err}", file=sys.stderr)
        return 2
    print(f"[hf-recurrent] pushed {args.dir} to {args.repo_id}: {url}", file=sys.stderr)
    return 0


def _number(kind: type, low: float, high: float | None = None, low_open: bool = False):
    """An argparse type: ``kind`` within ``[low, high]`` (``(low, high]`` when ``low_open``), else a usage error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a{'n integer' if kind is int else ' number'}, got {text!r}")
        if value < low or (low_open and value == low) or (high is not None and value > high):
            bounds = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}{']' if high else ')'}"
            raise argparse.ArgumentTypeError(f"{text} is outside {bounds}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-recurrent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="stream a continuation of PROMPT and print tokens/s")
    gen.add_argument("prompt")
    gen.add_argument("--model", help="model directory (save_pretrained / convert output); default: the bundled GLA")
    gen.add_argument("--max-new-tokens", type=_number(int, 1), default=64)
    gen.add_argument("--temperature", type=_number(float, 0),
                     help="0 = greedy; default: the model's generation_config.json")
    gen.add_argument("--top-k", type=_number(int, 1))
    gen.add_argument("--top-p", type=_number(float, 0, 1, low_open=True))
    gen.add_argument("--repetition-penalty", type=_number(float, 0, low_open=True))
    gen.add_argument("--seed", type=int)
    gen.add_argument("--device", help="default: cuda if available, else cpu")
    gen.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    gen.set_defaults(func=cmd_generate)

    tr = sub.add_parser("train", help="train a causal LM of any architecture on text files (transformers' Trainer)")
    tr.add_argument("--arch", required=True, help="architecture name, e.g. gla")
    tr.add_argument("--data", nargs="+", required=True, help="files, globs, or directories (searched for --pattern)")
    tr.add_argument("--out", required=True, help="output directory for the model, tokenizer and loss curve")
    tr.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. hidden_size=256")
    tr.add_argument("--tokenizer", help="tokenizer directory (default: byte-level, 256 bytes + end-of-text)")
    tr.add_argument("--pattern", default="*.py", help="file pattern for --data directories")
    tr.add_argument("--seq-len", type=_number(int, 2), default=512)
    tr.add_argument("--batch-size", type=_number(int, 1), default=16)
    tr.add_argument("--max-steps", type=_number(int, 1), default=1000)
    tr.add_argument("--lr", type=_number(float, 0, low_open=True), default=3e-3)
    tr.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    tr.add_argument("--gradient-checkpointing", action="store_true")
    tr.add_argument("--no-pack", action="store_true", help="plain [B, seq_len] blocks instead of packed documents")
    tr.add_argument("--save-dtype", choices=sorted(DTYPES), default="float32")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--logging-steps", type=int, default=10)
    tr.add_argument("--max-minutes", type=float, help="stop (and save) after this much wall-clock time")
    tr.set_defaults(func=cmd_train)

    conv = sub.add_parser("convert", help="convert a published checkpoint into hf_recurrent's format")
    conv.add_argument("format", help="source format, e.g. fla-gla (an unknown name lists the known ones)")
    conv.add_argument("src", help="source checkpoint (directory or file)")
    conv.add_argument("dst", help="output directory (must not exist unless --overwrite)")
    conv.add_argument("--overwrite", action="store_true")
    conv.set_defaults(func=cmd_convert)

    exp = sub.add_parser("export", help="write a self-contained Hub repository folder (remote code, model card)")
    exp.add_argument("src", help="model directory (save_pretrained / convert output)")
    exp.add_argument("dst", help="output directory (must not exist unless --overwrite)")
    exp.add_argument("--max-shard-size", default="2GB", help="safetensors shard size limit (default 2GB)")
    exp.add_argument("--model-name", help="name the model card uses, e.g. the Hub repo id (default: DST's name)")
    exp.add_argument("--license", default="apache-2.0", help="license identifier for the card (default apache-2.0)")
    exp.add_argument("--base-model", help="Hub id of the checkpoint this one was converted from")
    exp.add_argument("--dataset", action="append", default=[], help="Hub id of a training dataset (repeatable)")
    exp.add_argument("--conversion-source", help="how the weights were obtained, e.g. 'fla-gla from fla-hub/...'")
    exp.add_argument("--parity", help="evidence the conversion is faithful, e.g. 'max |dlogits| 2e-6 vs fla 0.6.0'")
    exp.add_argument("--overwrite", action="store_true")
    exp.set_defaults(func=cmd_export)

    push = sub.add_parser("push", help="upload an exported folder to the Hugging Face Hub")
    push.add_argument("dir", help="folder written by `hf-recurrent export`")
    push.add_argument("repo_id", help="e.g. user/gla-1.3b (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", help="branch to upload to (created if missing; default main)")
    push.add_argument("--token", help="Hub token (default: $HF_TOKEN, else the `hf auth login` cache)")
    push.add_argument("--commit-message")
    push.set_defaults(func=cmd_push)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
