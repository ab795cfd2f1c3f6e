"""Gated linear attention: Triton kernels (on the CPU, through Triton's interpreter) against the PyTorch reference.

``TRITON_INTERPRET=1`` is set in ``conftest.py`` of this folder before Triton is imported. Shapes are tiny but cover
several chunks of 64 tokens, a ragged last chunk, head dims that are not powers of two, packed sequences, and vector,
scalar and absent decay. Every output (o, final state) and every input gradient is compared in float32.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hf_recurrent.kernels.linear_attention import (  # noqa: E402
    gated_linear_attention,
    gated_linear_attention_step,
    reference,
)

triton_impl = pytest.importorskip("hf_recurrent.kernels.linear_attention.triton")

RTOL = 1e-4


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _inputs(B, T, H, K, V, decay, n_states, initial_state, seed=0, strong=False):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen)
    k = torch.randn(B, T, H, K, generator=gen)
    v = torch.randn(B, T, H, V, generator=gen)
    shape = {"vector": (B, T, H, K), "scalar": (B, T, H)}.get(decay)
    g = None
    if shape is not None:
        # logsigmoid keeps g <= 0; 'strong' decays reach e^-40 per step and test that nothing overflows
        g = F.logsigmoid(torch.randn(*shape, generator=gen) * (8.0 if strong else 1.0) + (-4.0 if strong else 2.0))
    h0 = torch.randn(n_states, H, K, V, generator=gen) if initial_state else None
    return q, k, v, g, h0


def _run_and_grad(fn, q, k, v, g, h0, cu_seqlens, seed=1):
    leaves = [x.clone().requires_grad_(True) if x is not None else None for x in (q, k, v, g, h0)]
    o, ht = fn(*leaves[:4], q.shape[-1] ** -0.5, leaves[4], True, cu_seqlens)
    gen = torch.Generator().manual_seed(seed)
    do, dht = torch.randn(o.shape, generator=gen), torch.randn(ht.shape, generator=gen)
    used = [x for x in leaves if x is not None]
    grads = torch.autograd.grad((o * do).sum() + (ht * dht).sum(), used)
    return [o, ht, *grads]


def _compare(got, want, rtol=RTOL):
    names = ["o", "final_state", "dq", "dk", "dv", "dlog_decay/dh0", "dh0"]
    for name, a, b in zip(names, got, want):
        assert a.shape == b.shape, name
        assert torch.isfinite(a).all(), name
        assert _rel(a, b) < rtol, f"{name}: relative error {_rel(a, b):.2e}"


@pytest.mark.parametrize("decay", ["vector", "scalar", "none"])
@pytest.mark.parametrize("K,V", [(24, 20), (16, 32)])
def test_chunk_triton_matches_recurrent(decay, K, V):
    """Two batches of 150 tokens (chunks 64 + 64 + 22), initial state, final state, all gradients."""
    q, k, v, g, h0 = _inputs(2, 150, 2, K, V, decay, 2, initial_state=(K, V) == (24, 20))
    got = _run_and_grad(triton_impl.chunk_gla, q, k, v, g, h0, None)
    want = _run_and_grad(reference.recurrent_gla, q, k, v, g, h0, None)
    _compare(got, want)


@pytest.mark.parametrize("decay", ["vector", "scalar"])
def test_chunk_triton_varlen(decay):
    """Packed sequences of 30, 70 and 5 tokens, each from its own initial state."""
    cu = torch.tensor([0, 30, 100, 105])
    q, k, v, g, h0 = _inputs(1, 105, 2, 16, 24, decay, 3, initial_state=True, seed=2)
    got = _run_and_grad(triton_impl.chunk_gla, q, k, v, g, h0, cu)
    want = _run_and_grad(reference.recurrent_gla, q, k, v, g, h0, cu)
    _compare(got, want)


def test_chunk_triton_strong_decay_is_stable():
    """Decays down to e^-40 per step: exponents of cumulative differences only, nothing overflows."""
    q, k, v, g, h0 = _inputs(1, 100, 1, 32, 16, "vector", 1, initial_state=True, seed=3, strong=True)
    got = _run_and_grad(triton_impl.chunk_gla, q, k, v, g, h0, None)
    want = _run_and_grad(reference.recurrent_gla, q, k, v, g, h0, None)
    _compare(got, want)


@pytest.mark.parametrize("case", ["fallback_only", "mixed_chunks", "near_threshold"])
def test_chunk_triton_vector_decay_paths(case, monkeypatch):
    """Vector decay takes one matrix product per chunk when its decay spread is small, sub-chunks otherwise.

    'fallback_only' forces the sub-chunk path on ordinary decays; 'mixed_chunks' has strong decays in the first
    64 tokens only, so chunks of one sequence take different paths; 'near_threshold' has spreads up to ~57 (the
    one-product path, factors up to e^28).
    """
    q, k, v, g, h0 = _inputs(1, 150, 2, 24, 20, "vector", 1, initial_state=True, seed=7)
    if case == "fallback_only":
        monkeypatch.setattr("hf_recurrent.kernels.linear_attention.triton_chunk._fast_spread", lambda dtype: 0.0)
    elif case == "near_threshold":
        g = -0.8 - 0.1 * torch.rand(g.shape, generator=torch.Generator().manual_seed(9))
    else:
        g_strong = _inputs(1, 150, 2, 24, 20, "vector", 1, initial_state=False, seed=8, strong=True)[3]
        g = torch.cat([g_strong[:, :64], g[:, 64:]], dim=1)
    got = _run_and_grad(triton_impl.chunk_gla, q, k, v, g, h0, None)
    want = _run_and_grad(reference.recurrent_gla, q, k, v, g, h0, None)
    _compare(got, want)


@pytest.mark.parametrize("fallback", [False, True])
def test_chunk_triton_bf16_log_decay(fallback, monkeypatch):
    """A bfloat16 log decay: its gradient comes back in bfloat16, summed in float32 on both vector-decay paths."""
    q, k, v, g, h0 = _inputs(1, 100, 2, 16, 16, "vector", 1, initial_state=True, seed=10)
    if fallback:
        monkeypatch.setattr("hf_recurrent.kernels.linear_attention.triton_chunk._fast_spread", lambda dtype: 0.0)
    g = g.bfloat16()
    got = _run_and_grad(triton_impl.chunk_gla, q, k, v, g, h0, None)
    want = _run_and_grad(triton_impl.chunk_gla, q, k, v, g.float(), h0, None)
    assert got[5].dtype == torch.bfloat16
    _compare(got[:5] + got[6:], want[:5] + want[6:])
    assert _rel(got[5].float(), want[5]) < 1e-2


@pytest.mark.parametrize("decay", ["vector", "scalar"])
def test_chunk_triton_bf16_inputs(decay):
    """bfloat16 q, k, v (as models run on a GPU), outputs and every gradient against the float32 recurrence on the
    same rounded inputs. The kernels round decayed queries/keys, the intra-chunk scores and the chunk states to
    bfloat16 before float32-accumulated products: a few roundings of 2^-9 in series, so 2e-2 (twice that for the
    decay's gradient, a difference of two such sums), as the GPU test allows at real sizes."""
    q, k, v, g, h0 = _inputs(2, 130, 2, 32, 48, decay, 2, initial_state=True, seed=5)
    q, k, v = (x.bfloat16() for x in (q, k, v))
    got = _run_and_grad(triton_impl.chunk_gla, q, k, v, g, h0, None)
    want = _run_and_grad(reference.recurrent_gla, q.float(), k.float(), v.float(), g, h0, None)
    assert [x.dtype for x in got[:5]] == [torch.bfloat16, torch.float32, torch.bfloat16, torch.bfloat16, torch.bfloat16]
    for name, a, b in zip(["o", "final_state", "dq", "dk", "dv", "dlog_decay", "dh0"], got, want):
        assert torch.isfinite(a).all(), name
        bound = 4e-2 if name == "dlog_decay" else 2e-2
        assert _rel(a.float(), b) < bound, f"{name}: relative error {_rel(a.float(), b):.2e}"


def test_dispatch_triton_without_final_state():
    """Through the public op with ``backend='triton'``: no final state, no initial state, default scale."""
    q, k, v, g, _ = _inputs(1, 40, 2, 16, 16, "vector", 1, initial_state=False, seed=4)
    o, ht = gated_linear_attention(q, k, v, g, backend="triton")
    o_ref, _ = reference.recurrent_gla(q, k, v, g, 16**-0.5)
    assert ht is None
    assert _rel(o, o_ref) < RTOL


@pytest.mark.parametrize("decay", ["vector", "scalar", "none"])
@pytest.mark.parametrize("K,V", [(24, 20), (128, 96)])
def test_step_triton_matches_reference(decay, K, V):
    q, k, v, g, h0 = _inputs(3, 1, 2, K, V, decay, 3, initial_state=True, seed=5)
    q, k, v = q[:, 0], k[:, 0], v[:, 0]
    g = None if g is None else g[:, 0]
    s_tri, s_ref = h0.clone(), h0.clone()
    o_tri = gated_linear_attention_step(q, k, v, g, s_tri, backend="triton")
    o_ref = reference.recurrent_gla_step(q, k, v, g, s_ref, K**-0.5)
    assert _rel(o_tri, o_ref) < 1e-5
    assert _rel(s_tri, s_ref) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias,clamp_min", [(True, None), (False, -2.0)])
def test_step_with_a_low_rank_decay_evaluated_in_the_kernel(dtype, bias, clamp_min):
    """GLA's decode step: the log decay from its low-rank projection (R = 16 -> H * K) computed inside the step
    kernel = the materialised decay through the reference step (float32: summation order; bfloat16: the decay's
    pre-activation may round to the neighbouring value, 2^-8 relative before the log-sigmoid)."""
    from hf_recurrent.kernels.linear_attention import LowRankLogDecay

    torch.manual_seed(7)
    B, H, K, V, R = 2, 3, 24, 20, 16
    q, k = (torch.randn(B, H, K).to(dtype) for _ in range(2))
    v = torch.randn(B, H, V).to(dtype)
    decay = LowRankLogDecay((torch.randn(B, R) * 3).to(dtype), torch.randn(H * K, R).to(dtype),
                            torch.randn(H * K).to(dtype) if bias else None, 16.0, clamp_min)
    h0 = torch.randn(B, H, K, V)
    s_tri, s_ref = h0.clone(), h0.clone()
    o_tri = gated_linear_attention_step(q, k, v, decay, s_tri, backend="triton")
    o_ref = gated_linear_attention_step(q, k, v, decay, s_ref, backend="reference")
    torch.testing.assert_close(decay.materialize(H), decay.materialize(H).clamp_min(clamp_min or -1e30))
    bound = (1e-5, 1e-6) if dtype == torch.float32 else (1e-2, 1e-3)
    assert _rel(o_tri, o_ref) < bound[0] and _rel(s_tri, s_ref) < bound[1]
    with pytest.raises(ValueError, match=r"low-rank log decay needs x \[B=2, R\] and weight \[H\*K=72, R\]"):
        gated_linear_attention_step(q, k, v, LowRankLogDecay(decay.x, decay.weight[:-1], None, 16.0), s_tri)


def test_step_triton_strided_inputs():
    """q, k, v as views into one projection (non-contiguous), as a model's decode produces them."""
    B, H, K = 2, 2, 16
    qkv = torch.randn(B, H, 3 * K)
    q, k, v = qkv.split(K, dim=-1)
    g = F.logsigmoid(torch.randn(B, H))
    s_tri, s_ref = torch.randn(B, H, K, K).unbind(0)[0].expand(B, H, K, K).clone(), None
    s_ref = s_tri.clone()
    o_tri = triton_impl.recurrent_gla_step(q, k, v, g, s_tri, 0.5)
    o_ref = reference.recurrent_gla_step(q, k, v, g, s_ref, 0.5)
    assert _rel(o_tri, o_ref) < 1e-5 and _rel(s_tri, s_ref) < 1e-6


@pytest.mark.parametrize("decay", ["vector", "scalar", "none"])
def test_reference_chunk_matches_recurrent(decay):
    """The chunked PyTorch form against the definition, forward and gradients, with packed sequences."""
    cu = torch.tensor([0, 21, 50, 53])
    q, k, v, g, h0 = _inputs(1, 53, 2, 8, 6, decay, 3, initial_state=True, seed=6)
    got = _run_and_grad(reference.chunk_gla, q, k, v, g, h0, cu)
    want = _run_and_grad(reference.recurrent_gla, q, k, v, g, h0, cu)
    _compare(got, want, rtol=1e-5)


def test_chunk_triton_accepts_a_broadcast_decay():
    """RetNet passes its fixed per-head decay expanded over (B, T): zero strides must be read as the values."""
    torch.manual_seed(3)
    B, T, H, K, V = 2, 70, 2, 16, 16
    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)
    g = torch.tensor([-0.05, -0.3]).expand(B, T, H)
    o, s = gated_linear_attention(q, k, v, g, output_final_state=True, backend="triton")
    ro, rs = gated_linear_attention(q, k, v, g.contiguous(), output_final_state=True, backend="reference")
    torch.testing.assert_close(o, ro, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s, rs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("autotune", [True, False])
def test_launch_settings_kept_per_call(monkeypatch, autotune: bool) -> None:
    """``_prune_chunk``: tiles no wider than the head; a 16-bit forward without ``STORE_A`` on 8 warps only (its
    4-warp builds were wrong on an H200 with Triton 3.6, see ``tests/gpu/test_linear_attention_configs_gpu.py``);
    one setting without autotuning."""
    from hf_recurrent.kernels.linear_attention import triton_chunk as tc

    monkeypatch.setattr(tc, "autotuning", lambda: autotune)

    def kept(K, V, dtype, store_a):
        k = torch.zeros(1, dtype=dtype)
        return tc._prune_chunk(tc._CHUNK_CANDIDATES, {"k": k}, K=K, V=V, STORE_A=store_a)

    for K, V in ((32, 64), (64, 128), (128, 128), (256, 512)):
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            for store_a in (True, False, None):
                configs = kept(K, V, dtype, store_a)
                assert configs and len(configs) == (len(configs) if autotune else 1)
                assert all(c.kwargs["BK"] <= max(K, 32) and c.kwargs["BV"] <= max(V, 32) for c in configs)
                if store_a is False and dtype != torch.float32:
                    assert all(c.num_warps == 8 for c in configs)
    assert any(c.num_warps == 4 for c in kept(64, 128, torch.bfloat16, True))
    assert any(c.num_warps == 4 for c in kept(64, 128, torch.float32, False))
