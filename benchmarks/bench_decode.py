"""Decode speed against the memory-bandwidth limit, for every architecture with a decode path.

For each architecture (a ~1.3B published-size config where one exists, else its test config widened to hidden
2048 x 24 layers; random weights, bf16) and batch size: tokens/s of greedy ``generate()`` — end to end, and the
marginal decode rate without the prefill (see :func:`tokens_per_second`) — with the decode step replayed from a
CUDA graph and eagerly,
and the limit ``batch / (bytes moved per step / measured bandwidth)``, where a step reads every weight once (the
embedding only for the batch's rows) and reads and writes the float32 recurrent state of every sequence.
Peers in the same run where installed: flash-linear-attention's GLA and transformers' own Mamba / Mamba-2.

    python benchmarks/bench_decode.py --out benchmarks/results/decode_<gpu>.json
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import DynamicCache

import hf_recurrent
from benchmarks.common import environment, knob_values, measured_bandwidth, write_json
from hf_recurrent.kernels.backend import knobs as tuning_knobs
from hf_recurrent.kernels.fused_layers import triton_gemv

CONFIGS = {  # published ~1.3B shapes
    "gla": dict(hidden_size=2048, num_hidden_layers=24, num_heads=4, expand_k=0.5, expand_v=1.0, hidden_ratio=4,
                vocab_size=32000),
    "retnet": dict(hidden_size=2048, num_hidden_layers=24, num_heads=8, vocab_size=32000),
    "mamba": dict(hidden_size=2048, num_hidden_layers=48, vocab_size=50280),
    "mamba2": dict(hidden_size=2048, num_hidden_layers=48, vocab_size=50280),
    "rwkv7": dict(hidden_size=2048, num_hidden_layers=24, vocab_size=65536),
    "rwkv4": dict(hidden_size=2048, num_hidden_layers=24, vocab_size=50277),
}
SCALE = dict(hidden_size=2048, num_hidden_layers=24, vocab_size=32000)  # others: their test config at this size


def bench_config(arch) -> dict:
    if arch.name in CONFIGS:
        return CONFIGS[arch.name]
    tiny = next(iter(arch.test_configs.values()))
    return {**{k: v for k, v in tiny.items() if k not in ("initializer_range",)}, **SCALE}


def state_bytes(model, batch: int) -> int:
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(torch.zeros(batch, 1, dtype=torch.long, device="cuda"), cache=cache, use_cache=True)
    total = 0
    for layer in cache.layers:
        for table in (layer.conv_states, layer.recurrent_states):
            total += sum(t.numel() * t.element_size() for t in table.values() if t is not None)
    return total


def weight_bytes(model, batch: int) -> int:
    emb = model.get_input_embeddings().weight
    full = sum(p.numel() * p.element_size() for p in model.parameters())
    tied = model.lm_head.weight.data_ptr() == emb.data_ptr()
    # the embedding table is gathered (batch rows), unless it is also the (fully read) LM head
    return full if tied else full - emb.numel() * emb.element_size() + batch * emb.shape[1] * emb.element_size()


def _generate_seconds(model, ids: torch.Tensor, new_tokens: int, repeats: int = 2) -> float:
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(ids, **kwargs)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def tokens_per_second(model, batch: int, new_tokens: int, prompt: int = 16) -> dict[str, float]:
    """Greedy ``generate()`` rates: ``generate_tok_s`` end to end (prompt prefill included) for ``new_tokens``, and
    ``decode_tok_s``, the marginal rate of the decode loop: ``batch * (n - n/4) / (t(n) - t(n/4))``, which leaves out
    the prefill and every per-call cost."""
    ids = torch.randint(3, model.config.vocab_size, (batch, prompt), device="cuda")
    _generate_seconds(model, ids, 4, repeats=1)  # warm-up: compile, tune, capture
    full = _generate_seconds(model, ids, new_tokens)
    short = _generate_seconds(model, ids, new_tokens // 4)
    return dict(generate_tok_s=batch * new_tokens / full,
                decode_tok_s=batch * (new_tokens - new_tokens // 4) / (full - short))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", nargs="*", default=sorted(hf_recurrent.ARCHITECTURES))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 16, 64])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/decode.json")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip fla's GLA and transformers' Mambas")
    parser.add_argument("--gemv", nargs="*", default=[], metavar="KNOB=VALUE",
                        help="matrix-vector kernel knobs (hf_recurrent.kernels.fused_layers.triton_gemv) for the run")
    args = parser.parse_args()
    with tuning_knobs(triton_gemv, **knob_values(args.gemv)):
        run(args)


def run(args) -> None:
    bandwidth = measured_bandwidth()
    rows: list[dict] = []

    def save() -> None:  # after every row: a run stopped by a time limit keeps what it measured
        write_json(args.out, dict(environment=environment(), bandwidth_bytes_s=bandwidth, gemv_knobs=args.gemv,
                                  rows=rows))

    rows += peers(args.batches, args.new_tokens, save) if args.peers else []
    for name in args.archs:
        if name not in hf_recurrent.ARCHITECTURES:
            print(f"skip {name}: not registered")
            continue
        arch = hf_recurrent.ARCHITECTURES[name]
        torch.manual_seed(0)
        try:
            with torch.device("cuda"):  # initialise on the GPU: seconds instead of minutes for 1.3B parameters
                model = arch.causal_lm_class(arch.config_class(**bench_config(arch))).to(torch.bfloat16).eval()
        except Exception as err:  # noqa: BLE001 - recorded in the results
            rows.append(dict(arch=name, error=repr(err)[:300]))
            continue
        params = sum(p.numel() for p in model.parameters())
        for batch in args.batches:
            try:
                step_bytes = weight_bytes(model, batch) + 2 * state_bytes(model, batch)
            except Exception as err:  # noqa: BLE001 - recorded in the results
                rows.append(dict(arch=name, batch=batch, error=repr(err)[:300]))
                save()
                continue
            limit = batch * bandwidth / step_bytes
            row = dict(arch=name, params=params, batch=batch, bytes_per_step=step_bytes, limit_tok_s=limit)
            for graphs in (True, False) if batch == args.batches[0] else (True,):  # eager: the first batch only
                model.config.use_cuda_graphs = graphs
                mode = "graph" if graphs else "eager"
                try:
                    rates = tokens_per_second(model, batch, args.new_tokens)
                    row.update({f"{mode}_{k}": v for k, v in rates.items()})
                except Exception as err:  # noqa: BLE001 - recorded in the results
                    row[f"{mode}_error"] = repr(err)[:300]
            row["decode_fraction_of_limit"] = row.get("graph_decode_tok_s", 0) / limit
            row["generate_fraction_of_limit"] = row.get("graph_generate_tok_s", 0) / limit
            rows.append(row)
            save()
            print(row, flush=True)
        del model
        torch.cuda.empty_cache()
    save()
    print(f"{'arch':10} {'batch':>5} {'decode (graph)':>14} {'generate (graph)':>16} {'eager decode':>12} "
          f"{'limit':>8} {'of limit':>8}")
    for r in rows:
        print(f"{r['arch']:10} {r.get('batch', '-'):>5} {r.get('graph_decode_tok_s', 0):>14.1f} "
              f"{r.get('graph_generate_tok_s', 0):>16.1f} {r.get('eager_decode_tok_s', 0):>12.1f} "
              f"{r.get('limit_tok_s', 0):>8.1f} {r.get('decode_fraction_of_limit', 0):>8.2%}")


def peers(batches: list[int], new_tokens: int, save) -> list[dict]:
    """The same measurement for peer implementations of the same shapes (eager generate, their defaults)."""
    rows: list[dict] = []
    candidates = []
    try:
        from fla.models import GLAConfig as FlaGLAConfig, GLAForCausalLM as FlaGLAForCausalLM

        candidates.append(("fla-gla", lambda: FlaGLAForCausalLM(FlaGLAConfig(**CONFIGS["gla"], fuse_cross_entropy=False))))
    except Exception as err:  # noqa: BLE001
        rows.append(dict(arch="fla-gla", error=repr(err)[:300]))
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    candidates.append(("hf-mamba", lambda: MambaForCausalLM(MambaConfig(hidden_size=2048, num_hidden_layers=48,
                                                                       vocab_size=50280))))
    candidates.append(("hf-mamba2", lambda: Mamba2ForCausalLM(Mamba2Config(hidden_size=2048, num_hidden_layers=48,
                                                                         num_heads=64, head_dim=64, n_groups=1,
                                                                         vocab_size=50280))))
    for name, build in candidates:
        try:
            torch.manual_seed(0)
            with torch.device("cuda"):
                model = build().to(torch.bfloat16).eval()
            for batch in batches[:2]:
                rates = tokens_per_second(model, batch, new_tokens)
                rows.append(dict(arch=name, batch=batch, **{f"eager_{k}": v for k, v in rates.items()}))
                save()
                print(rows[-1], flush=True)
            del model
            torch.cuda.empty_cache()
        except Exception as err:  # noqa: BLE001
            rows.append(dict(arch=name, error=repr(err)[:300]))
    return rows


if __name__ == "__main__":
    main()
