"""Fused layers on a GPU: the Triton kernels round exactly as the unfused PyTorch code (bf16, real widths), and
programmatic dependent launch (Hopper) changes no result of a CUDA-graph decode step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_recurrent.kernels import triton_launch
from hf_recurrent.kernels.backend import knobs
from hf_recurrent.kernels.fused_layers import triton_gemv
from hf_recurrent.kernels.fused_layers import (
    add_rms_norm, linear_group, linear_residual, low_rank_log_gate, rms_norm, swiglu,
)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("residual_dtype", [torch.float32, torch.bfloat16])
def test_add_rms_norm_matches_torch(residual_dtype):
    torch.manual_seed(0)
    x = torch.randn(64, 2048, device="cuda").to(torch.bfloat16)
    residual = torch.randn(64, 2048, device="cuda").to(residual_dtype)
    weight = torch.randn(2048, device="cuda")
    s, y = add_rms_norm(x, residual, weight, 1e-6, backend="triton")
    s_ref, y_ref = add_rms_norm(x, residual, weight, 1e-6, backend="reference")
    torch.testing.assert_close(s, s_ref, atol=0, rtol=0)
    # the float32 mean differs from torch's only in summation order: at most one bf16 rounding step apart
    torch.testing.assert_close(y, y_ref, atol=0, rtol=2**-7)
    assert (y != y_ref).float().mean() < 0.01


def test_gated_rms_norm_and_swiglu_match_torch():
    torch.manual_seed(1)
    o, g = (torch.randn(8, 4, 512, device="cuda").to(torch.bfloat16) for _ in range(2))
    weight = torch.randn(512, device="cuda")
    torch.testing.assert_close(rms_norm(o, weight, 1e-5, g, backend="triton"),
                               rms_norm(o, weight, 1e-5, g, backend="reference"), atol=0, rtol=2**-7)
    a, b = (torch.randn(16, 5632, device="cuda").to(torch.bfloat16) * 4 for _ in range(2))
    torch.testing.assert_close(swiglu(a, b, backend="triton"), F.silu(a) * b, atol=0, rtol=0)


@pytest.mark.parametrize("row_kernel", [True, False], ids=["row_kernel", "group_kernel"])
@pytest.mark.parametrize("residual_dtype", [torch.float32, torch.bfloat16])
def test_linear_group_and_residual_match_torch_at_decode_shapes(residual_dtype, row_kernel):
    """The GLA 1.3B decode step's projections (q, k, v, g and the low-rank gate; gate/up; o; down + residual),
    bf16: float32 sums of the same products as cuBLAS, so at most one bf16 rounding step apart."""
    torch.manual_seed(2)
    for rows, cols in (([1024, 1024, 2048, 16, 2048], 2048), ([5632, 5632], 2048), ([2048], 2048), ([2048], 5632)):
        x = torch.randn(1, cols, device="cuda").to(torch.bfloat16)
        weights = [(torch.randn(n, cols, device="cuda") / cols**0.5).to(torch.bfloat16) for n in rows]
        with knobs(triton_gemv, GEMV_ROW_KERNEL=row_kernel):
            outs = linear_group(x, weights, backend="triton")
        for y, w in zip(outs, weights):
            torch.testing.assert_close(y, F.linear(x, w), atol=1e-3, rtol=2**-7)
        r = torch.randn(1, rows[0], device="cuda").to(residual_dtype)
        # the product may round to the neighbouring bf16 value, and the sum then one step of the residual's size
        with knobs(triton_gemv, GEMV_ROW_KERNEL=row_kernel):
            out = linear_residual(x, weights[0], r, backend="triton")
        torch.testing.assert_close(out, r + F.linear(x, weights[0]),
                                   atol=2**-8 * r.abs().max().item() + 1e-3, rtol=2**-7)


def test_low_rank_log_gate_matches_torch():
    torch.manual_seed(3)
    x = (torch.randn(64, 16, device="cuda") * 4).to(torch.bfloat16)
    w, b = torch.randn(1024, 16, device="cuda").to(torch.bfloat16), torch.randn(1024, device="cuda").to(torch.bfloat16)
    out = low_rank_log_gate(x, w, b, 16.0, -5.0, backend="triton")
    # the pre-activation may round to the neighbouring bf16 value (summation order): 2^-8 of |z| in the log-sigmoid
    torch.testing.assert_close(out, low_rank_log_gate(x, w, b, 16.0, -5.0, backend="reference"), atol=2e-3, rtol=2**-7)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                    reason="programmatic dependent launch needs Hopper")
@pytest.mark.parametrize("row_kernel", [True, False], ids=["row_kernel", "group_kernel"])
def test_dependent_launch_leaves_cuda_graph_decode_unchanged(row_kernel):
    """Dependent launches let each kernel start before its predecessor ends: a missing wait would read a stale
    input. Greedy decode of a GLA model wide enough for kernels to overlap (hidden 2048, bf16, CUDA graphs), with
    and without them: the same logits bit for bit, every step."""
    from hf_recurrent.modeling.gla import HfrGLAConfig, HfrGLAForCausalLM

    torch.manual_seed(0)
    config = HfrGLAConfig(vocab_size=4096, hidden_size=2048, num_hidden_layers=4, num_heads=4, expand_k=0.5,
                          expand_v=1.0, initializer_range=0.02)
    model = HfrGLAForCausalLM(config).cuda().to(torch.bfloat16).eval()
    ids = torch.randint(3, 4096, (1, 12), device="cuda")
    logits = []
    for on in (True, False):
        triton_launch.DEPENDENT_LAUNCH = on
        model.__dict__.pop("_decode_graph", None)
        try:
            with knobs(triton_gemv, GEMV_ROW_KERNEL=row_kernel):
                out = model.generate(ids, max_new_tokens=32, do_sample=False, output_logits=True,
                                     return_dict_in_generate=True, pad_token_id=0)
        finally:
            triton_launch.DEPENDENT_LAUNCH = True
        assert "_decode_graph" in model.__dict__
        logits.append(torch.stack(out.logits))
    torch.testing.assert_close(logits[0], logits[1], atol=0, rtol=0)
