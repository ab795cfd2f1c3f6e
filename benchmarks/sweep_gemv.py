"""Launch settings of the matrix-vector kernels (the decode step's projections) on a CUDA GPU.

Builds an architecture at its benchmark shape (``bench_decode.bench_config``; random weights, bf16), records the
projection groups one decode step sends to :func:`hf_recurrent.kernels.fused_layers.linear_group` (with every
projection routed there, ``FUSED_PROJECTIONS_MIN = 1``; and the projections with a fused residual add, to
``linear_residual``), and times each group with the defaults and with every launch setting in the grids of
:mod:`hf_recurrent.kernels.fused_layers.triton_gemv`'s kernels (``GRID``: the group kernel, ``ROW_GRID``: the
one-row kernel): the step's total over its groups, and the weights' bytes over that time. cuBLAS (``F.linear`` per
weight) on the same groups and the device's copy bandwidth in the same run. Timed as in a real step: each group is
called as many times as one step calls it, on that many distinct copies of its weights (they stream from HBM, not
from the L2 cache), the calls captured in one CUDA graph and replayed back to back; per group and summed over the
step.

    python benchmarks/sweep_gemv.py --arch gla --kernels row --out benchmarks/results/sweep_gemv_row_gla_<gpu>.json
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter

import torch
import torch.nn.functional as F
from transformers import DynamicCache

import hf_recurrent
from benchmarks.bench_decode import bench_config
from benchmarks.common import environment, measured_bandwidth, write_json
from hf_recurrent.kernels.backend import knobs as tuning_knobs
from hf_recurrent.kernels.fused_layers import triton_gemv as gemv
from hf_recurrent.modeling.common import layers

GRID = dict(GEMV_BLOCK_N=[16, 32, 64], GEMV_BLOCK_K=[128, 256, 512], GEMV_WARPS=[4], GEMV_STAGES=[2, 3, 4])
"""The group kernel's settings (several input rows; with ``GEMV_ROW_KERNEL`` off, one row too)."""
ROW_GRID = dict(GEMV_ROW_PROGRAMS_PER_SM=[1, 2, 3], GEMV_ROW_BLOCK_N=[4, 8, 16], GEMV_ROW_BLOCK_K=[1024, 2048],
                GEMV_ROW_WARPS=[4, 8])
"""The row kernel's settings (one input row)."""


Group = tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None, int]


def recorded_groups(arch_name: str, batch: int) -> list[Group]:
    """``(x, weights, residual, calls per step)`` for every distinct projection group of one decode step (the
    residual of a projection with its residual add fused, else None)."""
    arch = hf_recurrent.ARCHITECTURES[arch_name]
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = arch.causal_lm_class(arch.config_class(**bench_config(arch))).to(torch.bfloat16).eval()
    model.config.use_cuda_graphs = False
    seen: list[tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]] = []
    original, original_residual = layers.linear_group, layers.linear_residual

    def spy(x, weights):
        seen.append((x.detach().reshape(-1, x.shape[-1]).clone(), list(weights), None))  # the kernel takes [rows, K]
        return original(x, weights)

    def spy_residual(x, weight, residual):
        seen.append((x.detach().reshape(-1, x.shape[-1]).clone(), [weight],
                     residual.detach().reshape(-1, residual.shape[-1]).clone()))
        return original_residual(x, weight, residual)

    layers.linear_group, layers.linear_residual, fused_min = spy, spy_residual, layers.FUSED_PROJECTIONS_MIN
    layers.FUSED_PROJECTIONS_MIN = 1
    try:
        with torch.no_grad():
            ids = torch.randint(3, model.config.vocab_size, (batch, 1), device="cuda")
            model(ids, cache=DynamicCache(config=model.config), use_cache=True)
    finally:
        layers.linear_group, layers.linear_residual = original, original_residual
        layers.FUSED_PROJECTIONS_MIN = fused_min

    def key(x, ws, r):
        return tuple(tuple(w.shape) for w in ws) + (tuple(x.shape), None if r is None else r.dtype)

    shapes = Counter(key(*item) for item in seen)
    first = {}
    for item in seen:
        first.setdefault(key(*item), item)
    return [(*item, shapes[k]) for k, item in first.items()]


def group_ms(x: torch.Tensor, weights: list[torch.Tensor], residual: torch.Tensor | None, count: int, fn,
             replays: int = 20) -> float:
    """Milliseconds one step spends in ``count`` calls of ``fn`` on distinct copies of ``weights`` (CUDA graph)."""
    copies = [[w.clone() for w in weights] for _ in range(count)]
    for ws in copies[:2]:  # compile and warm outside the capture
        fn(x, ws, residual)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for ws in copies:
            fn(x, ws, residual)
    graph.replay()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    del graph, copies
    return start.elapsed_time(end) / replays


def step_ms(groups, fn) -> tuple[float, list[float]]:
    per_group = [group_ms(x, ws, r, count, fn) for x, ws, r, count in groups]
    return sum(per_group), per_group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="gla")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/sweep_gemv.json")
    parser.add_argument("--kernels", nargs="*", default=["group", "row"], choices=["group", "row"])
    args = parser.parse_args()
    bandwidth = measured_bandwidth()
    groups = recorded_groups(args.arch, args.batch)
    weight_bytes = sum(count * sum(w.numel() * w.element_size() for w in ws) for _, ws, _, count in groups)
    defaults = {name: getattr(gemv, name) for name in (*GRID, *ROW_GRID, "GEMV_ROW_KERNEL")}
    rows = []

    def record(label: str, timed: tuple[float, list[float]], **settings) -> None:
        ms, per_group = timed
        rows.append(dict(label=label, step_ms=ms, group_ms=per_group, bytes_per_s=weight_bytes / (ms / 1e3),
                         fraction_of_copy_bandwidth=weight_bytes / (ms / 1e3) / bandwidth, **settings))
        print(rows[-1], flush=True)

    record("cublas", step_ms(groups, lambda x, ws, r: [F.linear(x, w) + (0 if r is None else r) for w in ws]))
    record("default", step_ms(groups, gemv.linear_group))
    grids = dict(group=(GRID, dict(GEMV_ROW_KERNEL=False)), row=(ROW_GRID, {}))
    for label in args.kernels:
        grid, fixed = grids[label]
        for values in itertools.product(*grid.values()):
            settings = dict(zip(grid, values))
            try:
                with tuning_knobs(gemv, **settings, **fixed):
                    record(label, step_ms(groups, gemv.linear_group), **settings)
            except Exception as err:  # noqa: BLE001 - e.g. out of shared memory; recorded
                rows.append(dict(label=label, error=repr(err)[:200], **settings))
                print(rows[-1], flush=True)
    best = {}
    for label in args.kernels:
        timed = [r for r in rows if r["label"] == label and "step_ms" in r]
        if timed:
            best[label] = min(timed, key=lambda r: r["step_ms"])
    write_json(args.out, dict(
        environment=environment(), arch=args.arch, batch=args.batch, copy_bandwidth_bytes_s=bandwidth,
        groups=[dict(weights=[list(w.shape) for w in ws], x=list(x.shape), residual=None if r is None else str(r.dtype),
                     calls=count) for x, ws, r, count in groups],
        weight_bytes_per_step=weight_bytes, defaults=defaults,
        best={label: {k: v for k, v in r.items() if k.startswith("GEMV")} for label, r in best.items()}, rows=rows))
    print(f"{len(groups)} distinct groups, {weight_bytes / 1e9:.2f} GB of weights a step")
    for label, r in (("cublas", rows[0]), ("default", rows[1]), *((f"best {k}", v) for k, v in best.items())):
        calls = [round(ms * 1e3 / count, 2) for ms, (*_, count) in zip(r["group_ms"], groups)]
        print(f"{label:12} {r['step_ms']:.3f} ms  {r['bytes_per_s'] / 1e12:.2f} TB/s "
              f"({r['fraction_of_copy_bandwidth']:.1%} of copy)  us a call per group {calls}  "
              f"{ {k: v for k, v in r.items() if k.startswith('GEMV')} }")


if __name__ == "__main__":
    main()
