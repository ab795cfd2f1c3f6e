"""Benchmark of the chunked linear-attention op at the shapes of Mamba-2, RetNet and GateLoop on a CUDA GPU.

bf16 inputs, log decays in float32, B * T = 16384 tokens for T in 2k, 4k, 8k, 16k. Per variant, ours (the Triton
op, through the model-level call the architecture makes) against fla's op where fla has one, and causal SDPA
(flash attention) on the same q, k, v head sizes:

* ``mamba2``: H = 32, K = state 128, V = head dim 64, scalar data-dependent decay ``dt * A``, scale 1; fla:
  ``chunk_simple_gla`` (g per token and head);
* ``retnet``: H = 8, K = 256, V = 512 (the 1.3B model), fixed per-head decays; fla: ``chunk_retention`` and
  ``parallel_retention``;
* ``gateloop``: H = 16, D = 64, complex gates (q, k rotated to 128 wide, log-magnitude decay); fla has no GateLoop.

fla's ``chunk_simple_gla`` (which ``chunk_retention`` calls) refuses to run on Hopper with Triton 3.6: the failure
is recorded in the JSON, not hidden. Times are medians of ``triton.testing.do_bench`` (CUDA events), forward and
forward + backward. Writes JSON (GPU name, torch / triton / fla versions) to ``--out`` and prints a table.

    python benchmarks/bench_linear_attention_variants.py [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

from hf_recurrent.kernels.linear_attention import gated_linear_attention
from hf_recurrent.kernels.linear_attention.complex_gates import complex_gated_linear_attention
from hf_recurrent.modeling.retnet.modeling_retnet import retention_log_decay

TOKENS = 16384
SEQ_LENS = (2048, 4096, 8192, 16384)
SHAPES = {"mamba2": (32, 128, 64), "retnet": (8, 256, 512), "gateloop": (16, 64, 64)}  # H, K, V


def _time(fn, grads=()):
    return do_bench(fn, warmup=25, rep=100, grad_to_none=list(grads), return_mode="median")


def _inputs(variant: str, B: int, T: int) -> dict[str, torch.Tensor]:
    H, K, V = SHAPES[variant]
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = {
        "q": torch.randn(B, T, H, K, device="cuda", generator=gen, dtype=torch.bfloat16),
        "k": torch.randn(B, T, H, K, device="cuda", generator=gen, dtype=torch.bfloat16) * K**-0.5,
        "v": torch.randn(B, T, H, V, device="cuda", generator=gen, dtype=torch.bfloat16),
        "do": torch.randn(B, T, H, V, device="cuda", generator=gen, dtype=torch.bfloat16),
    }
    if variant == "mamba2":
        dt = torch.exp(torch.rand(B, T, H, device="cuda", generator=gen) * math.log(100) + math.log(1e-3))
        x["g"] = dt * -torch.linspace(1, 16, H, device="cuda")
    elif variant == "retnet":
        x["g"] = retention_log_decay(H, "cuda").expand(B, T, H).contiguous()
    else:
        z = torch.randn(B, T, H, 2, device="cuda", generator=gen) * 3
        x["g"], x["phase"] = F.logsigmoid(z.norm(dim=-1)), torch.atan2(z[..., 1], z[..., 0])
    for name in ("q", "k", "v", "g", "phase"):
        if name in x and not (variant == "retnet" and name == "g"):
            x[name].requires_grad_(True)
    return x


def _candidates(variant: str, x: dict[str, torch.Tensor]) -> tuple[dict[str, callable], tuple[torch.Tensor, ...]]:
    q, k, v, g = x["q"], x["k"], x["v"], x["g"]
    scale = 1.0 if variant == "mamba2" else q.shape[-1] ** -0.5
    out = {}
    if variant == "gateloop":
        out["ours"] = lambda: complex_gated_linear_attention(q, k, v, g, x["phase"], scale=scale, backend="triton")[0]
    else:
        out["ours"] = lambda: gated_linear_attention(q, k, v, g, scale=scale, backend="triton")[0]
    if variant == "mamba2":
        from fla.ops.simple_gla import chunk_simple_gla

        out["fla_chunk_simple_gla"] = lambda: chunk_simple_gla(q, k, v, g=g, scale=scale)[0]
    if variant == "retnet":
        from fla.ops.retention import chunk_retention, parallel_retention

        out["fla_chunk_retention"] = lambda: chunk_retention(q, k, v, scale=scale)[0]
        out["fla_parallel_retention"] = lambda: parallel_retention(q, k, v, scale=scale)[0]
    qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_(True) for t in (q, k, v))

    def sdpa():
        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True).transpose(1, 2)

    out["sdpa"] = sdpa
    return out, (qt, kt, vt)


def bench(variant: str, T: int) -> dict:
    B = TOKENS // T
    x = _inputs(variant, B, T)
    row = {"variant": variant, "T": T, "B": B, "H_K_V": SHAPES[variant]}
    candidates, sdpa_leaves = _candidates(variant, x)
    for name, fn in candidates.items():
        leaves = sdpa_leaves if name == "sdpa" else [t for t in x.values() if t.requires_grad]
        try:
            row[f"{name}_fwd_ms"] = _time(fn)

            def fwd_bwd():
                fn().backward(x["do"])

            row[f"{name}_fwdbwd_ms"] = _time(fwd_bwd, leaves)
        except Exception as exc:  # noqa: BLE001 - recorded in the results, the run goes on
            row[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:500]
            traceback.print_exc()
    return row


def main() -> None:
    gpu = torch.cuda.get_device_name()
    slug = re.sub(r"[^A-Za-z0-9]+", "_", gpu).strip("_")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=f"benchmarks/results/linear_attention_variants_{slug}.json")
    parser.add_argument("--variants", default="mamba2,retnet,gateloop")
    args = parser.parse_args()
    try:
        import fla

        fla_version = fla.__version__
    except Exception:  # noqa: BLE001
        fla_version = None
    rows = []
    for variant in args.variants.split(","):
        for T in SEQ_LENS:
            rows.append(bench(variant, T))
            print(json.dumps(rows[-1]), flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(dict(
                gpu=gpu, torch=torch.__version__, triton=triton.__version__, fla=fla_version, dtype="bfloat16",
                tokens=TOKENS, timing="triton.testing.do_bench median, ms", rows=rows), indent=2) + "\n")
    print(f"{gpu}  torch {torch.__version__}  triton {triton.__version__}  fla {fla_version}")
    for r in rows:
        ours = r.get("ours_fwdbwd_ms")
        cells = [
            f"{k[:-10]} {r[k]:.3f}ms" + (f" ({r[k] / ours:.2f}x ours)" if ours and not k.startswith("ours") else "")
            for k in r if k.endswith("_fwdbwd_ms")
        ]
        print(f"{r['variant']:>9} T={r['T']:>5} fwd+bwd: " + "; ".join(cells))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
