"""``hf-mamba``: Mamba checkpoints in transformers' ``MambaForCausalLM`` layout (``state-spaces/mamba-*-hf``), and
``FalconMambaForCausalLM`` (``tiiuae/falcon-mamba-*``).

Source: a folder with transformers' ``config.json`` (``model_type`` ``"mamba"`` or ``"falcon_mamba"``) and weights
(safetensors or ``pytorch_model.bin``). Names are mamba-ssm's (see :mod:`.mamba_ssm`) with
``backbone.embeddings.weight`` (older files: ``backbone.embedding.weight``). Config fields, transformers -> ours:
``hidden_size``, ``num_hidden_layers``, ``vocab_size`` (already padded in these files), ``state_size``, ``expand``,
``conv_kernel``, ``use_bias``, ``use_conv_bias``, ``time_step_rank``, ``time_step_{min,max,floor,scale}``,
``residual_in_fp32``, ``tie_word_embeddings``, token ids; ``layer_norm_epsilon`` -> ``norm_eps``.

falcon-mamba differs in two ways: weightless RMS norms on ``dt``, ``B`` and ``C`` inside the mixer (our
``use_bcdt_rms``, eps ``mixer_rms_eps``), and untied embeddings. Its ``{b,c,dt}_layernorm.weight`` buffers, when a
file holds them, must be all ones (they are unused placeholders) and are dropped. Refused: ``hidden_act`` other
than SiLU.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..modeling.mamba import HfrMambaConfig
from .errors import ConversionError
from .io import load_weights, read_config, require_dir
from .mamba_ssm import mamba_state_dict
from .registry import ConvertedCheckpoint, SourceFormat, register_format

HF_MAMBA_DEFAULTS: dict[str, Any] = dict(
    vocab_size=50280,
    hidden_size=768,
    state_size=16,
    num_hidden_layers=32,
    expand=2,
    conv_kernel=4,
    use_bias=False,
    use_conv_bias=True,
    time_step_rank="auto",
    time_step_scale=1.0,
    time_step_min=0.001,
    time_step_max=0.1,
    time_step_floor=1e-4,
    residual_in_fp32=True,
    tie_word_embeddings=True,
    pad_token_id=0,
    bos_token_id=0,
    eos_token_id=0,
)
"""transformers 5's ``MambaConfig`` defaults for the fields we map (``FalconMambaConfig`` shares them)."""

_PLACEHOLDER_NORM = re.compile(r"^backbone\.layers\.\d+\.mixer\.(?:b|c|dt)_layernorm\.weight$")


def mamba_config_from_hf(cfg: Mapping[str, Any]) -> HfrMambaConfig:
    """Our :class:`HfrMambaConfig` for transformers' Mamba / FalconMamba ``config.json`` contents."""
    model_type = cfg.get("model_type")
    if model_type not in ("mamba", "falcon_mamba"):
        raise ConversionError(
            f"hf-mamba expects transformers' Mamba config (model_type 'mamba' or 'falcon_mamba'); "
            f"config.json has {model_type!r}"
        )
    act = cfg.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise ConversionError(f"this Mamba uses hidden_act={act!r}; hfr_mamba has SiLU only")
    fields = {name: cfg.get(name, default) for name, default in HF_MAMBA_DEFAULTS.items()}
    fields["norm_eps"] = cfg.get("layer_norm_epsilon", 1e-5)
    if model_type == "falcon_mamba":
        fields.update(use_bcdt_rms=True, mixer_rms_eps=cfg.get("mixer_rms_eps", 1e-6))
    try:
        return HfrMambaConfig(**fields)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"config.json describes a Mamba that hfr_mamba cannot represent: {err}") from None


def hf_mamba_state_dict(source: Mapping[str, torch.Tensor], config: HfrMambaConfig) -> dict[str, torch.Tensor]:
    """transformers' Mamba weights under our names (meta tensors work); falcon placeholders checked and dropped."""
    kept = {}
    for name, tensor in source.items():
        if _PLACEHOLDER_NORM.match(name):
            if tensor.device.type != "meta" and not torch.all(tensor == 1):
                raise ConversionError(f"{name} is not all ones: hfr_mamba's dt/B/C norms are weightless")
            continue
        kept[name] = tensor
    return mamba_state_dict(kept, config)


def load_hf_mamba(src: Path) -> ConvertedCheckpoint:
    """Read a transformers Mamba / FalconMamba checkpoint folder into our config and names."""
    src = require_dir(src)
    config = mamba_config_from_hf(read_config(src))
    return ConvertedCheckpoint(config, hf_mamba_state_dict(load_weights(src), config), tokenizer=src)


HF_MAMBA = register_format(
    SourceFormat(
        name="hf-mamba",
        description="Mamba / FalconMamba in transformers' layout (state-spaces/mamba-*-hf, tiiuae/falcon-mamba-*)",
        load=load_hf_mamba,
    )
)
