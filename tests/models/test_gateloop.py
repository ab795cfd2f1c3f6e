"""GateLoop: parity with the gateloop-transformer package on the CPU, and the complex-gate op against its definition.

The package computes the complex recurrence directly (an associative scan over complex states); ours rotates q, k
by the accumulated phase and runs the real chunked kernel. fp32 logits must agree to 1e-4 (observed ~1e-6).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from gateloop_transformer import Transformer
from transformers import AutoModelForCausalLM

from hf_recurrent.conversion import ConversionError, convert
from hf_recurrent.kernels.linear_attention.complex_gates import (
    complex_gated_linear_attention,
    complex_gated_linear_attention_step,
)
from hf_recurrent.modeling.gateloop import HfrGateLoopForCausalLM

ATOL = 1e-4
VARIANTS = {
    "package-default": dict(),
    "real-heads4-subln-nogate": dict(gate_loop_heads=4, ablate_complex=True, sub_ln=True, attn_add_swish_gating=False),
    "heads8-wide": dict(gate_loop_heads=8, dim_gate_looped_attn=48, ff_mult=2),
}


def _package_model(kwargs: dict, seed: int = 0) -> Transformer:
    """A random package model; norm weights off 1 and gate projections scaled up so phases and magnitudes vary."""
    torch.manual_seed(seed)
    model = Transformer(num_tokens=64, dim=32, depth=2, **kwargs).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gamma" in name or "maybe_sub_ln" in name:
                p.add_(0.2 * torch.randn_like(p))
            if "to_a" in name:
                p.mul_(3)
    return model


@torch.no_grad()
def _package_greedy(model: Transformer, ids: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_greedy_and_padding_match_the_package(variant, tmp_path):
    kwargs = VARIANTS[variant]
    package = _package_model(kwargs)
    (tmp_path / "src").mkdir()
    torch.save(package.state_dict(), tmp_path / "src" / "model.pt")
    (tmp_path / "src" / "config.json").write_text(json.dumps(dict(num_tokens=64, dim=32, depth=2, **kwargs)))
    convert("gateloop", tmp_path / "src", tmp_path / "dst")
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "dst").eval()
    assert type(ours) is HfrGateLoopForCausalLM
    ids = torch.randint(0, 64, (2, 19), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, package(ids), atol=ATOL, rtol=0)
        padded = ours(ids.masked_fill(mask == 0, 0), attention_mask=mask).logits
        torch.testing.assert_close(padded[1, 5:], package(ids[1:, 5:])[0], atol=ATOL, rtol=0)
        greedy = ours.generate(ids[:, :6], max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert greedy.tolist() == _package_greedy(package, ids[:, :6], 8).tolist()


def _complex_definition(q, k, v, log_m, phase, c0):
    """``C_t = a_t C_{t-1} + k_t^T v_t`` with complex ``a_t``, ``o_t = q_t Re(C_t)``, step by step in complex128."""
    a = torch.polar(log_m.double().exp(), phase.double())  # [B, T, H]
    c, out = c0, []
    for t in range(q.shape[1]):
        c = a[:, t, :, None, None] * c + (k[:, t, :, :, None] * v[:, t, :, None, :]).double()
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, t].double(), c.real))
    return torch.stack(out, 1), c


def test_complex_op_equals_its_definition_with_carried_state_and_gradients():
    B, T, H, K, V = 2, 29, 3, 4, 5
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(B, T, H, K, generator=gen), torch.randn(B, T, H, K, generator=gen)
    v = torch.randn(B, T, H, V, generator=gen)
    log_m = -torch.rand(B, T, H, generator=gen)
    phase = (torch.rand(B, T, H, generator=gen) * 2 - 1) * math.pi
    want, c_end = _complex_definition(q, k, v, log_m, phase, torch.zeros(B, H, K, V, dtype=torch.complex128))

    leaves = [x.clone().requires_grad_(True) for x in (q, k, v, log_m, phase)]
    o1, s1, p1 = complex_gated_linear_attention(*(x[:, :11] for x in leaves), scale=1.0, output_final_state=True)
    o2, s2, p2 = complex_gated_linear_attention(*(x[:, 11:-1] for x in leaves), scale=1.0, initial_state=s1,
                                                initial_phase=p1, output_final_state=True)
    s3, p3 = s2.detach().clone(), p2.clone()
    o3 = complex_gated_linear_attention_step(*(x[:, -1].detach() for x in leaves), s3, p3, scale=1.0)
    got = torch.cat([o1, o2], 1)
    torch.testing.assert_close(got.double(), want[:, :-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o3.double(), want[:, -1], atol=1e-5, rtol=1e-5)
    rotation = torch.polar(torch.ones_like(p3.double()), p3.double())[..., None, None]
    c_ours = rotation * torch.complex(s3[:, :, :K].double(), -s3[:, :, K:].double())
    torch.testing.assert_close(c_ours, c_end, atol=1e-5, rtol=1e-5)  # C_t = e^{i Phi_t} (S_cos - i S_sin)

    dout = torch.randn(B, T - 1, H, V, generator=gen)
    grads = torch.autograd.grad((got * dout).sum(), leaves)
    ref_leaves = [x.double().requires_grad_(True) for x in (q, k, v, log_m, phase)]
    ref, _ = _complex_definition(*ref_leaves, torch.zeros(B, H, K, V, dtype=torch.complex128))
    ref_grads = torch.autograd.grad((ref[:, :-1] * dout.double()).sum(), ref_leaves)
    for name, g, r in zip("q k v log_m phase".split(), grads, ref_grads):
        torch.testing.assert_close(g.double(), r, atol=1e-4, rtol=1e-4, msg=name)


def test_phase_is_kept_modulo_two_pi_without_losing_precision():
    """200k steps of phase 0.7 rad: Phi must be 200k * 0.7 mod 2 pi to 1e-5 (a float32 cumsum is off by ~2e-3)."""
    B, T, H, K = 1, 200_000, 1, 1
    q = k = v = torch.zeros(B, T, H, K)
    step = torch.full((B, T, H), 0.7)
    _, _, phase = complex_gated_linear_attention(q, k, v, torch.zeros(B, T, H), step, scale=1.0)
    assert abs(phase.item() - math.fmod(T * step[0, 0, 0].double().item(), 2 * math.pi)) < 1e-5


def test_bad_inputs_are_refused(tmp_path):
    q = torch.zeros(1, 4, 2, 3)
    with pytest.raises(ValueError, match="log_magnitude and phase"):
        complex_gated_linear_attention(q, q, q, torch.zeros(1, 4, 3), torch.zeros(1, 4, 2))
    package = _package_model({})
    (tmp_path / "src").mkdir()
    torch.save(package.state_dict(), tmp_path / "src" / "model.pt")
    (tmp_path / "src" / "config.json").write_text(json.dumps(dict(dim=48, ablate_state_transition=True)))
    with pytest.raises(ConversionError, match="ablate_state_transition"):
        convert("gateloop", tmp_path / "src", tmp_path / "dst")
    (tmp_path / "src" / "config.json").write_text(json.dumps(dict(dim=48)))
    with pytest.raises(ConversionError, match="dim=48 but the weights say 32"):
        convert("gateloop", tmp_path / "src", tmp_path / "dst")
    state = package.state_dict()
    state["layers.1.0.fn.to_qkv.weight"] = state["layers.1.0.fn.to_qkv.weight"][:90]
    torch.save(state, tmp_path / "src" / "model.pt")
    (tmp_path / "src" / "config.json").unlink()
    bad_shape = r"model\.layers\.1\.mixer\.qkv_proj\.weight.*expected \(96, 32\).*found \(90, 32\)"
    with pytest.raises(ConversionError, match=bad_shape):
        convert("gateloop", tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
