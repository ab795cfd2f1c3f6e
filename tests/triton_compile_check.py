"""Compile every Triton kernel specialisation that representative calls launch, for Hopper, without a GPU.

Triton's CPU interpreter (what the kernel tests run on) never runs the compiler's front end, so errors that only the
compiler raises (a loop-carried variable changing type, a constexpr misuse, an unsupported op...) would reach the GPU
unseen. This module finds them in two steps, each in a subprocess of its own so the caller's environment and its
already-imported (interpreted) kernels are left alone:

``python -m tests.triton_compile_check record OUT.json`` (with ``TRITON_INTERPRET=1``, set by this module)
    Runs :data:`CASES` (one small call per kernel family and mode: forward and backward, float32 and bfloat16, the
    options that select constexpr branches) under the interpreter, with a hook on
    ``triton.runtime.interpreter.InterpretedFunction.run`` (the method every ``kernel[grid](...)`` launch reaches,
    through autotuners and heuristics too) that records the launched function, the specialisation Triton would
    derive from the arguments (signature, constexprs, 16-divisible arguments) and the launch options.

``python -m tests.triton_compile_check compile IN.json OUT.json`` (without ``TRITON_INTERPRET``)
    Imports the kernels as ordinary ``JITFunction`` objects and runs ``triton.compile(ASTSource(...),
    target=GPUTarget("cuda", 90, 32))`` for each specialisation, all the way to a cubin (``ptxas`` ships with the
    Triton wheel), on two processes. Autotuned kernels: under the interpreter they run interpreter-only configs, so
    each recorded launch is compiled once for every GPU candidate config of its autotuner (the ``configs`` the
    autotuner holds when imported without the interpreter, ``HF_RECURRENT_AUTOTUNE=1``: all candidates, before any
    pruning by ``prune_configs_by``), the config's kwargs replacing the interpreter config's.

The specialisation rules follow Triton's launcher: tensors are pointers ``*<dtype>`` (``*u1`` for bool), Python ints
are ``i32``/``i64``/``u64`` by magnitude and the int 1 is a constexpr (unless ``do_not_specialize``), floats are
``fp32``, bools ``u1``, None a constexpr; pointers whose address and ints that are multiples of 16 carry the
``tt.divisibility = 16`` attribute (where the backend has ``parse_attr``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import sys
import time
import traceback

TARGET = ("cuda", 90, 32)  # Hopper (H100 / H200)
LAST_STAGE = "ttgir"  # compile stages run: up to Triton GPU IR (the front end); "cubin": everything

# ----------------------------------------------------------------------------------------------- record (interpreter)

_RECORDS: list[dict] = []
_CASE = [""]
_DRY_RUN = [False]


def _is_constexpr_annotation(annotation) -> bool:
    if isinstance(annotation, str):
        return annotation.split(".")[-1].strip() == "constexpr"
    import triton.language as tl

    return annotation is tl.constexpr or isinstance(annotation, tl.constexpr)


def _encode_value(value):
    """A constexpr value as JSON (Python scalars, strings, None, Triton dtypes)."""
    import triton.language as tl

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tl.constexpr):
        return _encode_value(value.value)
    if isinstance(value, tl.dtype):
        return {"tl_dtype": value.name}
    raise TypeError(f"constexpr value {value!r} of type {type(value).__name__} is not supported by the recorder")


def _decode_value(value):
    if isinstance(value, dict) and "tl_dtype" in value:
        import triton.language as tl

        return tl.dtype(value["tl_dtype"])
    return value


_TORCH_DTYPES = {
    "float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64", "int8": "i8", "int16": "i16",
    "int32": "i32", "int64": "i64", "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64", "bool": "u1",
    "float8_e4m3fn": "fp8e4nv", "float8_e5m2": "fp8e5",
}


def _arg_type(name: str, value, specialize: bool) -> tuple[str, object, bool]:
    """``(signature type, constexpr value or None, divisible by 16)`` of a non-constexpr argument."""
    if hasattr(value, "data_ptr") and hasattr(value, "dtype"):
        dtype = str(value.dtype).replace("torch.", "")
        if dtype not in _TORCH_DTYPES:
            raise TypeError(f"argument {name}: tensor dtype {dtype} has no Triton pointer type in the recorder")
        return "*" + _TORCH_DTYPES[dtype], None, value.data_ptr() % 16 == 0
    if value is None:
        return "constexpr", None, False
    if isinstance(value, bool):
        return "u1", None, False
    if isinstance(value, int):
        if specialize and value == 1:
            return "constexpr", 1, False
        if -(2**31) <= value < 2**31:
            kind = "i32"
        elif -(2**63) <= value < 2**63:
            kind = "i64"
        else:
            kind = "u64"
        return kind, None, specialize and value % 16 == 0
    if isinstance(value, float):
        return "fp32", None, False
    raise TypeError(f"argument {name}: {type(value).__name__} values are not supported by the recorder")


def _record_launch(interpreted, args, kwargs) -> None:
    fn = interpreted.fn
    sig = inspect.signature(fn)
    params = sig.parameters
    bound = sig.bind(*args, **{k: v for k, v in kwargs.items() if k in params})
    bound.apply_defaults()
    options = {k: v for k, v in kwargs.items() if k not in params and k not in ("grid", "warmup") and v is not None}
    no_spec = set()
    for item in interpreted.kwargs.get("do_not_specialize") or ():
        no_spec.add(list(params)[item] if isinstance(item, int) else item)
    signature, constexprs, divisible = {}, {}, []
    for name, param in params.items():
        value = bound.arguments[name]
        if _is_constexpr_annotation(param.annotation):
            signature[name] = "constexpr"
            constexprs[name] = _encode_value(value)
            continue
        kind, const, div = _arg_type(name, value, name not in no_spec)
        signature[name] = kind
        if kind == "constexpr":
            constexprs[name] = const
        elif div:
            divisible.append(name)
    _RECORDS.append({
        "module": fn.__module__, "qualname": fn.__qualname__, "signature": signature, "constexprs": constexprs,
        "divisible": divisible, "options": {k: v for k, v in options.items() if isinstance(v, (int, str))},
        "case": _CASE[0],
    })


def install_recorder() -> None:
    """Wrap ``InterpretedFunction.run`` (a kernel launch under the interpreter) to record each launch."""
    from triton.runtime.interpreter import InterpretedFunction

    original = InterpretedFunction.run
    if getattr(original, "_hopper_recorder", False):
        return

    def run(self, *args, **kwargs):
        if not kwargs.get("warmup", False):
            _record_launch(self, args, kwargs)
            if _DRY_RUN[0]:
                return None
        return original(self, *args, **kwargs)

    run._hopper_recorder = True
    InterpretedFunction.run = run


@contextlib.contextmanager
def dry_run():
    """Record launches without running them: kernel outputs stay uninitialised, which no host code of ours reads
    to choose a launch (they depend on shapes, knobs and ``cu_seqlens`` only), and GPU-only paths whose programs
    wait on each other (which the interpreter, running them one after another, cannot) can be recorded too."""
    previous, _DRY_RUN[0] = _DRY_RUN[0], True
    try:
        yield
    finally:
        _DRY_RUN[0] = previous


def _backward(outputs, leaves) -> None:
    """Backpropagate a random projection of the floating outputs into ``leaves``."""
    import torch

    gen = torch.Generator().manual_seed(1)
    loss = 0
    for out in outputs:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            loss = loss + (out.float() * torch.randn(out.shape, generator=gen)).sum()
    if isinstance(loss, torch.Tensor):
        torch.autograd.backward(loss, inputs=[t for t in leaves if t.requires_grad])


def _randn(*shape, dtype=None, grad=False, scale=1.0, seed=0):
    import torch

    gen = torch.Generator().manual_seed(seed + len(shape) * 7 + sum(shape))
    t = torch.randn(*shape, generator=gen) * scale
    if dtype is not None:
        t = t.to(dtype)
    return t.requires_grad_(grad)


# Each case: (name, function(dtype) -> None). Every case runs for float32 and bfloat16.
def _cases():
    import torch
    import torch.nn.functional as F

    from hf_recurrent.kernels.backend import knobs

    def linear_attention(dtype, decay, initial, final, varlen, grad):
        from hf_recurrent.kernels.linear_attention import gated_linear_attention

        B, T, H, K, V = (1, 20, 2, 24, 20) if varlen else (2, 20, 2, 24, 20)
        q, k, v = (_randn(B, T, H, d, dtype=dtype, grad=grad, seed=i) for i, d in enumerate((K, K, V)))
        g = None
        if decay == "scalar":
            g = (-F.softplus(_randn(B, T, H, seed=4))).requires_grad_(grad)
        elif decay == "vector":
            g = (-0.1 * torch.rand(B, T, H, K)).requires_grad_(grad)
        cu = torch.tensor([0, 7, 20]) if varlen else None
        n = 2 if varlen else B
        h0 = _randn(n, H, K, V, grad=grad, seed=5) if initial else None
        o, hT = gated_linear_attention(q, k, v, g, initial_state=h0, output_final_state=final, cu_seqlens=cu,
                                       backend="triton")
        if grad:
            _backward([o, hT], [t for t in (q, k, v, g, h0) if t is not None])

    def linear_attention_strong_decay(dtype):
        """Vector decay whose spread takes the sub-chunk kernels."""
        from hf_recurrent.kernels.linear_attention import gated_linear_attention

        q, k, v = (_randn(1, 20, 2, 16, dtype=dtype, grad=True, seed=i) for i in range(3))
        g = (-8.0 * torch.rand(1, 20, 2, 16)).requires_grad_(True)
        o, _ = gated_linear_attention(q, k, v, g, backend="triton")
        _backward([o], [q, k, v, g])

    def linear_attention_step(dtype, decay):
        from hf_recurrent.kernels.linear_attention import gated_linear_attention_step

        B, H, K, V = 2, 2, 24, 20
        q, k, v = (_randn(B, H, d, dtype=dtype, seed=i) for i, d in enumerate((K, K, V)))
        if decay == "low_rank":
            from hf_recurrent.kernels.linear_attention import LowRankLogDecay

            for bias, clamp_min in ((None, None), (_randn(H * K, dtype=dtype, seed=9), -2.0)):
                g = LowRankLogDecay(_randn(B, 16, dtype=dtype, seed=7), _randn(H * K, 16, dtype=dtype, seed=8), bias,
                                    16.0, clamp_min)
                gated_linear_attention_step(q, k, v, g, torch.zeros(B, H, K, V), backend="triton")
            return
        g = {"none": None, "scalar": -torch.rand(B, H), "vector": -torch.rand(B, H, K)}[decay]
        gated_linear_attention_step(q, k, v, g, torch.zeros(B, H, K, V), backend="triton")

    def selective_scan(dtype, design, chunk, initial, final, varlen, full):
        from hf_recurrent.kernels.selective_scan import selective_scan as op
        from hf_recurrent.kernels.selective_scan import triton as impl

        Bt, T, D, N = (1, 24, 6, 4) if varlen else (2, 24, 6, 4)
        x, dt, z = (_randn(Bt, T, D, dtype=dtype, grad=True, seed=i) for i in range(3))
        Bm, Cm = (_randn(Bt, T, N, dtype=dtype, grad=True, seed=i) for i in (3, 4))
        A = (-torch.rand(D, N) - 0.5).requires_grad_(True)
        Dp, bias = (_randn(D, grad=True, seed=i) for i in (5, 6))
        cu = torch.tensor([0, 9, 24]) if varlen else None
        h0 = _randn(2, D, N, grad=True, seed=7) if initial else None
        extra = (Dp, z, bias) if full else (None, None, None)
        with knobs(impl, DESIGN=design, BLOCK_T=4, SEQ_FWD_BLOCK_T=4, SEQ_FWD_BLOCK_D=4, SEQ_BWD_WARPS=1,
                   SCAN_FWD_BLOCK_D=4, SCAN_BWD_BLOCK_D=2, SEQ_CHUNK=8 if chunk else 0):
            y, hT = op(x, dt, A, Bm, Cm, *extra, dt_softplus=full, initial_state=h0, output_final_state=final,
                       cu_seqlens=cu, backend="triton")
            _backward([y, hT], [t for t in (x, dt, z, Bm, Cm, A, Dp, bias, h0) if t is not None])

    def selective_scan_production(dtype, design):
        """The default (GPU) tile sizes and warps."""
        from hf_recurrent.kernels.selective_scan import selective_scan as op

        x, dt, z = (_randn(1, 21, 18, dtype=dtype, grad=True, seed=i) for i in range(3))
        Bm, Cm = (_randn(1, 21, 4, dtype=dtype, grad=True, seed=i) for i in (3, 4))
        A = (-torch.rand(18, 4) - 0.5).requires_grad_(True)
        from hf_recurrent.kernels.selective_scan import triton as impl

        with knobs(impl, DESIGN=design):
            y, hT = op(x, dt, A, Bm, Cm, _randn(18, seed=5), z, _randn(18, seed=6), initial_state=None,
                       output_final_state=True, backend="triton")
            _backward([y, hT], [x, dt, z, Bm, Cm, A])

    def selective_scan_step(dtype, full):
        from hf_recurrent.kernels.selective_scan import selective_scan_step as op

        B, D, N = 2, 6, 4
        x, dt, z = (_randn(B, D, dtype=dtype, seed=i) for i in range(3))
        Bm, Cm = (_randn(B, N, dtype=dtype, seed=i) for i in (3, 4))
        extra = (_randn(D, seed=5), z, _randn(D, seed=6)) if full else (None, None, None)
        op(x, dt, -torch.rand(D, N) - 0.5, Bm, Cm, torch.zeros(B, D, N), *extra, dt_softplus=full, backend="triton")

    def rnn(dtype, cell, path, D, rbias, keep, grad):
        from hf_recurrent.kernels.rnn_cells import CELLS, rnn_cell_scan
        from hf_recurrent.kernels.rnn_cells import triton as impl

        G, S = CELLS[cell]
        B, T, H = 3, 4, 2
        gx = _randn(B, T, H, G, D, dtype=dtype, grad=grad, seed=1)
        R = _randn(H, G, D, D, dtype=dtype, grad=grad, scale=D**-0.5, seed=2)
        rb = _randn(H, G, D, dtype=dtype, grad=grad, seed=3) if rbias else None
        s0 = _randn(B, S, H, D, seed=4)
        if cell == "slstm":
            s0[:, 2] = s0[:, 2].abs() + 1
        s0.requires_grad_(grad)
        kp = torch.tensor([[1, 1, 0, 1]] * B) if keep else None
        settings = {
            "resident": {"RESIDENT": True, "RESIDENT_MAX_D": 256},
            "tiled": {"RESIDENT": False},
            "tiled-columns16": {"RESIDENT": False, "SPLIT_BLOCK_D": 16},
            "split-resident": {"RESIDENT": False, "SPLIT_RESIDENT": "always"},
        }[path]
        with knobs(impl, **settings):
            y, hT = rnn_cell_scan(cell, gx, R, rb, initial_state=s0, keep=kp, output_final_state=True,
                                  backend="triton")
            if grad:
                _backward([y, hT], [t for t in (gx, R, rb, s0) if t is not None])

    def rnn_split_gpu(dtype, cell):
        """Heads split over programs meeting at a grid barrier (GPU only: the interpreter never splits heads, and
        its programs, run one after another, would wait forever): recorded, not run."""
        from hf_recurrent.kernels.rnn_cells import CELLS, rnn_cell_scan
        from hf_recurrent.kernels.rnn_cells import triton as impl

        original = impl._launch_shape

        def split_launch(B, T, H, D, device):
            ls = original(B, T, H, D, device)
            tiles = -(-D // ls.BN)
            if tiles > 1 and D % ls.BN == 0:
                ls = ls._replace(grid=(ls.grid[0], H, tiles), span=ls.BN, split=tiles)
            return ls

        G, S = CELLS[cell]
        B, T, H, D = 2, 3, 1, 128
        gx = _randn(B, T, H, G, D, dtype=dtype, grad=True, seed=1)
        R = _randn(H, G, D, D, dtype=dtype, grad=True, scale=D**-0.5, seed=2)
        with knobs(impl, _launch_shape=split_launch, RESIDENT=False), dry_run():
            for split_resident in (False, True):
                with knobs(impl, SPLIT_RESIDENT=split_resident):
                    y, hT = rnn_cell_scan(cell, gx, R, None, keep=torch.ones(B, T), output_final_state=True,
                                          backend="triton")
                    _backward([y, hT], [gx, R])

    def rnn_step(dtype, cell, path):
        from hf_recurrent.kernels.rnn_cells import CELLS, rnn_cell_step
        from hf_recurrent.kernels.rnn_cells import triton as impl

        G, S = CELLS[cell]
        B, H, D = 2, 2, 20
        state = torch.zeros(B, S, H, D)
        if cell == "slstm":
            state[:, 2] = 1
        with knobs(impl, RESIDENT=path == "resident"):
            rnn_cell_step(cell, _randn(B, H, G, D, dtype=dtype), _randn(H, G, D, D, dtype=dtype, scale=0.2),
                          _randn(H, G, D, dtype=dtype), state, keep=torch.tensor([1.0, 0.0]), backend="triton")

    def causal_conv(dtype, bias, tail, silu, width):
        from hf_recurrent.kernels.causal_conv1d import causal_conv1d

        B, T, D = 2, 9, 12
        x = _randn(B, T, D, dtype=dtype, grad=True, seed=1)
        w = _randn(D, width, dtype=dtype, grad=True, seed=2)
        b = _randn(D, dtype=dtype, grad=True, seed=3) if bias else None
        t0 = _randn(B, D, width - 1, dtype=dtype, grad=True, seed=4) if tail else None
        y, new_tail = causal_conv1d(x, w, b, t0, "silu" if silu else None, backend="triton")
        _backward([y], [t for t in (x, w, b, t0) if t is not None])

    def causal_conv_step(dtype, bias, silu, width):
        from hf_recurrent.kernels.causal_conv1d import causal_conv1d_step

        B, D = 2, 12
        causal_conv1d_step(_randn(B, D, dtype=dtype), _randn(D, width, dtype=dtype),
                           _randn(D, dtype=dtype) if bias else None, _randn(B, D, width - 1, dtype=dtype),
                           "silu" if silu else None, backend="triton")

    def linear_scan(dtype, initial, final):
        from hf_recurrent.kernels.linear_scan import linear_scan as op

        B, T, H, D = 2, 7, 2, 10
        log_a = (-torch.rand(B, T, H, D)).to(dtype).requires_grad_(True)
        b = _randn(B, T, H, D, dtype=dtype, grad=True, seed=1)
        h0 = _randn(B, H, D, grad=True, seed=2) if initial else None
        h, hT = op(log_a, b, initial_state=h0, output_final_state=final, backend="triton")
        _backward([h, hT], [t for t in (log_a, b, h0) if t is not None])

    def wkv4(dtype, mask, initial, final, varlen):
        from hf_recurrent.kernels.wkv4 import wkv4 as op

        B, T, H, D = (1, 9, 1, 40) if varlen else (2, 9, 1, 40)
        w = (-torch.exp(_randn(H, D, seed=1))).requires_grad_(True)
        u = _randn(H, D, grad=True, seed=2)
        k = _randn(B, T, H, D, dtype=dtype, grad=True, seed=3)
        v = _randn(B, T, H, D, dtype=dtype, grad=True, seed=4)
        m = torch.ones(B, T, dtype=torch.long) if mask else None
        cu = torch.tensor([0, 4, 9]) if varlen else None
        n = 2 if varlen else B
        s0 = None
        if initial:
            from hf_recurrent.kernels.wkv4.reference import empty_state

            s0 = empty_state(n, H, D, "cpu")
        o, sT = op(w, u, k, v, mask=m, initial_state=s0, output_final_state=final, cu_seqlens=cu, backend="triton")
        _backward([o, sT], [w, u, k, v])

    def wkv4_step(dtype):
        from hf_recurrent.kernels.wkv4 import wkv4_step as op
        from hf_recurrent.kernels.wkv4.reference import empty_state

        B, H, D = 2, 1, 40
        op(-torch.rand(H, D), _randn(H, D), _randn(B, H, D, dtype=dtype), _randn(B, H, D, dtype=dtype),
           empty_state(B, H, D, "cpu"), backend="triton")

    def delta_rule(dtype, initial, final, varlen):
        from hf_recurrent.kernels.delta_rule import generalized_delta_rule

        B, T, H, K, V = (1, 11, 2, 8, 12) if varlen else (2, 11, 2, 8, 12)
        r, k = (_randn(B, T, H, K, dtype=dtype, seed=i) for i in (1, 2))
        kk = F.normalize(_randn(B, T, H, K, seed=3), dim=-1)
        log_w = -0.6 * torch.rand(B, T, H, K)
        v = _randn(B, T, H, V, dtype=dtype, seed=4)
        a, b = (-kk).to(dtype), (kk * 0.5).to(dtype)
        leaves = [t.requires_grad_(True) for t in (r, log_w, k, v, a, b)]
        cu = torch.tensor([0, 5, 11]) if varlen else None
        h0 = _randn(2 if varlen else B, H, K, V, grad=True, seed=5) if initial else None
        o, hT = generalized_delta_rule(*leaves, scale=0.5, initial_state=h0, output_final_state=final, cu_seqlens=cu,
                                       backend="triton")
        _backward([o, hT], leaves + ([h0] if initial else []))

    def delta_rule_step(dtype):
        from hf_recurrent.kernels.delta_rule import generalized_delta_rule_step

        B, H, K, V = 2, 2, 8, 12
        kk = F.normalize(_randn(B, H, K, seed=3), dim=-1)
        generalized_delta_rule_step(_randn(B, H, K, dtype=dtype), -0.5 * torch.rand(B, H, K),
                                    _randn(B, H, K, dtype=dtype, seed=2), _randn(B, H, V, dtype=dtype, seed=4),
                                    (-kk).to(dtype), (0.5 * kk).to(dtype), torch.zeros(B, H, K, V), scale=0.5,
                                    backend="triton")

    def fused(dtype):
        from hf_recurrent.kernels import fused_layers as fl
        from hf_recurrent.kernels.backend import knobs
        from hf_recurrent.kernels.fused_layers import triton_gemv

        for D in (48, 64):
            x = _randn(2, 3, D, dtype=dtype, scale=3, seed=1)
            for weight in (None, _randn(D, dtype=dtype, seed=2)):
                for gate in (None, _randn(2, 3, D, dtype=dtype, seed=3)):
                    fl.rms_norm(x, weight, 1e-5, gate, backend="triton")
                for residual_dtype in (dtype, torch.float32):
                    fl.add_rms_norm(x, _randn(2, 3, D, dtype=residual_dtype, seed=4), weight, 1e-5, backend="triton")
        fl.swiglu(_randn(2, 3, 40, dtype=dtype, seed=5), _randn(2, 3, 40, dtype=dtype, seed=6), backend="triton")
        K = 80
        for row_kernel in (True, False):
            with knobs(triton_gemv, GEMV_ROW_KERNEL=row_kernel):
                for rows in (1, 3, 16):
                    weights = [_randn(n, K, dtype=dtype, scale=K**-0.5, seed=n) for n in (48, 16, 100, 33, 7, 20, 5)]
                    fl.linear_group(_randn(rows, 1, K, dtype=dtype, seed=7), weights, backend="triton")
                    fl.linear_group(_randn(rows, 1, K, dtype=dtype, seed=7), weights[:1], backend="triton")
                    for residual_dtype in (dtype, torch.float32):
                        fl.linear_residual(_randn(rows, 1, K, dtype=dtype, seed=7), weights[0],
                                           _randn(rows, 1, 48, dtype=residual_dtype, seed=8), backend="triton")
        for bias in (None, _randn(40, dtype=dtype, seed=9)):
            for clamp_min in (None, -3.0):
                fl.low_rank_log_gate(_randn(2, 1, 16, dtype=dtype, seed=10), _randn(40, 16, dtype=dtype, seed=11),
                                     bias, 16.0, clamp_min, backend="triton")

    cases = []
    for decay in ("none", "scalar", "vector"):
        for initial, final, varlen in ((False, False, False), (True, True, False), (True, True, True)):
            cases.append((f"linear_attention-{decay}-h0={initial}-final={final}-varlen={varlen}",
                          lambda dt, a=decay, b=initial, c=final, d=varlen: linear_attention(dt, a, b, c, d, True)))
        cases.append((f"linear_attention-{decay}-inference",
                      lambda dt, a=decay: linear_attention(dt, a, False, True, False, False)))
        cases.append((f"linear_attention_step-{decay}", lambda dt, a=decay: linear_attention_step(dt, a)))
    cases.append(("linear_attention_step-low_rank", lambda dt: linear_attention_step(dt, "low_rank")))
    cases.append(("linear_attention-vector-strong-decay", linear_attention_strong_decay))
    for design in ("sequential", "scan"):
        for chunk in ((False, True) if design == "sequential" else (False,)):
            for initial, final, varlen, full in ((False, False, False, False), (True, True, False, True),
                                                 (True, True, True, True)):
                cases.append((f"selective_scan-{design}-chunk={chunk}-h0={initial}-final={final}-varlen={varlen}"
                              f"-full={full}",
                              lambda dt, s=(design, chunk, initial, final, varlen, full): selective_scan(dt, *s)))
        cases.append((f"selective_scan-{design}-production-tiles", lambda dt, d=design: selective_scan_production(dt, d)))
    for full in (False, True):
        cases.append((f"selective_scan_step-full={full}", lambda dt, f=full: selective_scan_step(dt, f)))
    for cell in ("lstm", "gru", "slstm"):
        for path, D in (("resident", 20), ("resident", 72), ("tiled", 20), ("tiled", 72), ("tiled-columns16", 72),
                        ("split-resident", 20), ("split-resident", 72), ("split-resident", 96)):
            cases.append((f"rnn-{cell}-{path}-D={D}-train",
                          lambda dt, c=cell, p=path, d=D: rnn(dt, c, p, d, True, True, True)))
            cases.append((f"rnn-{cell}-{path}-D={D}-inference",
                          lambda dt, c=cell, p=path, d=D: rnn(dt, c, p, d, False, False, False)))
        cases.append((f"rnn-{cell}-split-heads-gpu-only", lambda dt, c=cell: rnn_split_gpu(dt, c)))
        for path in ("resident", "tiled"):
            cases.append((f"rnn_step-{cell}-{path}", lambda dt, c=cell, p=path: rnn_step(dt, c, p)))
    for width in (2, 3, 4):
        for bias, tail, silu in ((False, False, False), (True, True, True)):
            cases.append((f"causal_conv1d-W={width}-bias={bias}-tail={tail}-silu={silu}",
                          lambda dt, s=(bias, tail, silu, width): causal_conv(dt, *s)))
            cases.append((f"causal_conv1d_step-W={width}-bias={bias}-silu={silu}",
                          lambda dt, s=(bias, silu, width): causal_conv_step(dt, *s)))
    for initial, final in ((False, False), (True, True)):
        cases.append((f"linear_scan-h0={initial}-final={final}", lambda dt, s=(initial, final): linear_scan(dt, *s)))
    for mask, initial, final, varlen in ((False, False, False, False), (True, True, True, False),
                                         (False, True, True, True)):
        cases.append((f"wkv4-mask={mask}-h0={initial}-final={final}-varlen={varlen}",
                      lambda dt, s=(mask, initial, final, varlen): wkv4(dt, *s)))
    cases.append(("wkv4_step", wkv4_step))
    for initial, final, varlen in ((False, False, False), (True, True, False), (True, True, True)):
        cases.append((f"delta_rule-h0={initial}-final={final}-varlen={varlen}",
                      lambda dt, s=(initial, final, varlen): delta_rule(dt, *s)))
    cases.append(("delta_rule_step", delta_rule_step))
    cases.append(("fused_layers", fused))
    return cases


def record(path: str) -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    from tests.triton_interpreter import patch_triton_interpreter

    patch_triton_interpreter()
    import torch

    torch.set_num_threads(1)
    install_recorder()
    errors, times = {}, {}
    start = time.perf_counter()
    for name, case in _cases():
        for dtype in (torch.float32, torch.bfloat16):
            label = f"{name}[{str(dtype).replace('torch.', '')}]"
            _CASE[0] = label
            torch.manual_seed(0)
            t0 = time.perf_counter()
            try:
                with dry_run():
                    case(dtype)
            except Exception:
                errors[label] = traceback.format_exc(limit=-6)
            times[label] = time.perf_counter() - t0
    with open(path, "w") as f:
        json.dump({"launches": _RECORDS, "errors": errors, "case_seconds": times, "seconds": time.perf_counter() - start}, f)


# ------------------------------------------------------------------------------------------------ compile (no interp)


def _resolve(module: str, qualname: str):
    """The launched object at ``module.qualname`` and the chain down to its ``JITFunction``."""
    import importlib

    from triton.runtime.jit import JITFunction

    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    chain = [obj]
    while not isinstance(chain[-1], JITFunction):
        inner = getattr(chain[-1], "fn", None)
        if inner is None:
            raise TypeError(f"{module}.{qualname}: cannot unwrap {type(chain[-1]).__name__} to a JITFunction")
        chain.append(inner)
    return chain


def _as_on_hopper(launch: dict) -> dict:
    """A launch as a Hopper GPU makes it: kernels with a ``PDL`` constexpr (programmatic dependent launch, always off
    under the interpreter, whose CPU cannot run the instructions) compiled with it on."""
    constexprs = launch["constexprs"]
    if "PDL" not in constexprs:
        return launch
    return dict(launch, constexprs=dict(constexprs, PDL=True))


def expand(launch: dict) -> list[dict]:
    """The specialisations to compile for one recorded launch: one per GPU candidate config of an autotuner."""
    from triton.runtime.autotuner import Autotuner

    launch = _as_on_hopper(launch)
    chain = _resolve(launch["module"], launch["qualname"])
    tuners = [obj for obj in chain if isinstance(obj, Autotuner)]
    if not tuners:
        return [dict(launch, config=None)]
    specs = []
    for i, config in enumerate(tuners[0].configs):
        spec = dict(launch, constexprs=dict(launch["constexprs"]), options=dict(launch["options"]), config=i)
        spec["constexprs"].update(config.kwargs)
        for key in ("num_warps", "num_stages", "num_ctas", "maxnreg"):
            spec["options"].pop(key, None)
            if getattr(config, key, None) is not None:
                spec["options"][key] = getattr(config, key)
        specs.append(spec)
    return specs


def spec_key(spec: dict) -> str:
    return json.dumps([spec["module"], spec["qualname"], spec["signature"], spec["constexprs"],
                       sorted(spec["divisible"]), spec["options"]], sort_keys=True)


def describe(spec: dict) -> str:
    consts = ", ".join(f"{k}={v}" for k, v in spec["constexprs"].items())
    types = ", ".join(f"{k}: {v}" for k, v in spec["signature"].items() if v != "constexpr")
    opts = ", ".join(f"{k}={v}" for k, v in sorted(spec["options"].items()))
    cfg = "" if spec.get("config") is None else f" autotune config #{spec['config']}"
    return (f"{spec['module']}.{spec['qualname']}{cfg} [{opts}] constexprs({consts}) signature({types}) "
            f"from case {spec['case']}")


class _StageReached(Exception):
    """Raised by the stage appended after :data:`LAST_STAGE`: the compile got that far."""


def _stop_after(backend_class, last: str) -> None:
    """Make ``backend_class`` run its compile stages up to ``last`` only (then raise :class:`_StageReached`)."""
    original = backend_class.add_stages
    if getattr(original, "_hopper_last_stage", None) == last:
        return
    original = getattr(original, "_hopper_original", original)

    def add_stages(self, stages, options, *args, **kwargs):
        original(self, stages, options, *args, **kwargs)
        names = list(stages)
        if last not in names:
            raise RuntimeError(f"compile stage {last!r} unknown to this Triton (stages: {names})")
        for name in names[names.index(last) + 1:]:
            del stages[name]

        def reached(module, metadata):
            raise _StageReached(last)

        stages["stop"] = reached

    add_stages._hopper_last_stage = last
    add_stages._hopper_original = original
    backend_class.add_stages = add_stages


def compile_one(spec: dict) -> tuple[float, str | None]:
    """Compile ``spec`` for :data:`TARGET`: ``(seconds, None)`` or ``(seconds, error)``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    start = time.perf_counter()
    try:
        fn = spec["_fn"] if "_fn" in spec else _resolve(spec["module"], spec["qualname"])[-1]
        target = GPUTarget(*TARGET)
        backend = make_backend(target)
        attrs = {}
        if hasattr(backend, "parse_attr"):
            names = list(spec["signature"])
            attrs = {(names.index(n),): backend.parse_attr("D") for n in spec["divisible"]}
        constexprs = {k: _decode_value(v) for k, v in spec["constexprs"].items()}
        src = ASTSource(fn=fn, signature=spec["signature"], constexprs=constexprs, attrs=attrs)
        last = os.environ.get("HF_RECURRENT_COMPILE_CHECK_STAGE", LAST_STAGE)
        if last != "cubin":
            _stop_after(type(backend), last)
        triton.compile(src, target=target, options=dict(spec["options"]))
    except _StageReached:
        pass
    except Exception as e:  # noqa: BLE001 - every failure is reported with its specialisation
        message = f"{type(e).__name__}: {e}".strip()
        return time.perf_counter() - start, message[-3000:]
    return time.perf_counter() - start, None


def _probe() -> str | None:
    """None if this Triton compiles a good kernel through :func:`compile_one` and rejects a bad one, else why not."""
    import triton
    import triton.language as tl

    @triton.jit
    def good(x, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], tl.float32)
        for i in range(0, n, BLOCK):
            acc += tl.load(x + i + offs, mask=i + offs < n, other=0.0)
        tl.store(x + offs, acc)

    @triton.jit
    def bad(x, n, BLOCK: tl.constexpr):
        acc = 0
        for i in range(0, n, BLOCK):
            acc = tl.load(x + i + tl.arange(0, BLOCK))  # int before the loop, a float32 block in it
        tl.store(x + tl.arange(0, BLOCK), acc)

    def spec(fn):
        return {"signature": {"x": "*fp32", "n": "i32", "BLOCK": "constexpr"}, "constexprs": {"BLOCK": 64},
                "divisible": ["x", "n"], "options": {"num_warps": 4}, "_fn": fn}

    _, err = compile_one(spec(good))
    if err is not None:
        return f"this Triton ({triton.__version__}) cannot compile a probe kernel this way: {err}"
    _, err = compile_one(spec(bad))
    if err is None:
        return f"this Triton ({triton.__version__}) compiled a probe kernel that must fail: the check would be vacuous"
    return None


def compile_all(in_path: str, out_path: str, processes: int = 2) -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["HF_RECURRENT_AUTOTUNE"] = "1"  # every GPU candidate config of the autotuned kernels
    reason = nvidia_backend_available() or _probe()
    if reason is not None:
        with open(out_path, "w") as f:
            json.dump({"unsupported": reason}, f)
        return
    with open(in_path) as f:
        launches = json.load(f)["launches"]
    start = time.perf_counter()
    specs, seen, expand_errors = [], set(), {}
    for launch in launches:
        try:
            expanded = expand(launch)
        except Exception as e:  # noqa: BLE001
            expand_errors[f"{launch['module']}.{launch['qualname']}"] = f"{type(e).__name__}: {e}"
            continue
        for spec in expanded:
            key = spec_key(spec)
            if key not in seen:
                seen.add(key)
                specs.append(spec)
    if processes > 1 and len(specs) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = pool.map(compile_one, specs, chunksize=1)
    else:
        results = [compile_one(spec) for spec in specs]
    out = {
        "specs": [dict(spec, seconds=sec, error=err, description=describe(spec)) for spec, (sec, err) in
                  zip(specs, results)],
        "expand_errors": expand_errors,
        "seconds": time.perf_counter() - start,
    }
    with open(out_path, "w") as f:
        json.dump(out, f)


def nvidia_backend_available() -> str | None:
    """None if Triton can compile for :data:`TARGET` here, else why not."""
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource, make_backend

        make_backend(GPUTarget(*TARGET))
        del ASTSource  # imported to check it exists: compile_one needs it
    except Exception as e:  # noqa: BLE001
        return f"Triton's NVIDIA backend is unavailable: {type(e).__name__}: {e}"
    return None


if __name__ == "__main__":
    if sys.argv[1] == "record":
        record(sys.argv[2])
    elif sys.argv[1] == "compile":
        compile_all(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 2)
    elif sys.argv[1] == "check":
        reason = nvidia_backend_available()
        print(reason or "ok")
    else:
        raise SystemExit(f"unknown command {sys.argv[1]!r}")
