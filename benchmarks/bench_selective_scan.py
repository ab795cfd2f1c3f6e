"""Selective scan (Mamba-1) on a CUDA GPU: achieved memory bandwidth, speed against transformers, decode tokens/s.

1. The scan at B*T = 16384 tokens (B x T = 8 x 2048, 2 x 8192, 1 x 16384), d_inner 2048 and 4096, state 16, bf16
   inputs (x, dt, z, B, C), float32 A, D and dt bias, with the softplus, D skip and z gate fused. Forward and
   forward+backward, medians of ``triton.testing.do_bench``. The scan is memory-bound; its *necessary* traffic is
   read x, dt, z, B, C and write y (forward), plus read dy and x, dt, z, B, C again and write dx, ddt, dz, dB, dC
   (backward): ``fwd 8 BTD + 4 BTN`` bytes, ``bwd 14 BTD + 8 BTN`` more in bf16 (our backward also reads float32
   tile-start states, ``4 BTD`` for N = 16, and writes ddt in float32: those extra bytes are not counted). The
   achieved bandwidth ``necessary bytes / time`` is reported as a fraction of the measured device-to-device copy
   bandwidth (the practical peak) and of the nominal HBM peak of the GPU. Goal: >= 70%.
   transformers' PyTorch path (``mamba_selective_scan``, which materialises ``[B, D, T, N]`` float32 tensors and
   loops over T in Python, seconds per call) runs on the same inputs where it fits in time and memory
   (``--peer-max-t``): timed over a single call (no warm-up, no repeats), and forward only at d_inner 4096.
   ``--sweep`` first times the kernels' designs and tuning knobs (``DESIGN``, the forward's and the backward's tile
   lengths, channels per program, warps, the backward's scratch group; see
   ``hf_recurrent.kernels.selective_scan.triton``) unchunked at 8 x 2048, d_inner 2048 (7 forward and 8 fwd+bwd
   settings), then, for the sequential design, its time-parallel chunk length ``SEQ_CHUNK`` (off, automatic, 512,
   2048) at 8 x 2048 and 1 x 16384, forward and fwd+bwd (16 timings), and records every timing; the main
   measurements then use the fastest fwd+bwd setting (design, saved-state interval, backward knobs), the fastest
   forward knobs of that design and the fastest chunked ``SEQ_CHUNK`` at 1 x 16384 (all recorded). Without
   ``--sweep``, the module's defaults. For the sequential design every main measurement is taken with that
   ``SEQ_CHUNK`` and without chunks: both are recorded, ``ours_ms`` is the faster (its ``SEQ_CHUNK`` recorded).
2. Decode tokens/s of a mamba-1.4b-shaped model (d_model 2048, 48 layers, vocab 50280, random weights, bf16) at
   batch 1 and 16: ours (CUDA-graph decode and eager) against transformers' ``MambaForCausalLM`` in the same run.

    python benchmarks/bench_selective_scan.py --sweep --out benchmarks/results/selective_scan_<gpu>.json
"""

from __future__ import annotations

import argparse

import torch
import triton.testing

from benchmarks.bench_decode import tokens_per_second
from benchmarks.common import environment, measured_bandwidth, write_json
from hf_recurrent.kernels.selective_scan import selective_scan
from hf_recurrent.kernels.selective_scan import triton as scan_triton

NOMINAL_PEAK = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}  # bytes/s, SXM HBM specifications
SHAPES = [(8, 2048), (2, 8192), (1, 16384)]
N = 16


def _nominal_peak() -> float | None:
    name = torch.cuda.get_device_name()
    return next((v for k, v in NOMINAL_PEAK.items() if k in name), None)


def _inputs(batch: int, T: int, D: int, requires_grad: bool):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, T, D, generator=g, device="cuda").to(torch.bfloat16)
    dt = (torch.randn(batch, T, D, generator=g, device="cuda") - 2).to(torch.bfloat16)
    z = torch.randn(batch, T, D, generator=g, device="cuda").to(torch.bfloat16)
    B = torch.randn(batch, T, N, generator=g, device="cuda").to(torch.bfloat16)
    C = torch.randn(batch, T, N, generator=g, device="cuda").to(torch.bfloat16)
    A = -torch.arange(1, N + 1, device="cuda", dtype=torch.float32).expand(D, N).contiguous()
    Dp = torch.ones(D, device="cuda")
    bias = torch.full((D,), -3.0, device="cuda")
    tensors = [x, dt, A, B, C, Dp, z, bias]
    if requires_grad:
        tensors = [t.requires_grad_(True) for t in tensors]
    return tensors


def _ours(tensors):
    x, dt, A, B, C, Dp, z, bias = tensors
    return selective_scan(x, dt, A, B, C, Dp, z, bias, output_final_state=True, backend="triton")[0]


def _transformers(tensors):
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan

    x, dt, A, B, C, Dp, z, bias = tensors
    t = lambda u: u.transpose(1, 2)  # noqa: E731 - their layout is [B, D, T] / [B, N, T]
    return t(mamba_selective_scan(t(x), t(dt), A, t(B), t(C), Dp, t(z), bias, True, return_last_state=False))


def _time(fn, tensors, backward: bool, rep: int) -> float:
    if not backward:
        with torch.no_grad():
            return triton.testing.do_bench(lambda: fn(tensors), warmup=5, rep=rep, return_mode="median")
    dy = torch.randn_like(tensors[0])

    def step():
        for t in tensors:
            t.grad = None
        fn(tensors).backward(dy)

    return triton.testing.do_bench(step, warmup=3, rep=rep, return_mode="median")


def _time_once(fn, tensors, backward: bool) -> float:
    """Milliseconds of a single call, for peers that take seconds per call (their first-call overheads are small
    beside that)."""
    dy = torch.randn_like(tensors[0])
    for t in tensors:
        t.grad = None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    if backward:
        fn(tensors).backward(dy)
    else:
        with torch.no_grad():
            fn(tensors)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def _chunk_timings(tensors, backward: bool) -> dict:
    """``ours_ms`` at the module's settings; for the sequential design with ``SEQ_CHUNK`` not 0, the time without
    chunks too, ``ours_ms`` the faster and ``SEQ_CHUNK`` the one it used (both recorded)."""
    chunk = scan_triton.SEQ_CHUNK
    if scan_triton.DESIGN != "sequential":
        return dict(ours_ms=_time(_ours, tensors, backward, rep=200))
    if chunk == 0:
        return dict(ours_ms=_time(_ours, tensors, backward, rep=200), SEQ_CHUNK=0)
    timings = {}
    for value in (chunk, 0):
        scan_triton.SEQ_CHUNK = value
        timings[value] = _time(_ours, tensors, backward, rep=200)
    scan_triton.SEQ_CHUNK = chunk
    best = min(timings, key=timings.get)
    return dict(ours_ms=timings[best], SEQ_CHUNK=best, chunked_ms=timings[chunk], unchunked_ms=timings[0])


def scan_rows(copy_bw: float, nominal: float | None, peer_max_t: int) -> list[dict]:
    rows = []
    for D in (2048, 4096):
        for batch, T in SHAPES:
            BT = batch * T
            necessary = {"fwd": 8 * BT * D + 4 * BT * N, "fwd+bwd": 22 * BT * D + 12 * BT * N}
            for mode, backward in (("fwd", False), ("fwd+bwd", True)):
                tensors = _inputs(batch, T, D, backward)
                row = dict(batch=batch, T=T, d_inner=D, state=N, mode=mode, necessary_bytes=necessary[mode])
                row.update(_chunk_timings(tensors, backward))
                ms = row["ours_ms"]
                row["ours_bytes_s"] = necessary[mode] / (ms * 1e-3)
                row["fraction_of_copy_bandwidth"] = row["ours_bytes_s"] / copy_bw
                row["fraction_of_nominal_peak"] = row["ours_bytes_s"] / nominal if nominal else None
                if T <= peer_max_t and not (backward and D > 2048):
                    try:
                        peer = _time_once(_transformers, tensors, backward)
                        row.update(transformers_ms=peer, speedup_vs_transformers=peer / ms)
                    except Exception as err:  # noqa: BLE001 - recorded (e.g. out of memory)
                        row["transformers_error"] = repr(err)[:300]
                    torch.cuda.empty_cache()
                else:
                    row["transformers_skipped"] = f"T > --peer-max-t={peer_max_t} or fwd+bwd at d_inner > 2048 (slow)"
                rows.append(row)
                print(row, flush=True)
                del tensors
                torch.cuda.empty_cache()
    return rows


KNOBS = ("DESIGN", "BLOCK_T", "SEQ_FWD_BLOCK_T", "SEQ_FWD_BLOCK_D", "SEQ_FWD_WARPS", "SEQ_BWD_WARPS", "SEQ_GROUP",
         "SEQ_CHUNK", "SEQ_CHUNK_PROGRAMS", "SEQ_CHUNK_AUTO", "SCAN_FWD_BLOCK_D", "SCAN_FWD_WARPS", "SCAN_BWD_BLOCK_D",
         "SCAN_BWD_WARPS")
FWD_KNOBS = ("SEQ_FWD_BLOCK_T", "SEQ_FWD_BLOCK_D", "SEQ_FWD_WARPS", "SCAN_FWD_BLOCK_D", "SCAN_FWD_WARPS")
SWEEP_SHAPE = (8, 2048)
# forward settings, unchunked: the sequential design's tile length (statically unrolled steps) and channels per
# program and warps (32 channels per warp, or 64: two per thread); the scan design's blocks (its tile is BLOCK_T x
# BLOCK_D x 16 float32 registers: larger ones spill)
FWD_SETTINGS = [
    dict(DESIGN="sequential", SEQ_FWD_BLOCK_T=8, SEQ_FWD_BLOCK_D=32, SEQ_FWD_WARPS=1),
    dict(DESIGN="sequential", SEQ_FWD_BLOCK_T=16, SEQ_FWD_BLOCK_D=32, SEQ_FWD_WARPS=1),
    dict(DESIGN="sequential", SEQ_FWD_BLOCK_T=8, SEQ_FWD_BLOCK_D=64, SEQ_FWD_WARPS=1),
    dict(DESIGN="sequential", SEQ_FWD_BLOCK_T=16, SEQ_FWD_BLOCK_D=64, SEQ_FWD_WARPS=1),
    dict(DESIGN="sequential", SEQ_FWD_BLOCK_T=8, SEQ_FWD_BLOCK_D=64, SEQ_FWD_WARPS=2),
    dict(DESIGN="scan", BLOCK_T=16, SCAN_FWD_BLOCK_D=16, SCAN_FWD_WARPS=4),
    dict(DESIGN="scan", BLOCK_T=8, SCAN_FWD_BLOCK_D=32, SCAN_FWD_WARPS=4),
]
# fwd+bwd settings, unchunked (the forward at the module's defaults of the design): the sequential backward's tile
# length (= the saved states' interval), warps (32 channels each) and states per scratch entry (registers hold
# GROUP + 1 states; 4 spills)
BWD_SETTINGS = [
    dict(DESIGN="sequential", BLOCK_T=16, SEQ_BWD_WARPS=2, SEQ_GROUP=2),
    dict(DESIGN="sequential", BLOCK_T=16, SEQ_BWD_WARPS=1, SEQ_GROUP=2),
    dict(DESIGN="sequential", BLOCK_T=16, SEQ_BWD_WARPS=2, SEQ_GROUP=1),
    dict(DESIGN="sequential", BLOCK_T=16, SEQ_BWD_WARPS=4, SEQ_GROUP=2),
    dict(DESIGN="sequential", BLOCK_T=8, SEQ_BWD_WARPS=2, SEQ_GROUP=2),
    dict(DESIGN="sequential", BLOCK_T=32, SEQ_BWD_WARPS=2, SEQ_GROUP=2),
    dict(DESIGN="scan", BLOCK_T=16, SCAN_BWD_BLOCK_D=16, SCAN_BWD_WARPS=8),
    dict(DESIGN="scan", BLOCK_T=16, SCAN_BWD_BLOCK_D=8, SCAN_BWD_WARPS=4),
]
# the sequential design's time-parallel chunks (steps per chunk; 0: off, None: automatic) at many short and one long
# sequence, forward and fwd+bwd
CHUNK_SETTINGS = [0, None, 512, 2048]
CHUNK_SHAPES = [(8, 2048), (1, 16384)]


def _timed_setting(setting: dict, defaults: dict, backward: bool, shape: tuple[int, int] = SWEEP_SHAPE) -> dict:
    for name, value in {**defaults, **setting}.items():
        setattr(scan_triton, name, value)
    row = dict(setting, batch=shape[0], T=shape[1])
    key = "fwd_bwd_ms" if backward else "fwd_ms"
    try:
        row[key] = _time(_ours, _inputs(*shape, 2048, backward), backward, rep=100)
    except Exception as err:  # noqa: BLE001 - e.g. out of resources; recorded
        row["error"] = repr(err)[:300]
    torch.cuda.empty_cache()
    print(row, flush=True)
    return row


def _fastest(rows: list[dict], key: str, **match) -> dict:
    timed = [r for r in rows if key in r and all(r.get(k) == v for k, v in match.items())]
    return min(timed, key=lambda r: r[key]) if timed else {}


def sweep(defaults: dict) -> tuple[list[dict], dict]:
    """Time the kernel settings, then the chunk lengths; leave the fastest in place, return every timing and the choice.

    Kernel settings at 8 x 2048, d_inner 2048, unchunked. The design and the saved states' interval ``BLOCK_T`` are
    shared by forward and backward: they and the backward's knobs come from the fastest fwd+bwd setting, the
    forward's own knobs from the fastest forward of that design. Then, for the sequential design, ``SEQ_CHUNK`` at
    8 x 2048 and 1 x 16384: the kept value is the fastest chunked one (automatic or fixed) at 1 x 16384 fwd+bwd; the
    main measurements time it against no chunking at every shape.
    """
    unchunked = {"SEQ_CHUNK": 0}
    fwd = [_timed_setting({**s, **unchunked}, defaults, backward=False) for s in FWD_SETTINGS]
    bwd = [_timed_setting({**s, **unchunked}, defaults, backward=True) for s in BWD_SETTINGS]
    best_bwd = _fastest(bwd, "fwd_bwd_ms")
    if not best_bwd:
        raise RuntimeError(f"every fwd+bwd setting failed: {bwd}")
    best_fwd = _fastest(fwd, "fwd_ms", DESIGN=best_bwd["DESIGN"])
    chosen = {**defaults, **{k: v for k, v in best_fwd.items() if k in FWD_KNOBS},
              **{k: v for k, v in best_bwd.items() if k in KNOBS and k != "SEQ_CHUNK"}}
    chunks = []
    if chosen["DESIGN"] == "sequential":
        chunks = [_timed_setting(dict(SEQ_CHUNK=c), chosen, backward, shape)
                  for shape in CHUNK_SHAPES for backward in (False, True) for c in CHUNK_SETTINGS]
        best_chunk = min((r for r in chunks if r["SEQ_CHUNK"] != 0 and r["T"] == CHUNK_SHAPES[-1][1]
                          and "fwd_bwd_ms" in r), key=lambda r: r["fwd_bwd_ms"], default={})
        chosen["SEQ_CHUNK"] = best_chunk.get("SEQ_CHUNK", defaults["SEQ_CHUNK"])
    for name, value in chosen.items():
        setattr(scan_triton, name, value)
    return fwd + bwd + chunks, chosen


def decode_rows(new_tokens: int) -> list[dict]:
    from transformers import MambaConfig, MambaForCausalLM

    from hf_recurrent.modeling.mamba import HfrMambaConfig, HfrMambaForCausalLM

    shape = dict(hidden_size=2048, num_hidden_layers=48, vocab_size=50280)
    rows = []
    for name, build in (
        ("ours", lambda: HfrMambaForCausalLM(HfrMambaConfig(**shape))),
        ("transformers", lambda: MambaForCausalLM(MambaConfig(**shape))),
    ):
        torch.manual_seed(0)
        model = build().to("cuda", torch.bfloat16).eval()
        for batch in (1, 16):
            row = dict(model=name, config="mamba-1.4b shape", batch=batch, new_tokens=new_tokens)
            modes = (True, False) if name == "ours" else (None,)
            for graphs in modes:
                mode = "graph" if graphs else "eager"
                if graphs is not None:
                    model.config.use_cuda_graphs = graphs
                try:
                    row.update({f"{mode}_{k}": v for k, v in tokens_per_second(model, batch, new_tokens).items()})
                except Exception as err:  # noqa: BLE001 - recorded in the results
                    row[f"{mode}_error"] = repr(err)[:300]
            rows.append(row)
            print(row, flush=True)
        del model
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results/selective_scan.json")
    parser.add_argument("--peer-max-t", type=int, default=2048)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--skip-scan", action="store_true", help="decode measurements only")
    parser.add_argument("--sweep", action="store_true", help="time the kernels' tuning knobs first, use the best")
    args = parser.parse_args()
    copy_bw, nominal = measured_bandwidth(), _nominal_peak()
    defaults = {k: getattr(scan_triton, k) for k in KNOBS}
    sweep_rows, chosen = sweep(defaults) if args.sweep else ([], defaults)
    rows = [] if args.skip_scan else scan_rows(copy_bw, nominal, args.peer_max_t)
    decode = [] if args.skip_decode else decode_rows(args.new_tokens)
    write_json(args.out, dict(environment=environment(), copy_bandwidth_bytes_s=copy_bw, nominal_peak_bytes_s=nominal,
                              kernel_settings=chosen, default_settings=defaults, sweep=sweep_rows, scan=rows,
                              decode=decode))
    print(f"{'D':>5} {'B x T':>10} {'mode':>8} {'ours ms':>9} {'chunks':>6} {'unchunked':>9} {'of copy bw':>10} "
          f"{'vs transformers':>15}")
    for r in rows:
        speed, unchunked = r.get("speedup_vs_transformers"), r.get("unchunked_ms")
        print(f"{r['d_inner']:>5} {r['batch']:>3} x {r['T']:<5} {r['mode']:>8} {r['ours_ms']:>9.3f} "
              f"{r.get('SEQ_CHUNK', '')!s:>6} {'' if unchunked is None else f'{unchunked:.3f}':>9} "
              f"{r['fraction_of_copy_bandwidth']:>10.1%} {'' if speed is None else f'{speed:.1f}x':>15}")
    for r in decode:
        print(r)


if __name__ == "__main__":
    main()
