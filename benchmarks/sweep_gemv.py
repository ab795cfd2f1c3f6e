"""Launch settings of the grouped matrix-vector kernel (the decode step's projections) on a CUDA GPU.

Builds an architecture at its benchmark shape (``bench_decode.bench_config``; random weights, bf16), records the
projection groups one decode step sends to :func:`hf_recurrent.kernels.fused_layers.linear_group` (with every
projection routed there, ``FUSED_PROJECTIONS_MIN = 1``), and times each group with every launch setting in a grid
(weight rows per program ``GEMV_BLOCK_N``, reduction tile ``GEMV_BLOCK_K``, warps, pipeline stages): the step's
total over its groups, and the weights' bytes over that time. cuBLAS (``F.linear`` per weight) on the same groups
and the device's copy bandwidth in the same run. ``triton.testing.do_bench`` medians (it clears the L2 cache between
runs, so the weights stream from HBM as in a real step).

    python benchmarks/sweep_gemv.py --arch gla --out benchmarks/results/sweep_gemv_gla_<gpu>.json
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from triton.testing import do_bench

import hf_recurrent
from benchmarks.bench_decode import bench_config
from benchmarks.common import environment, measured_bandwidth, write_json
from hf_recurrent.kernels.fused_layers import triton as gemv
from hf_recurrent.modeling.common import layers

GRID = dict(GEMV_BLOCK_N=[None, 32, 64], GEMV_BLOCK_K=[256, 512], GEMV_WARPS=[4, 8], GEMV_STAGES=[3, 4, 6])


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


def step_ms(groups, fn) -> float:
    return sum(count * do_bench(lambda: fn(x, ws), warmup=10, rep=40, return_mode="median") for x, ws, count in groups)


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

    def record(label: str, ms: float, **settings) -> None:
        rows.append(dict(label=label, step_ms=ms, bytes_per_s=weight_bytes / (ms / 1e3),
                         fraction_of_copy_bandwidth=weight_bytes / (ms / 1e3) / bandwidth, **settings))
        print(rows[-1], flush=True)

    record("cublas", step_ms(groups, lambda x, ws: [F.linear(x, w) for w in ws]))
    try:
        for values in itertools.product(*GRID.values()):
            settings = dict(zip(GRID, values))
            for name, value in settings.items():
                setattr(gemv, name, value)
            try:
                record("grouped", step_ms(groups, gemv.linear_group), **settings)
            except Exception as err:  # noqa: BLE001 - e.g. out of shared memory; recorded
                rows.append(dict(label="grouped", error=repr(err)[:200], **settings))
                print(rows[-1], flush=True)
    finally:
        for name, value in defaults.items():
            setattr(gemv, name, value)
    timed = [r for r in rows if r["label"] == "grouped" and "step_ms" in r]
    best = min(timed, key=lambda r: r["step_ms"])
    default = next(r for r in timed if all(r[k] == v for k, v in defaults.items()))
    write_json(args.out, dict(
        environment=environment(), arch=args.arch, batch=args.batch, copy_bandwidth_bytes_s=bandwidth,
        groups=[dict(weights=[list(w.shape) for w in ws], x=list(x.shape), calls=count) for x, ws, count in groups],
        weight_bytes_per_step=weight_bytes, defaults=defaults, best={k: best[k] for k in GRID}, rows=rows))
    print(f"{len(groups)} distinct groups, {weight_bytes / 1e9:.2f} GB of weights a step")
    for label, r in (("cublas", rows[0]), ("default", default), ("best", best)):
        print(f"{label:8} {r['step_ms']:.3f} ms  {r['bytes_per_s'] / 1e12:.2f} TB/s "
              f"({r['fraction_of_copy_bandwidth']:.1%} of copy)  {({k: r.get(k) for k in GRID})}")


if __name__ == "__main__":
    main()
