"""Mamba-2 checkpoints: ``mamba-ssm`` (state-spaces/mamba2-*), ``hf-mamba2`` (transformers) and Codestral-style.

Three published layouts of the same weights:

* **mamba-ssm** (``MambaLMHeadModel`` with ``ssm_cfg.layer == "Mamba2"``): ``config.json`` with ``d_model``,
  ``n_layer``, ``vocab_size`` (unpadded; the embedding has ``vocab_size`` rounded up to ``pad_vocab_size_multiple``
  rows), ``ssm_cfg`` overriding mamba-ssm's ``Mamba2`` defaults, ``tie_embeddings``; ``pytorch_model.bin``. The
  ``mamba-ssm`` format (owned by the Mamba-1 converter) calls :func:`convert_mamba2_ssm` for these.
* **hf-mamba2** (transformers' ``Mamba2ForCausalLM``): ``config.json`` with ``model_type: "mamba2"``.
* **Codestral** (``mistralai/Mamba-Codestral-7B``): ``params.json`` (``dim``, ``n_layers``, ``n_groups``,
  ``vocab_size``, ``pad_vocab_size_multiple``, ``tie_embeddings``, ...) and ``consolidated.safetensors`` in the
  mamba-ssm names; read by ``hf-mamba2`` when the folder has ``params.json`` and no ``config.json``.

Parameter names, source -> ours (``N`` = layer):

===============================================================  ==========================================
``backbone.embedding.weight`` / ``backbone.embeddings.weight``   ``model.embed_tokens.weight``
``backbone.layers.N.norm.weight``                                ``model.layers.N.mixer_norm.weight``
``backbone.layers.N.mixer.{in_proj,out_proj}.{weight,bias}``     ``model.layers.N.mixer.…`` (same)
``backbone.layers.N.mixer.conv1d.{weight,bias}``                 ``model.layers.N.mixer.conv1d.…`` ``[C, 1, W]``
``backbone.layers.N.mixer.{dt_bias,A_log,D,norm.weight}``        ``model.layers.N.mixer.…`` (same)
``backbone.norm_f.weight``                                       ``model.norm.weight``
``lm_head.weight``                                               same (dropped when tied)
===============================================================  ==========================================

Refused (not representable): hybrid attention layers, an MLP in the blocks (``d_intermediate > 0``), LayerNorm
instead of RMSNorm, ``D_has_hdim``, ``norm_before_gate``, an SSM narrower than ``d_inner`` (``d_ssm``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError

from ..modeling.mamba2 import HfrMamba2Config
from .errors import ConversionError
from .io import load_weights, read_json, require_dir
from .registry import ConvertedCheckpoint, SourceFormat, register_format

SSM_MAMBA2_DEFAULTS: dict[str, Any] = dict(
    d_state=128, d_conv=4, expand=2, headdim=64, d_ssm=None, ngroups=1, D_has_hdim=False, rmsnorm=True,
    norm_before_gate=False, dt_min=0.001, dt_max=0.1, dt_init_floor=1e-4, dt_limit=(0.0, float("inf")), bias=False,
    conv_bias=True,
)
"""mamba-ssm's ``Mamba2`` module defaults (mamba_ssm 2.2, ``mamba_ssm/modules/mamba2.py``) for the fields we map."""

_RENAMES = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^backbone\.embeddings?\.weight$", "model.embed_tokens.weight"),
        (r"^backbone\.layers\.(\d+)\.norm\.weight$", r"model.layers.\1.mixer_norm.weight"),
        (r"^backbone\.layers\.(\d+)\.mixer\.(.+)$", r"model.layers.\1.mixer.\2"),
        (r"^backbone\.norm_f\.weight$", "model.norm.weight"),
    )
)


def _padded(vocab_size: int, multiple: int) -> int:
    return multiple * math.ceil(vocab_size / multiple) if multiple and multiple > 1 else vocab_size


def _config(fields: dict[str, Any], source: str) -> HfrMamba2Config:
    try:
        return HfrMamba2Config(**fields)
    except (TypeError, ValueError, StrictDataclassError) as err:
        raise ConversionError(f"{source} describes a Mamba-2 that hfr_mamba2 cannot represent: {err}") from None


GPT_NEOX_TOKEN_IDS = dict(bos_token_id=0, eos_token_id=0, pad_token_id=1)
"""state-spaces/mamba2-* use EleutherAI's GPT-NeoX tokenizer: ``<|endoftext|>`` = 0, ``<|padding|>`` = 1."""
MISTRAL_TOKEN_IDS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=None)
"""Codestral uses Mistral's v3 tokenizer: ``<s>`` = 1, ``</s>`` = 2, no padding token."""


def mamba2_config_from_ssm(
    cfg: Mapping[str, Any], source: str = "config.json", token_ids: Mapping[str, int | None] = GPT_NEOX_TOKEN_IDS
) -> HfrMamba2Config:
    """Our config for mamba-ssm's ``MambaLMHeadModel`` config with ``ssm_cfg.layer == "Mamba2"``."""
    ssm = dict(cfg.get("ssm_cfg") or {})
    if ssm.get("layer") != "Mamba2":
        raise ConversionError(
            f"{source}: ssm_cfg.layer must be 'Mamba2' for a Mamba-2 checkpoint; got {ssm.get('layer')!r}"
        )
    ssm = {**SSM_MAMBA2_DEFAULTS, **ssm}
    d_model = cfg.get("d_model")
    if not all(isinstance(cfg.get(name), int) for name in ("d_model", "n_layer", "vocab_size")):
        raise ConversionError(f"{source} must give integer d_model, n_layer and vocab_size")
    reasons = []
    if cfg.get("attn_layer_idx"):
        reasons.append(f"hybrid attention layers (attn_layer_idx={cfg['attn_layer_idx']})")
    if cfg.get("d_intermediate", 0):
        reasons.append(f"an MLP in every block (d_intermediate={cfg['d_intermediate']})")
    if not cfg.get("rms_norm", True):
        reasons.append("LayerNorm blocks (rms_norm=false)")
    if ssm["d_ssm"] not in (None, ssm["expand"] * d_model):
        reasons.append(f"d_ssm={ssm['d_ssm']} (a partial SSM with a gated MLP beside it)")
    for flag, ok in (("D_has_hdim", False), ("rmsnorm", True), ("norm_before_gate", False)):
        if bool(ssm[flag]) != ok:
            reasons.append(f"{flag}={ssm[flag]}")
    if reasons:
        raise ConversionError(f"{source}: this Mamba-2 uses features hfr_mamba2 does not have: " + "; ".join(reasons))
    return _config(
        dict(
            vocab_size=_padded(cfg["vocab_size"], cfg.get("pad_vocab_size_multiple", 8)),
            hidden_size=d_model,
            num_hidden_layers=cfg["n_layer"],
            state_size=ssm["d_state"],
            expand=ssm["expand"],
            head_dim=ssm["headdim"],
            n_groups=ssm["ngroups"],
            conv_kernel=ssm["d_conv"],
            use_bias=ssm["bias"],
            use_conv_bias=ssm["conv_bias"],
            time_step_limit=list(ssm["dt_limit"]),
            time_step_min=ssm["dt_min"],
            time_step_max=ssm["dt_max"],
            time_step_floor=ssm["dt_init_floor"],
            residual_in_fp32=cfg.get("residual_in_fp32", True),
            norm_eps=cfg.get("norm_epsilon", 1e-5),
            tie_word_embeddings=cfg.get("tie_embeddings", True),
            **token_ids,
        ),
        source,
    )


def mamba2_config_from_hf(cfg: Mapping[str, Any], source: str = "config.json") -> HfrMamba2Config:
    """Our config for transformers' ``Mamba2Config`` (``model_type: "mamba2"``)."""
    if cfg.get("model_type") != "mamba2":
        raise ConversionError(
            "hf-mamba2 expects transformers' Mamba2 config (model_type 'mamba2'); "
            f"{source} has {cfg.get('model_type')!r}"
        )
    from transformers import Mamba2Config

    try:
        fields = Mamba2Config._decode_special_floats(dict(cfg))  # transformers writes inf as {"__float__": ...}
        hf = Mamba2Config(**{k: v for k, v in fields.items() if k not in ("architectures", "transformers_version")})
    except (TypeError, ValueError, StrictDataclassError) as err:
        raise ConversionError(f"{source}: not a valid transformers Mamba2Config: {err}") from None
    if hf.hidden_act not in ("silu", "swish"):
        raise ConversionError(f"{source}: hidden_act={hf.hidden_act!r}; Mamba-2's convolution activation must be silu")
    return _config(
        dict(
            vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, num_hidden_layers=hf.num_hidden_layers,
            state_size=hf.state_size, expand=hf.expand, head_dim=hf.head_dim, num_heads=hf.num_heads,
            n_groups=hf.n_groups, conv_kernel=hf.conv_kernel, use_bias=hf.use_bias, use_conv_bias=hf.use_conv_bias,
            time_step_limit=list(hf.time_step_limit), time_step_min=hf.time_step_min, time_step_max=hf.time_step_max,
            time_step_floor=hf.time_step_floor, residual_in_fp32=hf.residual_in_fp32, norm_eps=hf.layer_norm_epsilon,
            tie_word_embeddings=hf.tie_word_embeddings, initializer_range=hf.initializer_range,
            bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id, pad_token_id=hf.pad_token_id,
        ),
        source,
    )


def mamba2_config_from_params(params: Mapping[str, Any], source: str = "params.json") -> HfrMamba2Config:
    """Our config for a Codestral-style ``params.json`` (mistral-inference's ``MambaArgs``)."""
    missing = [k for k in ("dim", "n_layers", "vocab_size") if k not in params]
    if missing:
        raise ConversionError(f"{source} lacks {missing}: not a Mamba-2 params.json")
    ssm = {"layer": "Mamba2", "ngroups": params.get("n_groups", 1)}
    names = (("d_state", "state_size"), ("headdim", "head_dim"), ("expand", "expand"), ("d_conv", "conv_kernel"))
    for ours, theirs in names:
        if theirs in params:
            ssm[ours] = params[theirs]
    return mamba2_config_from_ssm(
        dict(
            d_model=params["dim"], n_layer=params["n_layers"], vocab_size=params["vocab_size"], ssm_cfg=ssm,
            rms_norm=params.get("rms_norm", True), residual_in_fp32=params.get("residual_in_fp32", True),
            pad_vocab_size_multiple=params.get("pad_vocab_size_multiple", 1),
            tie_embeddings=params.get("tie_embeddings", False), norm_epsilon=params.get("norm_eps", 1e-5),
        ),
        source,
        MISTRAL_TOKEN_IDS,
    )


def mamba2_state_dict(state: Mapping[str, torch.Tensor], config: HfrMamba2Config) -> dict[str, torch.Tensor]:
    """Source weights (mamba-ssm or transformers names) under ours; works on meta tensors.

    Unknown names pass through unchanged so that the shared key check reports them as unexpected. With tied
    embeddings a stored ``lm_head.weight`` is dropped (it is the embedding).
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        for pattern, replacement in _RENAMES:
            if pattern.match(name):
                name = pattern.sub(replacement, name)
                break
        out[name] = tensor
    if config.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    return out


def convert_mamba2_ssm(src: Path) -> ConvertedCheckpoint:
    """Read a state-spaces ``mamba2-*`` folder (mamba-ssm layout) into our config and names."""
    src = require_dir(src)
    config = mamba2_config_from_ssm(read_json(src / "config.json"), f"{src / 'config.json'}")
    return ConvertedCheckpoint(config, mamba2_state_dict(load_weights(src), config), tokenizer=src)


def load_hf_mamba2(src: Path) -> ConvertedCheckpoint:
    """Read a transformers ``Mamba2ForCausalLM`` folder, or a Codestral ``params.json`` folder."""
    src = require_dir(src)
    if not (src / "config.json").is_file() and (src / "params.json").is_file():
        config = mamba2_config_from_params(read_json(src / "params.json"), f"{src / 'params.json'}")
        weights = src / "consolidated.safetensors"
        state = load_weights(weights if weights.is_file() else src)
    else:
        config = mamba2_config_from_hf(read_json(src / "config.json"), f"{src / 'config.json'}")
        state = load_weights(src)
    return ConvertedCheckpoint(config, mamba2_state_dict(state, config), tokenizer=src)


HF_MAMBA2 = register_format(
    SourceFormat(
        name="hf-mamba2",
        description="Mamba-2 in transformers' Mamba2ForCausalLM layout (config.json model_type 'mamba2'), "
        "or Codestral-style params.json + consolidated.safetensors",
        load=load_hf_mamba2,
    )
)
