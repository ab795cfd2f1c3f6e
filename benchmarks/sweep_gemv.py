"""Launch settings of the grouped matrix-vector kernel (the decode step's projections) on a CUDA GPU.

Builds an architecture at its benchmark shape (``bench_decode.bench_config``; random weights, bf16), records the
projection groups one decode step sends to :func:`hf_recurrent.kernels.fused_layers.linear_group` (with every
projection routed there, ``FUSED_PROJECTIONS_MIN = 1``), and times each group with every launch setting in a grid
(weight rows per program ``GEMV_BLOCK_N``, reduction tile ``GEMV_BLOCK_K``, warps, pipeline stages): the step's
total over its groups, and the weights' bytes over that time. cuBLAS (``F.linear`` per weight) on the same groups
and the device's copy bandwidth in the same run. Timed as in a real step: each group is called as many times as one
step calls it, on that many distinct copies of its weights (they stream from HBM, not from the L2 cache), the calls
captured in one CUDA graph and replayed back to back; per group and summed over the step.

    python benchmarks/sweep_gemv.py --arch gla --out benchmarks/results/sweep_gemv_gla_<gpu>.json
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
from hf_recurrent.kernels.fused_layers import triton as gemv
from hf_recurrent.modeling.common import layers

GRID = dict(GEMV_BLOCK_N=[16, 32, 64], GEMV_BLOCK_K=[128, 256, 512], GEMV_WARPS=[4], GEMV_STAGES=[2, 3, 4])


def recorded_groups(arch_name: str, batch: int) -> list[tuple[torch.Tensor, list[torch.Tensor], int]]:
    """``(x, weights, calls per step)`` for every distinct projection group of one decode step."""
    arch = hf_recurrent.ARCHITECTURES[arch_name]
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = arch.causal_lm_class(arch.config_class(**bench_config(arch))).to(torch.bfloat16).eval()
    model.config.use_cuda_graphs = False
    seen: list[tuple[torch.Tensor, list[torch.Tensor]]] = []
    original = layers.linear_group

    def spy(x, weights):
        seen.append((x.detach().reshape(-1, x.shape[-1]).clone(), list(weights)))  # the kernel takes [rows, K]
        return original(x, weights)

    layers.linear_group, fused_min = spy, layers.FUSED_PROJECTIONS_MIN
    layers.FUSED_PROJECTIONS_MIN = 1
    try:
        with torch.no_grad():
            ids = torch.randint(3, model.config.vocab_size, (batch, 1), device="cuda")
            model(ids, cache=DynamicCache(config=model.config), use_cache=True)
    finally:
        layers.linear_group, layers.FUSED_PROJECTIONS_MIN = original, fused_min
    shapes = Counter(tuple(tuple(w.shape) for w in ws) + (tuple(x.shape),) for x, ws in seen)
    first = {}
    for x, ws in seen:
        first.setdefault(tuple(tuple(w.shape) for w in ws) + (tuple(x.shape),), (x, ws))
    return [(x, ws, shapes[key]) for key, (x, ws) in first.items()]


def group_ms(x: torch.Tensor, weights: list[torch.Tensor], count: int, fn, replays: int = 20) -> float:
    """Milliseconds one step spends in ``count`` calls of ``fn`` on distinct copies of ``weights`` (CUDA graph)."""
    copies = [[w.clone() for w in weights] for _ in range(count)]
    for ws in copies[:2]:  # compile and warm outside the capture
        fn(x, ws)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for ws in copies:
            fn(x, ws)
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
    per_group = [group_ms(x, ws, count, fn) for x, ws, count in groups]
    return sum(per_group), per_group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="gla")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/sweep_gemv.json")
    args = parser.parse_args()
    bandwidth = measured_bandwidth()
    groups = recorded_groups(args.arch, args.batch)
    weight_bytes = sum(count * sum(w.numel() * w.element_size() for w in ws) for _, ws, count in groups)
    defaults = {name: getattr(gemv, name) for name in GRID}
    rows = []

    def record(label: str, timed: tuple[float, list[float]], **settings) -> None:
        ms, per_group = timed
        rows.append(dict(label=label, step_ms=ms, group_ms=per_group, bytes_per_s=weight_bytes / (ms / 1e3),
                         fraction_of_copy_bandwidth=weight_bytes / (ms / 1e3) / bandwidth, **settings))
        print(rows[-1], flush=True)

    record("cublas", step_ms(groups, lambda x, ws: [F.linear(x, w) for w in ws]))
    for values in itertools.product(*GRID.values()):
        settings = dict(zip(GRID, values))
        try:
            with tuning_knobs(gemv, **settings):
                record("grouped", step_ms(groups, gemv.linear_group), **settings)
        except Exception as err:  # noqa: BLE001 - e.g. out of shared memory; recorded
            rows.append(dict(label="grouped", error=repr(err)[:200], **settings))
            print(rows[-1], flush=True)
    timed = [r for r in rows if r["label"] == "grouped" and "step_ms" in r]
    best = min(timed, key=lambda r: r["step_ms"])
    default = next(r for r in timed if all(r[k] == v for k, v in defaults.items()))
    write_json(args.out, dict(
        environment=environment(), arch=args.arch, batch=args.batch, copy_bandwidth_bytes_s=bandwidth,
        groups=[dict(weights=[list(w.shape) for w in ws], x=list(x.shape), calls=count) for x, ws, count in groups],
        weight_bytes_per_step=weight_bytes, defaults=defaults, best={k: best[k] for k in GRID}, rows=rows))
    print(f"{len(groups)} distinct groups, {weight_bytes / 1e9:.2f} GB of weights a step")
    for i, (_, ws, count) in enumerate(groups):
        group_bytes = count * sum(w.numel() * w.element_size() for w in ws)
        fastest = min(timed, key=lambda r: r["group_ms"][i])
        print(f"group {[tuple(w.shape) for w in ws]} x{count}: cublas {rows[0]['group_ms'][i]:.3f} ms, "
              f"default {default['group_ms'][i]:.3f} ms, best {fastest['group_ms'][i]:.3f} ms "
              f"({group_bytes / fastest['group_ms'][i] / 1e9:.2f} TB/s) {({k: fastest[k] for k in GRID})}")
    for label, r in (("cublas", rows[0]), ("default", default), ("best", best)):
        print(f"{label:8} {r['step_ms']:.3f} ms  {r['bytes_per_s'] / 1e12:.2f} TB/s "
              f"({r['fraction_of_copy_bandwidth']:.1%} of copy)  {({k: r.get(k) for k in GRID})}")


if __name__ == "__main__":
    main()
