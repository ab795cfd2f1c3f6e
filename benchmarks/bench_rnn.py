"""Gated RNNs on a CUDA GPU: the fused LSTM kernel against cuDNN and a PyTorch loop; the minGRU scan against a loop.

1. FlashRNN's setup: bf16, B = 16, T = 1024, hidden 768 split into heads of 64, 128, 256 and 768. Forward and
   forward+backward of one LSTM layer *including its input projection* (as ``torch.nn.LSTM`` computes it):
   ours (``gate_proj`` matmul + the fused Triton kernel), ``nn.LSTM(768, 768)`` on cuDNN (dense, which is our
   head size 768), and the PyTorch loop (our reference backend: one batched matmul and the point-wise cell per
   step, as FlashRNN's "vanilla" backend). Goal: faster than cuDNN at every head size and >= 50x the loop.
   Ours is timed in every forward design that applies (:func:`_designs`: the tiled kernel, the register-resident
   one, column tiles of 16/32 for split heads (64 only up to heads of 128), and at heads of 256 and 768 the
   split-resident kernels in column tiles of 16/32, and in tiles of 16 with the tiled backward; knobs of
   ``hf_recurrent.kernels.rnn_cells.triton``), all
   recorded under ``designs``; the row's ``ours_*`` are the best of them, named in ``ours_*_design``
   (``default_design``: the one the default knobs pick).
2. minGRU's scan ``h_t = a_t h_{t-1} + b_t`` (bf16, B = 16, 1536 channels) at T = 512 and 4096: our Triton scan
   against the sequential PyTorch loop and minGRU-pytorch's log-space Heinsen scan (``logcumsumexp``), forward and
   forward+backward.

Medians of ``triton.testing.do_bench`` (the loops: a few timed runs). JSON with the GPU name and versions:

    python benchmarks/bench_rnn.py --out benchmarks/results/rnn_<gpu>.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import triton.testing

from benchmarks.common import environment, write_json
from hf_recurrent.kernels.backend import knobs as tuning_knobs
from hf_recurrent.kernels.linear_scan import linear_scan
from hf_recurrent.kernels.rnn_cells import rnn_cell_scan
from hf_recurrent.kernels.rnn_cells import triton as rnn_triton

B, T, HIDDEN = 16, 1024, 768
HEADS = [64, 128, 256, 768]


def _bench(fn, slow: bool = False) -> float:
    if not slow:
        return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _lstm_layer(head_dim: int, backend: str):
    H = HIDDEN // head_dim
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(B, T, HIDDEN, device="cuda", generator=gen, dtype=torch.bfloat16)
    W = (torch.randn(4 * HIDDEN, HIDDEN, device="cuda", generator=gen) * HIDDEN**-0.5).to(torch.bfloat16)
    bias = torch.zeros(4 * HIDDEN, device="cuda", dtype=torch.bfloat16)
    R = (torch.randn(H, 4, head_dim, head_dim, device="cuda", generator=gen) * head_dim**-0.5).to(torch.bfloat16)
    dy = torch.randn(B, T, H, head_dim, device="cuda", generator=gen, dtype=torch.bfloat16)
    leaves = [t.requires_grad_() for t in (x, W, bias, R)]

    def forward():
        gx = F.linear(leaves[0], leaves[1], leaves[2]).view(B, T, H, 4, head_dim)
        return rnn_cell_scan("lstm", gx, leaves[3], backend=backend)[0]

    def fwd():
        with torch.no_grad():
            forward()

    def fwd_bwd():
        forward().backward(dy)

    return fwd, fwd_bwd


def _cudnn():
    lstm = torch.nn.LSTM(HIDDEN, HIDDEN, batch_first=True).cuda().to(torch.bfloat16)
    x = torch.randn(B, T, HIDDEN, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(B, T, HIDDEN, device="cuda", dtype=torch.bfloat16)

    def fwd():
        with torch.no_grad():
            lstm(x)

    def fwd_bwd():
        lstm(x)[0].backward(dy)

    return fwd, fwd_bwd


def _designs(head_dim: int) -> dict[str, dict]:
    """The forward designs that apply at ``head_dim``, as the module knobs that select them."""
    designs = {}
    if head_dim <= 128:  # (wider heads in column tiles of 64 measured slowest: 6.25 / 10.42 ms at 256 / 768, H200)
        designs["tiled"] = {"RESIDENT": False, "SPLIT_RESIDENT": False, "SPLIT_BLOCK_D": 64}
        designs["resident"] = {"RESIDENT": True, "RESIDENT_MAX_D": 128, "RESIDENT_NUM_WARPS": None}
    if head_dim == 128:  # the register budget is tightest here: 8 warps (the default) or 16
        designs["resident_16warps"] = {"RESIDENT": True, "RESIDENT_MAX_D": 128, "RESIDENT_NUM_WARPS": 16}
    if head_dim > 64:  # column tiles of split heads
        for columns in (32, 16):
            designs[f"tiled_columns{columns}"] = {"RESIDENT": False, "SPLIT_RESIDENT": False, "SPLIT_BLOCK_D": columns}
    if head_dim > 128:  # split heads with each program's slice of R loaded once (triton_split, _backward)
        for columns in (32, 16):
            designs[f"split_resident_columns{columns}"] = {"SPLIT_RESIDENT": True, "SPLIT_BLOCK_D": columns,
                                                           "SPLIT_RESIDENT_NUM_WARPS": None}
        designs["split_resident_columns16_tiled_backward"] = {"SPLIT_RESIDENT": True, "SPLIT_BLOCK_D": 16,
                                                              "SPLIT_RESIDENT_BACKWARD": False}
    return designs


def _default_design(head_dim: int) -> str:
    if rnn_triton._resident_block(head_dim, torch.empty(0, dtype=torch.bfloat16)):
        return "resident"
    columns = rnn_triton.SPLIT_BLOCK_D
    if head_dim > 128 and rnn_triton.SPLIT_RESIDENT:  # split at B = 16 (the grid fits), bf16 slice <= 192 KiB
        return f"split_resident_columns{columns}"
    return "tiled" if columns == 64 else f"tiled_columns{columns}"


def bench_lstm(heads: list[int]) -> dict:
    cudnn_fwd, cudnn_fwd_bwd = _cudnn()
    cudnn = {"fwd_ms": _bench(cudnn_fwd), "fwd_bwd_ms": _bench(cudnn_fwd_bwd)}
    rows = []
    for head_dim in heads:
        ours_fwd, ours_fwd_bwd = _lstm_layer(head_dim, "triton")
        loop_fwd, loop_fwd_bwd = _lstm_layer(head_dim, "reference")
        designs = {}
        for name, knobs in _designs(head_dim).items():
            with tuning_knobs(rnn_triton, **knobs):
                designs[name] = {"knobs": knobs, "fwd_ms": _bench(ours_fwd), "fwd_bwd_ms": _bench(ours_fwd_bwd)}
        row = {"head_dim": head_dim, "num_heads": HIDDEN // head_dim, "default_design": _default_design(head_dim)}
        for kind in ("fwd", "fwd_bwd"):
            best = min(designs, key=lambda name: designs[name][f"{kind}_ms"])
            row[f"ours_{kind}_ms"], row[f"ours_{kind}_design"] = designs[best][f"{kind}_ms"], best
        row["loop_fwd_ms"] = _bench(loop_fwd, slow=True)
        row["loop_fwd_bwd_ms"] = _bench(loop_fwd_bwd, slow=True)
        for kind in ("fwd", "fwd_bwd"):
            row[f"speedup_vs_cudnn_{kind}"] = cudnn[f"{kind}_ms"] / row[f"ours_{kind}_ms"]
            row[f"speedup_vs_loop_{kind}"] = row[f"loop_{kind}_ms"] / row[f"ours_{kind}_ms"]
        row["designs"] = designs
        print(row, flush=True)
        rows.append(row)
    return {"setup": {"B": B, "T": T, "hidden": HIDDEN, "dtype": "bfloat16"}, "cudnn_lstm_768": cudnn, "heads": rows}


def _heinsen(log_a, b):
    log_values = torch.log(b.float().clamp_min(1e-30))
    a_star = log_a.float().cumsum(dim=1)
    return (a_star + (log_values - a_star).logcumsumexp(dim=1)).exp()


def bench_mingru_scan() -> list[dict]:
    rows = []
    for length in (512, 4096):
        gen = torch.Generator(device="cuda").manual_seed(1)
        gate = torch.randn(16, length, 1, 1536, device="cuda", generator=gen)
        log_a = (-F.softplus(gate)).to(torch.bfloat16).requires_grad_()
        b = (torch.sigmoid(gate) * torch.rand_like(gate)).to(torch.bfloat16).requires_grad_()  # positive (minGRU)
        dh = torch.randn_like(b)
        runs = {
            "ours": lambda la, bb: linear_scan(la, bb, backend="triton")[0],
            "loop": lambda la, bb: linear_scan(la, bb, backend="reference")[0],
            "heinsen_log_space": _heinsen,
        }
        row = {"T": length, "B": 16, "channels": 1536}
        for name, fn in runs.items():
            slow = name == "loop"

            def fwd(fn=fn):
                with torch.no_grad():
                    fn(log_a, b)

            def fwd_bwd(fn=fn):
                fn(log_a, b).backward(dh.to(torch.float32 if fn is _heinsen else torch.bfloat16))

            row[f"{name}_fwd_ms"] = _bench(fwd, slow)
            row[f"{name}_fwd_bwd_ms"] = _bench(fwd_bwd, slow)
        for kind in ("fwd", "fwd_bwd"):
            row[f"speedup_vs_loop_{kind}"] = row[f"loop_{kind}_ms"] / row[f"ours_{kind}_ms"]
            row[f"speedup_vs_heinsen_{kind}"] = row[f"heinsen_log_space_{kind}_ms"] / row[f"ours_{kind}_ms"]
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/rnn.json")
    parser.add_argument("--heads", nargs="*", type=int, default=HEADS, choices=HEADS)
    parser.add_argument("--no-mingru", dest="mingru", action="store_false", help="skip the minGRU scan")
    args = parser.parse_args()
    payload = {"environment": environment(), "lstm": bench_lstm(args.heads),
               "mingru_scan": bench_mingru_scan() if args.mingru else []}
    write_json(args.out, payload)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
