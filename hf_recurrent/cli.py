"""``hf-recurrent``: the command line (``generate``, ``convert``)."""

from __future__ import annotations

import argparse
import sys
import time

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _random_demo_model():
    """A small randomly initialised GLA with the byte-level tokenizer: stands in until a trained model ships."""
    from .modeling.gla import GLAConfig, GLAForCausalLM
    from .tokenization import byte_level_tokenizer

    tokenizer = byte_level_tokenizer()
    config = GLAConfig(vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2, num_heads=2,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    return GLAForCausalLM(config), tokenizer


def cmd_generate(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer

    import hf_recurrent  # noqa: F401  (registers the architectures)

    device = args.device or _default_device()
    dtype = DTYPES[args.dtype]
    if args.model is None:
        print("[hf-recurrent] no --model given: using a RANDOMLY INITIALISED 2-layer GLA (untrained; the output is "
              "noise). Pass --model DIR for a real model.", file=sys.stderr)
        model, tokenizer = _random_demo_model()
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = model.to(device=device, dtype=dtype).eval()
    inputs = tokenizer(args.prompt, return_tensors="pt").to(device)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    streamer = TextStreamer(tokenizer, skip_prompt=False)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=args.max_new_tokens,
            do_sample=args.temperature > 0,
            temperature=args.temperature if args.temperature > 0 else None,
            top_k=args.top_k if args.temperature > 0 else None,
            top_p=args.top_p if args.temperature > 0 else None,
            repetition_penalty=args.repetition_penalty,
            streamer=streamer,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
    elapsed = time.perf_counter() - start
    new_tokens = out.shape[1] - inputs["input_ids"].shape[1]
    print(f"\n[hf-recurrent] {new_tokens} tokens in {elapsed:.2f} s: {new_tokens / elapsed:.1f} tokens/s "
          f"({device}, {args.dtype})", file=sys.stderr)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .conversion import convert

    convert(args.format, args.src, args.dst, overwrite=args.overwrite)
    print(f"[hf-recurrent] converted {args.format} checkpoint {args.src} -> {args.dst}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-recurrent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="stream a continuation of PROMPT and print tokens/s")
    gen.add_argument("prompt")
    gen.add_argument("--model", help="model directory (save_pretrained / convert output)")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=50)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--repetition-penalty", type=float, default=1.0)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--device", help="default: cuda if available, else cpu")
    gen.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    gen.set_defaults(func=cmd_generate)

    conv = sub.add_parser("convert", help="convert a published checkpoint into hf_recurrent's format")
    conv.add_argument("format", help="source format, e.g. fla-gla (an unknown name lists the known ones)")
    conv.add_argument("src", help="source checkpoint (directory or file)")
    conv.add_argument("dst", help="output directory (must not exist unless --overwrite)")
    conv.add_argument("--overwrite", action="store_true")
    conv.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
