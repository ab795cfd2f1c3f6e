"""``fla-retnet``: RetNet checkpoints in flash-linear-attention's layout (fla-hub/retnet-1.3B-100B, -2.7B-100B).

Source: a folder with fla's ``config.json`` (``model_type: "retnet"``), weights (safetensors, sharded or not, or
``pytorch_model.bin``) and usually tokenizer files. The parameter names are those of fla's GLA minus the decay
projection (``gk_proj``): ``model.embeddings`` (or 2024's ``model.embed_tokens``), ``model.layers.N.attn_norm``,
``model.layers.N.attn.{q,k,v,g,o}_proj``, ``model.layers.N.attn.g_norm_swish_gate`` (or ``g_norm``), the MLP
(separate or 2024's fused ``gate_proj``), ``model.norm``, ``lm_head``; the renaming is :mod:`.fla_gla`'s.
RetNet's decays ``gamma_h = 1 - 2^(-5-h)`` and the rotary frequencies (base 10000) are fixed, not stored.

Config fields map one to one (fla's ``RetNetConfig`` defaults fill absent ones; ``rms_norm_eps`` of old configs is
used when ``norm_eps`` is absent). ``use_short_conv`` is ignored: fla's RetNet model never passes it to its
retention layer. Refused: hybrid attention layers (``attn``), ``attnres_block_size``, an output gate other than
swish, unknown feature maps.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub.errors import StrictDataclassError

from ..modeling.common.layers import FEATURE_MAPS
from ..modeling.retnet import HfrRetNetConfig
from .errors import ConversionError
from .fla_gla import gla_state_dict_from_fla
from .io import load_weights, read_config, require_dir
from .registry import ConvertedCheckpoint, SourceFormat, register_format

FLA_RETNET_DEFAULTS: dict[str, Any] = dict(
    vocab_size=32000, hidden_size=2048, expand_k=1.0, expand_v=2.0, hidden_ratio=2, intermediate_size=None,
    num_hidden_layers=24, num_heads=8, num_kv_heads=None, feature_map=None, hidden_act="swish", use_output_gate=True,
    elementwise_affine=True, norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.02, use_cache=True,
    pad_token_id=None, bos_token_id=1, eos_token_id=2,
)
"""The defaults of fla's ``RetNetConfig`` (flash-linear-attention 0.6) for the fields we map."""


def retnet_config_from_fla(fla_config: Mapping[str, Any]) -> HfrRetNetConfig:
    """Our :class:`HfrRetNetConfig` for fla's RetNet ``config.json`` contents."""
    if fla_config.get("model_type") != "retnet":
        raise ConversionError(
            "fla-retnet expects flash-linear-attention's RetNet config (model_type 'retnet'); "
            f"config.json has {fla_config.get('model_type')!r}"
        )
    reasons = []
    if fla_config.get("attn"):
        reasons.append(f"hybrid softmax-attention layers (attn={fla_config['attn']!r})")
    if fla_config.get("attnres_block_size") is not None:
        reasons.append(f"attention residuals (attnres_block_size={fla_config['attnres_block_size']!r})")
    if fla_config.get("hidden_act", "swish") not in ("swish", "silu"):
        reasons.append(f"hidden_act={fla_config['hidden_act']!r} (the output gate and the MLP must be swish)")
    feature_map = fla_config.get("feature_map")
    if feature_map is not None and feature_map not in FEATURE_MAPS:
        reasons.append(f"feature_map={feature_map!r} (supported: {', '.join(sorted(FEATURE_MAPS))})")
    if reasons:
        raise ConversionError(
            "this fla RetNet checkpoint uses features hfr_retnet does not have: " + "; ".join(reasons)
        )
    fields = {name: fla_config.get(name, default) for name, default in FLA_RETNET_DEFAULTS.items()}
    if "norm_eps" not in fla_config and "rms_norm_eps" in fla_config:
        fields["norm_eps"] = fla_config["rms_norm_eps"]
    try:
        return HfrRetNetConfig(**fields)
    except (TypeError, ValueError, StrictDataclassError) as err:
        raise ConversionError(f"config.json describes a RetNet that hfr_retnet cannot represent: {err}") from None


def load_fla_retnet(src: Path) -> ConvertedCheckpoint:
    """Read an fla RetNet checkpoint folder into our config and names."""
    src = require_dir(src)
    config = retnet_config_from_fla(read_config(src))
    return ConvertedCheckpoint(config, gla_state_dict_from_fla(load_weights(src), config), tokenizer=src)


FLA_RETNET = register_format(
    SourceFormat(
        name="fla-retnet",
        description="RetNet from flash-linear-attention / fla-hub (config.json model_type 'retnet')",
        load=load_fla_retnet,
    )
)
