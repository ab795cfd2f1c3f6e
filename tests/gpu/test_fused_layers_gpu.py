"""Fused layers on a GPU: the Triton kernels round exactly as the unfused PyTorch code (bf16, real widths)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_recurrent.kernels.fused_layers import add_rms_norm, rms_norm, swiglu

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
