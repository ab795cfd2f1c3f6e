"""Benchmark of chunked gated linear attention on a CUDA GPU: ours (Triton) vs fla's ``chunk_gla`` vs causal SDPA.

bf16, H = 16 heads, head dim 128, B * T = 16384 tokens for T in 2k, 4k, 8k, 16k; vector (GLA) log decay in float32.
Times are medians of ``triton.testing.do_bench`` (CUDA events), forward and forward + backward. Writes a JSON file
(``--out``, default ``benchmarks/results/linear_attention_<gpu>.json``) and prints a table.

    python benchmarks/bench_linear_attention.py [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

from hf_recurrent.kernels.backend import knobs as tuning_knobs
from hf_recurrent.kernels.linear_attention import triton as ours
from hf_recurrent.kernels.linear_attention import triton_chunk

H, D, TOKENS = 16, 128, 16384
SEQ_LENS = (2048, 4096, 8192, 16384)
BASELINE = None  # --baseline: another version of triton_chunk.py, timed as "baseline" (vector decay)
VARIANTS: tuple[str, ...] = ()  # --variants: also time ours (vector decay) with these kernel settings


def _time(fn, grads_of=()):
    return do_bench(fn, warmup=50, rep=200, grad_to_none=list(grads_of), return_mode="median")


def _fwd_bwd(fn, do):
    def run():
        out = fn()
        out.backward(do)

    return run


def bench_one(T: int) -> dict:
    B = TOKENS // T
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    g = F.logsigmoid(torch.randn(B, T, H, D, device="cuda")) / 16
    g_scalar = F.logsigmoid(torch.randn(B, T, H, device="cuda")) / 16
    do = torch.randn_like(v)
    for x in (q, k, v, g, g_scalar):
        x.requires_grad_(True)
    scale = D**-0.5
    row = {"T": T, "B": B}

    def record(name, fwd, grads):
        try:
            row[f"{name}_fwd_ms"] = _time(lambda: fwd())
            row[f"{name}_fwdbwd_ms"] = _time(_fwd_bwd(fwd, do), grads)
        except Exception as exc:  # noqa: BLE001 - record the failure honestly and go on
            row[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:500]
            traceback.print_exc()

    record("ours", lambda: ours.chunk_gla(q, k, v, g, scale)[0], [q, k, v, g])
    for variant in VARIANTS:  # "NAME=VALUE,NAME=VALUE": module settings of triton_chunk (BC, STATE_BK, STATE_BV)
        settings = {name: int(value) for name, value in (kv.split("=") for kv in variant.split(","))}
        with tuning_knobs(triton_chunk, **settings):
            record(f"ours[{variant}]", lambda: ours.chunk_gla(q, k, v, g, scale)[0], [q, k, v, g])
    if BASELINE is not None:
        record("baseline", lambda: BASELINE.chunk_gla(q, k, v, g, scale)[0], [q, k, v, g])
    record("ours_scalar_decay", lambda: ours.chunk_gla(q, k, v, g_scalar, scale)[0], [q, k, v, g_scalar])
    try:
        from fla.ops.gla import chunk_gla as fla_chunk_gla

        record("fla", lambda: fla_chunk_gla(q, k, v, g, scale=scale)[0], [q, k, v, g])
    except Exception as exc:  # noqa: BLE001
        row["fla_error"] = f"{type(exc).__name__}: {exc}"[:500]
    qt, kt, vt = (x.detach().transpose(1, 2).contiguous().requires_grad_(True) for x in (q, k, v))
    dot = do.transpose(1, 2).contiguous()

    def sdpa():
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)

    try:
        row["sdpa_fwd_ms"] = _time(sdpa)
        row["sdpa_fwdbwd_ms"] = _time(_fwd_bwd(sdpa, dot), [qt, kt, vt])
    except Exception as exc:  # noqa: BLE001
        row["sdpa_error"] = f"{type(exc).__name__}: {exc}"[:500]
    return row


def _tuned() -> dict:
    """Launch settings the autotuner chose for our kernels, per tuning key."""
    out = {}
    for name in ("_fwd_h_kernel", "_fwd_o_kernel", "_bwd_dh_kernel", "_bwd_kernel", "_bwd_dv_kernel"):
        cache = getattr(getattr(triton_chunk, name), "cache", {})
        out[name] = {str(key): str(config) for key, config in cache.items()}
    return out


def _write(out: str, gpu: str, fla_version: str | None, rows: list[dict]) -> None:
    result = {
        "gpu": gpu,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "fla": fla_version,
        "dtype": "bfloat16",
        "heads": H,
        "head_dim": D,
        "tokens": TOKENS,
        "timing": "triton.testing.do_bench median, ms",
        "rows": rows,
        "tuned": _tuned(),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")


def _profile(T: int = 2048) -> None:
    """Per-kernel CUDA time of our forward + backward at ``T`` (after the timed runs, so tuned and compiled)."""
    B = TOKENS // T
    q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = (F.logsigmoid(torch.randn(B, T, H, D, device="cuda")) / 16).requires_grad_(True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            ours.chunk_gla(q, k, v, g, D**-0.5)[0].backward(torch.ones_like(v))
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))


def main() -> None:
    gpu = torch.cuda.get_device_name()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    slug = re.sub(r"[^A-Za-z0-9]+", "_", gpu).strip("_")
    parser.add_argument("--out", default=f"benchmarks/results/linear_attention_{slug}.json")
    parser.add_argument("--profile", action="store_true", help="also print per-kernel times of ours at T=2048")
    parser.add_argument("--variants", nargs="*", default=[], help="e.g. BC=32 STATE_BV=32,STATE_BK=64 (vector decay)")
    parser.add_argument("--baseline", help="path of another triton_chunk.py to time as 'baseline' (vector decay)")
    parser.add_argument("--seq-lens", type=int, nargs="*", default=list(SEQ_LENS))
    args = parser.parse_args()
    global VARIANTS, BASELINE
    VARIANTS = tuple(args.variants)
    if args.baseline:
        import importlib.util

        spec = importlib.util.spec_from_file_location("hf_recurrent.kernels.linear_attention._baseline", args.baseline)
        BASELINE = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(BASELINE)
    try:
        import fla

        fla_version = fla.__version__
    except Exception:  # noqa: BLE001
        fla_version = None
    rows = []
    for T in args.seq_lens:
        rows.append(bench_one(T))
        print(json.dumps(rows[-1]), flush=True)
        _write(args.out, gpu, fla_version, rows)
    if args.profile:
        _profile()
    print(f"{gpu}  torch {torch.__version__}  triton {triton.__version__}  fla {fla_version}")
    cols = ["ours", *[f"ours[{v}]" for v in VARIANTS], *(["baseline"] if BASELINE else []), "ours_scalar_decay"]
    cols += ["fla", "sdpa"]
    print(f"{'T':>6} " + " ".join(f"{c:>22}" for c in cols) + "   fla/ours  sdpa/ours (fwd+bwd)")
    for r in rows:
        cells = []
        for c in cols:
            if f"{c}_fwd_ms" in r and f"{c}_fwdbwd_ms" in r:
                cells.append(f"{r[f'{c}_fwd_ms']:.3f} / {r[f'{c}_fwdbwd_ms']:.3f}")
            else:
                cells.append("failed")
        ours_t = r.get("ours_fwdbwd_ms")
        ratios = [
            f"{r[f'{c}_fwdbwd_ms'] / ours_t:.2f}x" if ours_t and f"{c}_fwdbwd_ms" in r else "-" for c in ("fla", "sdpa")
        ]
        print(f"{r['T']:>6} " + " ".join(f"{x:>22}" for x in cells) + f"   {ratios[0]:>8}  {ratios[1]:>9}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
