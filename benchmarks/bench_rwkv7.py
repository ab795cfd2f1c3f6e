"""RWKV-7 on a CUDA GPU: the delta-rule kernel against fla's rwkv7 ops, and decode speed of a 1.5B-config model.

1. Kernel, bf16, H = 32 heads of 64 (the 1.5B model's), B*T = 16384 tokens at T = 2k/4k/8k/16k: medians of
   ``triton.testing.do_bench`` for forward and forward+backward of our fused recurrent Triton kernel and of fla's
   ``chunk_rwkv7`` and ``fused_recurrent_rwkv7`` (where fla imports and runs).
2. Decode: RWKV-7 with the 1.5B shapes (hidden 2048, 24 layers, vocabulary 65536; random weights, bf16), greedy
   ``generate()`` of a fixed number of new tokens after a 16-token prompt, at batch 1 and 16: tokens/s.

    python benchmarks/bench_rwkv7.py --out benchmarks/results/rwkv7_<gpu>.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

import hf_recurrent  # noqa: F401  (registers the architectures)
from benchmarks.common import environment, write_json
from hf_recurrent.kernels.delta_rule import generalized_delta_rule
from hf_recurrent.modeling.rwkv7 import HfrRWKV7Config, HfrRWKV7ForCausalLM

H, D, TOKENS = 32, 64, 16384
CONFIG_1B5 = dict(vocab_size=65536, hidden_size=2048, num_hidden_layers=24, head_size=64, intermediate_size=8192,
                  decay_low_rank_dim=96, a_low_rank_dim=96, v_low_rank_dim=64, gate_low_rank_dim=256)


def _inputs(T: int):
    B = TOKENS // T
    kk = F.normalize(torch.randn(B, T, H, D, device="cuda"), dim=-1)
    gate = torch.sigmoid(torch.randn(B, T, H, D, device="cuda"))
    log_w = -0.6065 * torch.sigmoid(torch.randn(B, T, H, D, device="cuda"))
    tensors = [torch.randn(B, T, H, D, device="cuda"), log_w, torch.randn(B, T, H, D, device="cuda"),
               torch.randn(B, T, H, D, device="cuda"), -kk, kk * gate]
    return [t.to(torch.bfloat16).requires_grad_(True) for t in tensors]


def _time(fn, inputs, backward: bool) -> float:
    import triton.testing

    def run():
        o, _ = fn(*inputs)
        if backward:
            o.backward(torch.ones_like(o))

    return triton.testing.do_bench(run, warmup=10, rep=100, return_mode="median")


def _kernel_fns(peers: bool) -> dict:
    if not peers:
        return {"ours_fused_recurrent": lambda *x: generalized_delta_rule(*x, backend="triton")}
    try:
        from fla.ops.rwkv7 import chunk_rwkv7, fused_recurrent_rwkv7
    except ImportError as err:
        print(f"fla unavailable: {err}")
        return {}
    return {"fla_fused_recurrent_rwkv7": lambda *x: fused_recurrent_rwkv7(*x, scale=1.0, output_final_state=False),
            "fla_chunk_rwkv7": lambda *x: chunk_rwkv7(*x, scale=1.0)}


def bench_kernels(peers: bool) -> Iterator[dict]:
    """Rows per T of ours (``peers=False``) or of fla's ops (``peers=True``, whose first calls compile for minutes)."""
    for T in (2048, 4096, 8192, 16384):
        inputs = _inputs(T)
        row = {"T": T, "B": TOKENS // T}
        for name, fn in _kernel_fns(peers).items():
            for backward in (False, True):
                key = f"{name}_{'fwd_bwd' if backward else 'fwd'}_ms"
                try:
                    row[key] = _time(fn, inputs, backward)
                except Exception as err:  # noqa: BLE001 - a peer that fails at a size is recorded, not fatal
                    row[key] = f"failed: {type(err).__name__}: {str(err)[:200]}"
                print(f"T={T} {key}: {row[key]}", flush=True)  # a run stopped by its time limit keeps its log
        yield row


def bench_decode(new_tokens: int) -> list[dict]:
    torch.manual_seed(0)
    model = HfrRWKV7ForCausalLM(HfrRWKV7Config(**CONFIG_1B5)).to("cuda", torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    rows = []
    for batch in (1, 16):
        prompt = torch.randint(0, CONFIG_1B5["vocab_size"], (batch, 16), device="cuda")
        kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            model.generate(prompt, **{**kwargs, "max_new_tokens": 8, "min_new_tokens": 8})  # warm-up, compile
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = model.generate(prompt, **kwargs)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        generated = batch * (out.shape[1] - prompt.shape[1])
        row = {"batch": batch, "new_tokens": new_tokens, "seconds": seconds, "tokens_per_s": generated / seconds,
               "parameters": params}
        print(row)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/rwkv7.json")
    parser.add_argument("--new-tokens", type=int, default=256)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_rwkv7 needs a CUDA GPU")
    # Ours first, then decode, then fla (slow to compile): each stage is saved as it ends.
    result = {"environment": environment(), "kernel_bf16_H32_D64": list(bench_kernels(peers=False))}
    write_json(args.out, result)
    result["decode_1.5B_bf16"] = bench_decode(args.new_tokens)
    write_json(args.out, result)
    for ours, peer in zip(result["kernel_bf16_H32_D64"], bench_kernels(peers=True)):
        ours.update(peer)
        write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
