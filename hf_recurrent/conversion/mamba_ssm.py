"""``mamba-ssm``: Mamba checkpoints as state-spaces publishes them (``state-spaces/mamba-130m`` ... ``-2.8b``).

Source: a folder with mamba-ssm's ``config.json`` (``MambaConfig`` of ``mamba_ssm.models.config_mamba``:
``d_model``, ``n_layer``, ``vocab_size``, ``ssm_cfg``, ``rms_norm``, ``residual_in_fp32``, ``fused_add_norm``,
``pad_vocab_size_multiple``, ``tie_embeddings``, ...) and ``pytorch_model.bin`` (read with ``weights_only=True``).
A config whose ``ssm_cfg.layer`` is ``"Mamba2"`` is handed to ``convert_mamba2_ssm`` of
:mod:`hf_recurrent.conversion.mamba2`. Parameter names, mamba-ssm -> ours (``N`` = layer):

=================================================  =================================================
``backbone.embedding.weight``                      ``model.embed_tokens.weight``
``backbone.layers.N.norm.weight``                  ``model.layers.N.mixer_norm.weight``
``backbone.layers.N.mixer.in_proj.weight``         ``model.layers.N.mixer.in_proj.weight`` (``[x; z]``)
``backbone.layers.N.mixer.conv1d.{weight,bias}``   ``model.layers.N.mixer.conv1d.{weight,bias}``
``backbone.layers.N.mixer.{x,dt,out}_proj.*``      ``model.layers.N.mixer.{x,dt,out}_proj.*``
``backbone.layers.N.mixer.{A_log,D}``              ``model.layers.N.mixer.{A_log,D}`` (``A_log`` kept float32)
``backbone.norm_f.weight``                         ``model.norm.weight``
``lm_head.weight``                                 same; dropped when tied (it is the embedding)
=================================================  =================================================

``ssm_cfg`` fields map to ours (``d_state`` -> ``state_size``, ``d_conv`` -> ``conv_kernel``, ``expand``,
``dt_rank`` -> ``time_step_rank``, ``conv_bias`` -> ``use_conv_bias``, ``bias`` -> ``use_bias``, ``dt_min/max``,
``dt_init_floor``, ``dt_scale``), mamba-ssm's defaults filling absent ones; the vocabulary is padded to
``pad_vocab_size_multiple`` as mamba-ssm pads it. Refused: LayerNorm blocks (``rms_norm: false``), MLPs
(``d_intermediate > 0``), attention layers (``attn_layer_idx``), other layer kinds. mamba-ssm's RMSNorm eps is 1e-5.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..modeling.mamba import HfrMambaConfig
from .errors import ConversionError
from .io import load_weights, read_config, require_dir
from .registry import ConvertedCheckpoint, SourceFormat, register_format

SSM_CFG_FIELDS: dict[str, tuple[str, Any]] = {
    "d_state": ("state_size", 16),
    "d_conv": ("conv_kernel", 4),
    "expand": ("expand", 2),
    "dt_rank": ("time_step_rank", "auto"),
    "dt_min": ("time_step_min", 0.001),
    "dt_max": ("time_step_max", 0.1),
    "dt_init_floor": ("time_step_floor", 1e-4),
    "dt_scale": ("time_step_scale", 1.0),
    "conv_bias": ("use_conv_bias", True),
    "bias": ("use_bias", False),
}
"""mamba-ssm ``Mamba(...)`` keyword -> (our config field, mamba-ssm's default)."""

_IGNORED_SSM_CFG = {"layer", "dt_init", "use_fast_path"}

_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^backbone\.embeddings?\.weight$", r"model.embed_tokens.weight"),
        (r"^backbone\.layers\.(\d+)\.norm\.weight$", r"model.layers.\1.mixer_norm.weight"),
        (r"^backbone\.layers\.(\d+)\.mixer\.((?:in|x|dt|out)_proj|conv1d)\.(weight|bias)$",
         r"model.layers.\1.mixer.\2.\3"),
        (r"^backbone\.layers\.(\d+)\.mixer\.(A_log|D)$", r"model.layers.\1.mixer.\2"),
        (r"^backbone\.norm_f\.weight$", r"model.norm.weight"),
        (r"^lm_head\.weight$", r"lm_head.weight"),
    )
)


def mamba_state_dict(source: Mapping[str, torch.Tensor], config: HfrMambaConfig) -> dict[str, torch.Tensor]:
    """Mamba weights named as mamba-ssm or transformers name them (``backbone.*``), under our names.

    Works on meta tensors. Unknown names pass through unchanged, so that the shared check reports them as
    unexpected; with tied embeddings a stored ``lm_head.weight`` (a copy of the embedding) is dropped.
    """
    out = {}
    for name, tensor in source.items():
        for pattern, replacement in _RENAMES:
            if pattern.match(name):
                name = pattern.sub(replacement, name)
                break
        out[name] = tensor
    if config.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    return out


def mamba_config_from_ssm(cfg: Mapping[str, Any]) -> HfrMambaConfig:
    """Our :class:`HfrMambaConfig` for mamba-ssm's ``config.json`` contents (a Mamba-1 model)."""
    missing = [key for key in ("d_model", "n_layer", "vocab_size") if key not in cfg]
    if missing:
        raise ConversionError(f"config.json is not a mamba-ssm MambaConfig: it lacks {missing}")
    ssm_cfg = dict(cfg.get("ssm_cfg") or {})
    reasons = []
    if not cfg.get("rms_norm", True):
        reasons.append("LayerNorm blocks (rms_norm: false)")
    if cfg.get("d_intermediate", 0):
        reasons.append(f"MLP blocks (d_intermediate={cfg['d_intermediate']})")
    if cfg.get("attn_layer_idx"):
        reasons.append(f"attention layers (attn_layer_idx={cfg['attn_layer_idx']})")
    if ssm_cfg.get("layer", "Mamba1") != "Mamba1":
        reasons.append(f"ssm_cfg.layer={ssm_cfg['layer']!r}")
    unknown = sorted(set(ssm_cfg) - set(SSM_CFG_FIELDS) - _IGNORED_SSM_CFG)
    if unknown:
        reasons.append(f"ssm_cfg fields {unknown}")
    if reasons:
        raise ConversionError("this mamba-ssm checkpoint uses features hfr_mamba does not have: " + "; ".join(reasons))
    fields = {ours: ssm_cfg.get(theirs, default) for theirs, (ours, default) in SSM_CFG_FIELDS.items()}
    try:
        return HfrMambaConfig(
            hidden_size=cfg["d_model"],
            num_hidden_layers=cfg["n_layer"],
            vocab_size=cfg["vocab_size"],
            pad_vocab_size_multiple=cfg.get("pad_vocab_size_multiple", 8),
            residual_in_fp32=cfg.get("residual_in_fp32", True),
            tie_word_embeddings=cfg.get("tie_embeddings", True),
            norm_eps=1e-5,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            **fields,
        )
    except (TypeError, ValueError) as err:
        raise ConversionError(f"config.json describes a Mamba that hfr_mamba cannot represent: {err}") from None


def _convert_mamba2(src: Path) -> ConvertedCheckpoint:
    try:
        module = importlib.import_module(f"{__package__}.mamba2")
        convert_mamba2_ssm = module.convert_mamba2_ssm
    except (ImportError, AttributeError):
        raise ConversionError(
            f"{src} holds a Mamba-2 model (ssm_cfg.layer 'Mamba2') but this installation has no Mamba-2 converter "
            "(hf_recurrent.conversion.mamba2.convert_mamba2_ssm)"
        ) from None
    return convert_mamba2_ssm(src)


def load_mamba_ssm(src: Path) -> ConvertedCheckpoint:
    """Read a state-spaces Mamba checkpoint folder (Mamba-2 ones are dispatched to the Mamba-2 converter)."""
    src = require_dir(src)
    cfg = read_config(src)
    if (cfg.get("ssm_cfg") or {}).get("layer") == "Mamba2":
        return _convert_mamba2(src)
    config = mamba_config_from_ssm(cfg)
    return ConvertedCheckpoint(config, mamba_state_dict(load_weights(src), config), tokenizer=src)


MAMBA_SSM = register_format(
    SourceFormat(
        name="mamba-ssm",
        description="Mamba (and Mamba-2) from mamba-ssm / state-spaces/mamba-* (config.json with d_model, ssm_cfg)",
        load=load_mamba_ssm,
    )
)
