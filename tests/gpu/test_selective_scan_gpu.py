"""Selective scan and causal conv1d on a CUDA GPU at Mamba sizes: Triton kernels against the PyTorch reference.

d_inner 1536 (mamba-370m... 790m) to 5120 (mamba-2.8b), state 16, T up to 8192, packed sequences, the selective
scan's time-parallel chunks; bf16 and float32.
The oracle is the reference run in float32 on the GPU from the same (rounded) inputs; the kernels also compute in
float32 (no tensor-core products), so the difference is the rounding of the outputs and gradients to the input dtype
plus summation order. Tolerances on ``|a - b| / |b|``: bf16 1e-2 (outputs stored with 8 mantissa bits, ~4e-3),
float32 1e-4 (float32 sums over up to 16k terms for dA, dD, dB).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hf_recurrent.kernels.causal_conv1d import causal_conv1d, causal_conv1d_step
from hf_recurrent.kernels.selective_scan import selective_scan, selective_scan_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

N = 16
TOL = {torch.bfloat16: 1e-2, torch.float32: 1e-4}
NAMES = ["y", "final_state", "dx", "ddt", "dA", "dB", "dC", "dD", "dz", "ddt_bias", "dh0"]


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def _case(batch, T, D, dtype, n_states, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    dt_init = torch.exp(torch.rand(D, generator=g, device="cuda") * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
    bias = dt_init + torch.log(-torch.expm1(-dt_init))  # mamba's dt bias init: softplus^-1 of log-uniform dt
    inputs = dict(
        x=r(batch, T, D).to(dtype), dt=(0.5 * r(batch, T, D)).to(dtype),
        A=-torch.arange(1, N + 1, device="cuda", dtype=torch.float32).expand(D, N) * torch.exp(0.2 * r(D, N)),
        B=r(batch, T, N).to(dtype), C=r(batch, T, N).to(dtype), D=r(D), z=r(batch, T, D).to(dtype), dt_bias=bias,
        initial_state=r(n_states, D, N),
    )
    return inputs, (r(batch, T, D).to(dtype), r(n_states, D, N))


def _run(inputs, grads_out, cu_seqlens, backend, upcast):
    leaves = {k: (v.float() if upcast else v).detach().requires_grad_(True) for k, v in inputs.items()}
    y, hT = selective_scan(
        leaves["x"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"], leaves["D"], leaves["z"], leaves["dt_bias"],
        initial_state=leaves["initial_state"], output_final_state=True, cu_seqlens=cu_seqlens, backend=backend,
    )
    dy, dhT = grads_out
    torch.autograd.backward((y, hT), (dy.to(y.dtype), dhT))
    return [y, hT] + [leaves[k].grad for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")]


@pytest.mark.parametrize("design", ["scan", "sequential", "sequential-unchunked"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize(
    "batch,T,D,cu",
    [(2, 4096, 1536, None), (1, 8192, 2560, None), (1, 1000, 5120, None), (1, 8192, 2048, [0, 3000, 3001, 8192])],
    ids=["2x4096-d1536", "1x8192-d2560", "1x1000-d5120", "packed-d2048"],
)
def test_scan_matches_reference(batch, T, D, cu, dtype, design, monkeypatch):
    """Both designs; the sequential one as by default (at these grids of under 2 programs per SM of an H100 or H200
    the automatic rule chunks every shape) and without its time-parallel chunks."""
    from hf_recurrent.kernels.selective_scan import triton as triton_impl

    monkeypatch.setattr(triton_impl, "DESIGN", design.split("-")[0])
    monkeypatch.setattr(triton_impl, "SEQ_CHUNK", 0 if design.endswith("unchunked") else None)  # None: automatic
    cu_seqlens = None if cu is None else torch.tensor(cu, device="cuda")
    n_states = batch if cu is None else len(cu) - 1
    inputs, grads_out = _case(batch, T, D, dtype, n_states)
    got = _run(inputs, grads_out, cu_seqlens, "triton", upcast=False)
    want = _run(inputs, grads_out, cu_seqlens, "reference", upcast=True)
    for name, a, b in zip(NAMES, got, want):
        assert a.shape == b.shape, name
        assert torch.isfinite(a).all(), name
        assert _rel(a, b) < TOL[dtype], (name, _rel(a, b))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize(
    "chunk,cu", [(None, None), (1024, [0, 3000, 3001, 8192])], ids=["auto-1x8192", "L1024-packed"]
)
def test_chunked_sequential_matches_reference(chunk, cu, dtype, monkeypatch):
    """The sequential design's time-parallel chunks at d_inner 2048, T 8192: one sequence, whose 64 forward and 32
    backward programs the automatic rule chunks (fewer than half of 4 per SM on any GPU of more than 32 SMs), and
    packed sequences of 3000, 1 and 5191 steps in chunks of 1024 (a one-step sequence, ragged ends). Both passes must
    have chunked (the cut is spied on); every output and gradient against the reference."""
    from hf_recurrent.kernels.selective_scan import triton as triton_impl
    from hf_recurrent.kernels.selective_scan import triton_chunked

    monkeypatch.setattr(triton_impl, "DESIGN", "sequential")
    monkeypatch.setattr(triton_impl, "SEQ_CHUNK", chunk)
    lengths, segments = [], triton_chunked._segments

    def spy(p, L):
        lengths.append(L)
        return segments(p, L)

    monkeypatch.setattr(triton_chunked, "_segments", spy)
    cu_seqlens = None if cu is None else torch.tensor(cu, device="cuda")
    inputs, grads_out = _case(1, 8192, 2048, dtype, 1 if cu is None else len(cu) - 1, seed=1)
    got = _run(inputs, grads_out, cu_seqlens, "triton", upcast=False)
    want = _run(inputs, grads_out, cu_seqlens, "reference", upcast=True)
    assert len(lengths) == 2 and all(lengths), lengths
    for name, a, b in zip(NAMES, got, want):
        assert a.shape == b.shape, name
        assert torch.isfinite(a).all(), name
        assert _rel(a, b) < TOL[dtype], (name, _rel(a, b))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_decode_step_matches_reference(dtype):
    inputs, _ = _case(16, 1, 5120, dtype, 16)
    args = [inputs[k][:, 0] if inputs[k].dim() == 3 else inputs[k] for k in ("x", "dt", "A", "B", "C")]
    states = [inputs["initial_state"].clone(), inputs["initial_state"].clone()]
    opt = dict(D=inputs["D"], z=inputs["z"][:, 0], dt_bias=inputs["dt_bias"])
    y_tri = selective_scan_step(*args, states[0], **opt, backend="triton")
    y_ref = selective_scan_step(*[a.float() for a in args], states[1], **opt, backend="reference")
    assert _rel(y_tri, y_ref) < TOL[dtype] and _rel(states[0], states[1]) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("W", [2, 4])
def test_causal_conv1d_matches_reference(dtype, W):
    g = torch.Generator(device="cuda").manual_seed(W)
    B, T, D = 4, 4096, 5120
    x = torch.randn(B, T, D, generator=g, device="cuda").to(dtype)
    w, b = torch.randn(D, W, generator=g, device="cuda"), torch.randn(D, generator=g, device="cuda")
    tail = torch.randn(B, D, W - 1, generator=g, device="cuda").to(dtype)
    dy = torch.randn(B, T, D, generator=g, device="cuda").to(dtype)
    outs = {}
    for backend, up in (("triton", False), ("reference", True)):
        leaves = [(t.float() if up else t).detach().requires_grad_(True) for t in (x, w, b, tail)]
        y, _ = causal_conv1d(*leaves, activation="silu", backend=backend)
        y.backward(dy.to(y.dtype))
        outs[backend] = [y] + [t.grad for t in leaves]
    for name, a, e in zip(["y", "dx", "dw", "db", "dtail"], outs["triton"], outs["reference"]):
        assert _rel(a, e) < TOL[dtype], (name, _rel(a, e))
    t_tri, t_ref = tail.clone(), tail.float().clone()
    y_tri = causal_conv1d_step(x[:, 0], w, b, t_tri, "silu", backend="triton")
    y_ref = causal_conv1d_step(x[:, 0].float(), w, b, t_ref, "silu", backend="reference")
    assert _rel(y_tri, y_ref) < TOL[dtype] and torch.equal(t_tri.float(), t_ref)


def test_mamba_model_in_bf16_matches_float32_reference(monkeypatch):
    """A mamba-370m-wide model in bf16 on the Triton kernels (A_log kept float32) against the same weights in float32
    on the reference; bf16 weights and activations bound the agreement (~1e-2 relative on the logits)."""
    from hf_recurrent.modeling.mamba import HfrMambaConfig, HfrMambaForCausalLM

    torch.manual_seed(0)
    model = HfrMambaForCausalLM(HfrMambaConfig(hidden_size=1024, num_hidden_layers=2, vocab_size=1024)).cuda().eval()
    ids = torch.randint(0, 1024, (2, 2048), device="cuda")
    with torch.no_grad():
        monkeypatch.setenv("HF_RECURRENT_BACKEND", "reference")
        want = model(ids).logits
        monkeypatch.delenv("HF_RECURRENT_BACKEND")
        model.to(torch.bfloat16)
        for layer in model.model.layers:
            layer.mixer.A_log.data = layer.mixer.A_log.data.float()
        got = model(ids).logits
    assert _rel(got, want) < 3e-2
    assert F.cosine_similarity(got.flatten().float(), want.flatten(), dim=0) > 0.999
