"""Causal depthwise conv1d: against a direct sum, and carrying the tail across calls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_recurrent.kernels.causal_conv1d import causal_conv1d


def _direct(x, w, b, activation):
    B, T, D = x.shape
    W = w.shape[1]
    y = torch.zeros(B, T, D, dtype=torch.float64)
    for t in range(T):
        for i in range(W):
            s = t - W + 1 + i
            if s >= 0:
                y[:, t] += w[:, i].double() * x[:, s].double()
    y = y + (0 if b is None else b.double())
    return F.silu(y) if activation else y


@pytest.mark.parametrize("W", [2, 4])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_direct_sum_and_carries_tail(W, bias):
    x = torch.randn(2, 13, 6)
    w = torch.randn(6, W)
    b = torch.randn(6) if bias else None
    y, tail = causal_conv1d(x, w, b, activation="silu")
    torch.testing.assert_close(y.double(), _direct(x, w, b, True), atol=1e-5, rtol=1e-5)
    assert torch.equal(tail, x[:, -(W - 1) :].transpose(1, 2))
    # Any split of the sequence, with the tail carried, gives the same output; pieces shorter than the tail too.
    outs, carried = [], None
    for s, e in ((0, 1), (1, 6), (6, 7), (7, 13)):
        y_part, carried = causal_conv1d(x[:, s:e], w, b, tail=carried, activation="silu")
        outs.append(y_part)
    torch.testing.assert_close(torch.cat(outs, 1), y, atol=1e-6, rtol=1e-6)
    assert torch.equal(carried, tail)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="weight"):
        causal_conv1d(torch.randn(1, 3, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match="tail"):
        causal_conv1d(torch.randn(1, 3, 4), torch.randn(4, 3), tail=torch.randn(1, 4, 3))
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d(torch.randn(1, 3, 4), torch.randn(4, 3), activation="gelu")
