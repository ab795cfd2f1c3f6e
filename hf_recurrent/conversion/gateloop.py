"""``gateloop``: models of the ``gateloop-transformer`` package (its ``Transformer`` with gate-looped attention).

Source: a folder (or a single file) with the model's ``state_dict`` (``*.pt`` / ``*.pth`` / ``pytorch_model.bin``
read with ``weights_only=True``, or safetensors) and, optionally, ``config.json`` holding the keyword arguments the
``Transformer`` was built with (``num_tokens``, ``dim``, ``depth``, ``gate_loop_heads``, ``ablate_complex``, ...).
The package saves no config, so every size is read from the weight shapes; ``config.json`` supplies what shapes
cannot tell (``ablate_complex``, ``frac_gradient_state_transition``) and is checked against them.

Parameter names, package -> ours (``N`` = layer):

==============================================  ================================================
``token_emb.weight``                            ``model.embed_tokens.weight``
``layers.N.0.norm.gamma``                       ``model.layers.N.mixer_norm.weight``
``layers.N.0.fn.to_qkv.weight``                 ``model.layers.N.mixer.qkv_proj.weight``
``layers.N.0.fn.to_a.0.{weight,bias}``          ``model.layers.N.mixer.a_proj.{weight,bias}``
``layers.N.0.fn.maybe_sub_ln.{weight,bias}``    ``model.layers.N.mixer.sub_norm.{weight,bias}``
``layers.N.0.fn.to_gates.0.weight``             ``model.layers.N.mixer.g_proj.weight``
``layers.N.0.fn.to_out.weight``                 ``model.layers.N.mixer.o_proj.weight``
``layers.N.1.norm.gamma``                       ``model.layers.N.mlp_norm.weight``
``layers.N.1.fn.{0,2}.{weight,bias}``           ``model.layers.N.mlp.{fc1,fc2}.{weight,bias}``
``to_logits.0.gamma``, ``to_logits.1.weight``   ``model.norm.weight``, ``lm_head.weight``
==============================================  ================================================

The package's RMSNorm, ``x / max(||x||, 1e-12) * sqrt(d) * gamma``, is ours with ``norm_eps = 1e-12`` up to that
epsilon's placement. Refused: full-attention layers (``use_gate_looped_attn=False``), post-LayerNorm blocks
(``post_ln_norm``), ``ablate_state_transition``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError

from ..modeling.gateloop import HfrGateLoopConfig
from .errors import ConversionError
from .io import load_weights, read_json
from .registry import ConvertedCheckpoint, SourceFormat, register_format

_RENAMES = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^token_emb\.weight$", "model.embed_tokens.weight"),
        (r"^layers\.(\d+)\.0\.norm\.gamma$", r"model.layers.\1.mixer_norm.weight"),
        (r"^layers\.(\d+)\.0\.fn\.to_qkv\.weight$", r"model.layers.\1.mixer.qkv_proj.weight"),
        (r"^layers\.(\d+)\.0\.fn\.to_a\.0\.(weight|bias)$", r"model.layers.\1.mixer.a_proj.\2"),
        (r"^layers\.(\d+)\.0\.fn\.maybe_sub_ln\.(weight|bias)$", r"model.layers.\1.mixer.sub_norm.\2"),
        (r"^layers\.(\d+)\.0\.fn\.to_gates\.0\.weight$", r"model.layers.\1.mixer.g_proj.weight"),
        (r"^layers\.(\d+)\.0\.fn\.to_out\.weight$", r"model.layers.\1.mixer.o_proj.weight"),
        (r"^layers\.(\d+)\.1\.norm\.gamma$", r"model.layers.\1.mlp_norm.weight"),
        (r"^layers\.(\d+)\.1\.fn\.0\.(weight|bias)$", r"model.layers.\1.mlp.fc1.\2"),
        (r"^layers\.(\d+)\.1\.fn\.2\.(weight|bias)$", r"model.layers.\1.mlp.fc2.\2"),
        (r"^to_logits\.0\.gamma$", "model.norm.weight"),
        (r"^to_logits\.1\.weight$", "lm_head.weight"),
    )
)


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ConversionError(f"missing key {key!r}: not a gateloop-transformer Transformer state dict")
    return tuple(state[key].shape)


def gateloop_config(state: Mapping[str, torch.Tensor], kwargs: Mapping[str, Any] | None = None) -> HfrGateLoopConfig:
    """Our config from the package's weight shapes, checked against its constructor ``kwargs`` when given."""
    kwargs = dict(kwargs or {})
    reasons = [f"{flag}=True" for flag in ("post_ln_norm", "ablate_state_transition") if kwargs.get(flag)]
    if not kwargs.get("use_gate_looped_attn", True) or any(".fn.to_qkv.1." in k or "rotary" in k for k in state):
        reasons.append("full-attention layers (use_gate_looped_attn=False)")
    if "to_logits.0.gamma" not in state and "to_logits.weight" in state:
        reasons.append("post-LayerNorm blocks (post_ln_norm=True)")
    if reasons:
        raise ConversionError("this GateLoop model uses features hfr_gateloop does not have: " + "; ".join(reasons))
    vocab, dim = _shape(state, "token_emb.weight")
    depth = len({m.group(1) for k in state if (m := re.match(r"^layers\.(\d+)\.", k))})
    gate_dim = _shape(state, "layers.0.0.fn.to_qkv.weight")[0] // 3
    heads = _shape(state, "layers.0.0.fn.to_a.0.weight")[0] // 2
    inner = _shape(state, "layers.0.1.fn.0.weight")[0]
    fields = dict(
        vocab_size=vocab, hidden_size=dim, num_hidden_layers=depth, gate_dim=gate_dim, num_heads=heads,
        ff_mult=inner // dim, intermediate_size=inner, use_output_gate="layers.0.0.fn.to_gates.0.weight" in state,
        sub_layernorm="layers.0.0.fn.maybe_sub_ln.weight" in state,
        complex_gates=not kwargs.get("ablate_complex", False),
        state_transition_grad_frac=kwargs.get("frac_gradient_state_transition", 0.9),
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    given = dict(num_tokens=vocab, dim=dim, depth=depth, dim_gate_looped_attn=gate_dim, gate_loop_heads=heads,
                 ff_mult=fields["ff_mult"], attn_add_swish_gating=fields["use_output_gate"],
                 sub_ln=fields["sub_layernorm"])
    clashes = [f"{k}={kwargs[k]} but the weights say {v}" for k, v in given.items() if kwargs.get(k) not in (None, v)]
    if clashes:
        raise ConversionError("config.json disagrees with the weights: " + "; ".join(clashes))
    try:
        return HfrGateLoopConfig(**fields)
    except (TypeError, ValueError, StrictDataclassError) as err:
        raise ConversionError(f"the weights describe a GateLoop that hfr_gateloop cannot represent: {err}") from None


def gateloop_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package's weights under our names (unknown names pass through for the shared key check to report)."""
    out = {}
    for name, tensor in state.items():
        for pattern, replacement in _RENAMES:
            if pattern.match(name):
                name = pattern.sub(replacement, name)
                break
        out[name] = tensor
    return out


def load_gateloop(src: Path) -> ConvertedCheckpoint:
    """Read a gateloop-transformer state dict (folder or file) into our config and names."""
    src = Path(src)
    if not src.exists():
        raise ConversionError(f"source {src} does not exist")
    folder = src if src.is_dir() else src.parent
    kwargs = read_json(folder / "config.json") if (folder / "config.json").is_file() else None
    state = load_weights(src)
    return ConvertedCheckpoint(gateloop_config(state, kwargs), gateloop_state_dict(state), tokenizer=None)


GATELOOP = register_format(
    SourceFormat(
        name="gateloop",
        description="GateLoop from the gateloop-transformer package (a Transformer state dict, optional config.json "
        "of its constructor arguments)",
        load=load_gateloop,
    )
)
