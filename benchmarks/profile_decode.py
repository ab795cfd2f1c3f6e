"""Where a decode step's time goes: kernels per step, GPU time, graph replay vs ``generate()`` per token.

For one architecture at its ~1.3B benchmark shape (random weights, bf16, batch ``--batch``):

- the eager decode step under ``torch.profiler``: number of GPU kernels, their summed time, the top kernels;
- the CUDA-graph step alone (``DecodeGraph`` replayed back to back, one sync at the end): ms per step, with the
  defaults and with knobs changed one at a time (:data:`VARIANTS`);
- greedy ``generate()`` with the graph: ms per token end to end and in the decode loop alone (the difference to
  the graph step is ``generate()``'s own per-token work);
- the bandwidth limit of one step (weights once + the float32 state read and written).

    python benchmarks/profile_decode.py --arch gla --out benchmarks/results/profile_decode_gla_<gpu>.json
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import defaultdict

import torch
from transformers import DynamicCache

import hf_recurrent
from benchmarks.bench_decode import bench_config, state_bytes, tokens_per_second, weight_bytes
from benchmarks.common import environment, knob_values, measured_bandwidth, write_json
from hf_recurrent.kernels import triton_launch
from hf_recurrent.kernels.backend import knobs as tuning_knobs
from hf_recurrent.kernels.fused_layers import triton_gemv as gemv
from hf_recurrent.modeling.common import layers


def kernel_profile(step, top: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name][0] += 1
            totals[event.name][1] += event.device_time_total / 1e3  # ms
    count = sum(c for c, _ in totals.values())
    gpu_ms = sum(t for _, t in totals.values())
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][1])[:top]
    return dict(kernels=count, kernel_ms=gpu_ms,
                top=[dict(name=name[:120], calls=c, ms=t) for name, (c, t) in ranked])


VARIANTS = {
    "default": {},
    "no_dependent_launch": {(triton_launch, "DEPENDENT_LAUNCH"): False},
    "block_n_16": {(gemv, "GEMV_BLOCK_N"): 16},
    "block_n_32": {(gemv, "GEMV_BLOCK_N"): 32},
    "block_k_512": {(gemv, "GEMV_BLOCK_K"): 512},
    "stages_3": {(gemv, "GEMV_STAGES"): 3},
    "group_kernel": {(gemv, "GEMV_ROW_KERNEL"): False},
    "grouped_only": {(layers, "FUSED_PROJECTIONS_MIN"): 2},
    "cublas": {(layers, "FUSED_PROJECTIONS_MIN"): 10**9},
}
"""Knob settings timed as CUDA-graph steps: the defaults; without programmatic dependent launch; other tiles of the
group matrix-vector kernel (rows per program, reduction tile, stages); one-row products on the group kernel instead
of the row kernel (``group_kernel``; the tile variants only act with it or at batch > 1); single projections
through cuBLAS (``grouped_only``); every projection a separate ``F.linear`` (``cublas``)."""


@contextlib.contextmanager
def knobs(settings: dict):
    """``settings`` ``{(module, name): value}`` in place for a ``with`` block (one variant)."""
    with contextlib.ExitStack() as stack:
        for (module, name), value in settings.items():
            stack.enter_context(tuning_knobs(module, **{name: value}))
        yield


def graph_step_ms(model, cache, token, steps: int = 200) -> float:
    """Capture a fresh decode graph and time back-to-back replays."""
    model.__dict__.pop("_decode_graph", None)
    model(token, cache=cache, use_cache=True)  # captures
    runner = model.__dict__["_decode_graph"]
    runner(token, cache)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        runner(token, cache)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="gla")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default="benchmarks/results/profile_decode.json")
    parser.add_argument("--gemv", nargs="*", default=[], metavar="KNOB=VALUE",
                        help="matrix-vector kernel knobs (hf_recurrent.kernels.fused_layers.triton_gemv) for the whole run")
    args = parser.parse_args()
    with tuning_knobs(gemv, **knob_values(args.gemv)):
        profile(args)


def profile(args) -> None:
    arch = hf_recurrent.ARCHITECTURES[args.arch]
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = arch.causal_lm_class(arch.config_class(**bench_config(arch))).to(torch.bfloat16).eval()
    bandwidth = measured_bandwidth()
    step_bytes = weight_bytes(model, args.batch) + 2 * state_bytes(model, args.batch)
    ids = torch.randint(3, model.config.vocab_size, (args.batch, 16), device="cuda")
    token = ids[:, -1:]
    result = dict(environment=environment(), arch=args.arch, batch=args.batch, bytes_per_step=step_bytes,
                  limit_ms=step_bytes / bandwidth * 1e3)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model.config.use_cuda_graphs = False
        model(ids, cache=cache, use_cache=True)
        for _ in range(3):  # warm-up: compile and tune every kernel of the step
            model(token, cache=cache, use_cache=True)
        torch.cuda.synchronize()
        result["eager"] = kernel_profile(lambda: model(token, cache=cache, use_cache=True), args.top)
        start = time.perf_counter()
        for _ in range(20):
            model(token, cache=cache, use_cache=True)
        torch.cuda.synchronize()
        result["eager_step_ms"] = (time.perf_counter() - start) / 20 * 1e3
        model.config.use_cuda_graphs = True
        for name in args.variants:
            settings = VARIANTS[name]
            try:
                with knobs(settings):
                    result[f"graph_step_ms_{name}"] = graph_step_ms(model, cache, token)
            except Exception as err:  # noqa: BLE001 - e.g. a tile over the shared memory; recorded
                result[f"graph_step_error_{name}"] = repr(err)[:200]
        result["graph_step_ms"] = graph_step_ms(model, cache, token)
    rates = tokens_per_second(model, args.batch, 128)
    result["generate_ms_per_token"] = args.batch / rates["generate_tok_s"] * 1e3
    result["decode_ms_per_token"] = args.batch / rates["decode_tok_s"] * 1e3
    result["graph_fraction_of_limit"] = result["limit_ms"] / result["graph_step_ms"]
    result["generate_fraction_of_limit"] = result["limit_ms"] / result["generate_ms_per_token"]
    result["decode_fraction_of_limit"] = result["limit_ms"] / result["decode_ms_per_token"]
    write_json(args.out, result)
    print({k: v for k, v in result.items() if k != "eager"})
    print(f"eager step: {result['eager']['kernels']} kernels, {result['eager']['kernel_ms']:.3f} ms of GPU time")
    for row in result["eager"]["top"]:
        print(f"  {row['ms']:8.3f} ms {row['calls']:5d}x  {row['name']}")


if __name__ == "__main__":
    main()
