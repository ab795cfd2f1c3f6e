"""``fla-gla``: Gated Linear Attention checkpoints in flash-linear-attention's layout (as published on fla-hub).

Source: a folder with fla's ``config.json`` (``model_type: "gla"``), weights (safetensors, sharded or not, or
``pytorch_model.bin``) and usually tokenizer files. Parameter names, fla -> ours (``N`` = layer):

====================================================  ==================================================
``model.embeddings.weight`` (``model.embed_tokens``    ``model.embed_tokens.weight``
in early fla releases)
``model.layers.N.attn_norm.weight``                   ``model.layers.N.mixer_norm.weight``
``model.layers.N.attn.{q,k,v,g,o}_proj.weight``        ``model.layers.N.mixer.{q,k,v,g,o}_proj.weight``
``model.layers.N.attn.gk_proj.{0,1}.*``               ``model.layers.N.mixer.gk_proj.{0,1}.*``
``model.layers.N.attn.{q,k,v}_conv1d.{weight,bias}``  ``model.layers.N.mixer.{q,k,v}_conv1d.{weight,bias}``
``model.layers.N.attn.g_norm_swish_gate.weight`` or   ``model.layers.N.mixer.g_norm.weight``
``model.layers.N.attn.g_norm.weight``
``model.layers.N.mlp_norm.weight``                    ``model.layers.N.mlp_norm.weight``
``model.layers.N.mlp.{gate,up,down}_proj.weight``     same
``model.norm.weight``, ``lm_head.weight``             same (no ``lm_head`` needed when embeddings are tied)
====================================================  ==================================================

Two MLP layouts: separate ``gate_proj`` / ``up_proj`` (current fla), and the older fused
``mlp.gate_proj.weight`` of shape ``[2 * intermediate, hidden]`` with no ``up_proj``. fla's old ``GLAMLP`` computed
``gate, y = gate_proj(x).chunk(2, -1)`` and ``down(swiglu(gate, y)) = down(silu(gate) * y)``: the FIRST half of
the rows is the gate, the second half the up projection (read from fla's 2024 ``fla/models/gla/modeling_gla.py``).

Config fields map one to one (fla's defaults fill absent ones; fla-only fields such as ``attn_mode``, ``fuse_*``
or ``max_position_embeddings`` are ignored). Refused: hybrid attention layers (``attn``), ``attnres_block_size``,
``use_gv=True``, ``use_gk=False``, an output gate other than swish (``hidden_act``), unknown feature maps, and
the pre-fla ``d_model`` / ``n_layer`` configs of the original GLA repository.
Old configs carry ``rms_norm_eps`` instead of ``norm_eps``: it is used when ``norm_eps`` is absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError

from ..modeling.common.layers import FEATURE_MAPS
from ..modeling.gla import HfrGLAConfig
from .checks import format_shape
from .errors import ConversionError
from .io import load_weights, read_config, require_dir
from .registry import ConvertedCheckpoint, SourceFormat, register_format

FLA_GLA_DEFAULTS: dict[str, Any] = dict(
    vocab_size=32000,
    hidden_size=2048,
    expand_k=0.5,
    expand_v=1.0,
    hidden_ratio=4,
    intermediate_size=None,
    num_hidden_layers=24,
    num_heads=4,
    num_kv_heads=None,
    feature_map=None,
    use_short_conv=False,
    conv_size=4,
    use_output_gate=True,
    clamp_min=None,
    hidden_act="swish",
    elementwise_affine=True,
    norm_eps=1e-6,
    tie_word_embeddings=False,
    initializer_range=0.02,
    use_cache=True,
    pad_token_id=None,
    bos_token_id=1,
    eos_token_id=2,
)
"""The defaults of fla's ``GLAConfig`` (flash-linear-attention 0.6) for the fields we map."""

_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^model\.(?:embeddings|embed_tokens)\.weight$", r"model.embed_tokens.weight"),
        (r"^model\.layers\.(\d+)\.attn_norm\.weight$", r"model.layers.\1.mixer_norm.weight"),
        (r"^model\.layers\.(\d+)\.attn\.g_norm(?:_swish_gate)?\.weight$", r"model.layers.\1.mixer.g_norm.weight"),
        (r"^model\.layers\.(\d+)\.attn\.([qkvgo]_proj\.weight)$", r"model.layers.\1.mixer.\2"),
        (r"^model\.layers\.(\d+)\.attn\.(gk_proj\.[01]\.(?:weight|bias))$", r"model.layers.\1.mixer.\2"),
        (r"^model\.layers\.(\d+)\.attn\.([qkv]_conv1d\.(?:weight|bias))$", r"model.layers.\1.mixer.\2"),
        (r"^model\.layers\.(\d+)\.(mlp_norm\.weight|mlp\.(?:gate|up|down)_proj\.weight)$", r"model.layers.\1.\2"),
        (r"^(model\.norm\.weight|lm_head\.weight)$", r"\1"),
    )
)


def gla_config_from_fla(fla_config: Mapping[str, Any], weight_names: Iterable[str] = ()) -> HfrGLAConfig:
    """Our :class:`HfrGLAConfig` for fla's GLA ``config.json`` contents.

    ``weight_names`` (fla's parameter names) decides ``conv_bias``: fla's GLA model never builds convolution
    biases, but its layer can, so a checkpoint that has them keeps them.
    """
    model_type = fla_config.get("model_type")
    if model_type != "gla":
        raise ConversionError(
            f"fla-gla expects flash-linear-attention's GLA config (model_type 'gla'); config.json has {model_type!r}"
        )
    _refuse_unrepresentable(fla_config)
    fields = {name: fla_config.get(name, default) for name, default in FLA_GLA_DEFAULTS.items()}
    if "norm_eps" not in fla_config and "rms_norm_eps" in fla_config:
        fields["norm_eps"] = fla_config["rms_norm_eps"]
    fields["conv_bias"] = any(re.search(r"\.attn\.[qkv]_conv1d\.bias$", name) for name in weight_names)
    try:
        return HfrGLAConfig(**fields)
    except (TypeError, ValueError, StrictDataclassError) as err:
        raise ConversionError(f"config.json describes a GLA that hfr_gla cannot represent: {err}") from None


def _refuse_unrepresentable(cfg: Mapping[str, Any]) -> None:
    reasons = []
    if "d_model" in cfg:
        reasons.append("a config of the original gated_linear_attention repository (d_model, n_layer), not of fla")
    if cfg.get("attn"):
        reasons.append(f"hybrid softmax-attention layers (attn={cfg['attn']!r})")
    if cfg.get("attnres_block_size") is not None:
        reasons.append(f"attention residuals (attnres_block_size={cfg['attnres_block_size']!r})")
    if cfg.get("use_gv", False):
        reasons.append("value gates (use_gv=True)")
    if not cfg.get("use_gk", True):
        reasons.append("no key gates (use_gk=False)")
    act = cfg.get("hidden_act", FLA_GLA_DEFAULTS["hidden_act"])
    if act not in ("swish", "silu"):
        reasons.append(f"hidden_act={act!r} (the output gate and the MLP must be swish)")
    feature_map = cfg.get("feature_map")
    if feature_map is not None and feature_map not in FEATURE_MAPS:
        reasons.append(f"feature_map={feature_map!r} (supported: {', '.join(sorted(FEATURE_MAPS))})")
    if reasons:
        raise ConversionError("this fla GLA checkpoint uses features hfr_gla does not have: " + "; ".join(reasons))


def gla_state_dict_from_fla(fla_state: Mapping[str, torch.Tensor], config: HfrGLAConfig) -> dict[str, torch.Tensor]:
    """fla's GLA weights under our names; works on meta tensors too.

    Unknown names pass through unchanged, so that the shared key check reports them as unexpected. The fused
    MLP layout is split into ``gate_proj`` (first half of the rows) and ``up_proj``. With tied embeddings an
    ``lm_head.weight`` in the file is dropped: fla ties it to the embedding on load, and so do we.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in fla_state.items():
        ours = _rename(name)
        if ours in out:
            raise ConversionError(f"two tensors of the checkpoint map to {ours!r} (one of them is {name!r})")
        out[ours] = tensor
    if config.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}.mlp."
        if prefix + "gate_proj.weight" in out and prefix + "up_proj.weight" not in out:
            gate, up = _split_fused_mlp(out.pop(prefix + "gate_proj.weight"), prefix, config)
            out[prefix + "gate_proj.weight"], out[prefix + "up_proj.weight"] = gate, up
    return out


def _rename(name: str) -> str:
    for pattern, replacement in _RENAMES:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return name


def _split_fused_mlp(fused: torch.Tensor, prefix: str, config: HfrGLAConfig) -> tuple[torch.Tensor, torch.Tensor]:
    expected = (2 * config.mlp_size, config.hidden_size)
    if tuple(fused.shape) != expected:
        raise ConversionError(
            f"shape mismatch for fused {prefix}gate_proj.weight (gate and up stacked, no up_proj in the file): "
            f"expected {format_shape(expected)}, found {format_shape(fused.shape)}"
        )
    gate, up = fused.chunk(2, dim=0)
    return gate.clone(), up.clone()  # separate storage: safetensors refuses tensors that share memory


def load_fla_gla(src: Path) -> ConvertedCheckpoint:
    """Read an fla GLA checkpoint folder into our config and names."""
    src = require_dir(src)
    fla_config = read_config(src)
    fla_state = load_weights(src)
    config = gla_config_from_fla(fla_config, fla_state)
    return ConvertedCheckpoint(config, gla_state_dict_from_fla(fla_state, config), tokenizer=src)


FLA_GLA = register_format(
    SourceFormat(
        name="fla-gla",
        description="Gated Linear Attention from flash-linear-attention / fla-hub (config.json model_type 'gla')",
        load=load_fla_gla,
    )
)
