"""``hf-rwkv``: RWKV-4 checkpoints in transformers' ``RwkvForCausalLM`` layout (``model_type: "rwkv"``).

Source: a folder with transformers' ``config.json``, weights (safetensors or ``pytorch_model.bin``, sharded or
not) and usually tokenizer files. Names, transformers -> ours (``N`` = block):

==============================================================  ==============================================
``rwkv.embeddings.weight``                                      ``model.embed_tokens.weight``
``rwkv.blocks.0.pre_ln.*``                                      ``model.layers.0.pre_norm.*``
``rwkv.blocks.N.ln1.*`` / ``ln2.*``                             ``model.layers.N.mixer_norm.*`` / ``mlp_norm.*``
``rwkv.blocks.N.attention.{time_decay,time_first}``             ``model.layers.N.mixer.*``
``rwkv.blocks.N.attention.time_mix_*`` ``[1, 1, C]``            ``model.layers.N.mixer.time_mix_*`` ``[C]``
``rwkv.blocks.N.attention.{key,value,receptance,output}.weight``  ``model.layers.N.mixer.*.weight``
``rwkv.blocks.N.feed_forward.*``                                ``model.layers.N.mlp.*`` (``time_mix_*`` squeezed)
``rwkv.ln_out.*``, ``head.weight``                              ``model.norm.*``, ``lm_head.weight``
==============================================================  ==============================================

Config: ``hidden_size``, ``num_hidden_layers``, ``attention_hidden_size``, ``intermediate_size`` (transformers'
default ``4 * hidden_size`` when null), ``layer_norm_epsilon``, ``vocab_size``, token ids, ``tie_word_embeddings``.
``rescale_every`` is an inference-time rescaling in transformers that changes nothing mathematically; it is dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..modeling.rwkv4 import HfrRWKV4Config
from .errors import ConversionError
from .io import load_weights, read_config, require_dir
from .registry import ConvertedCheckpoint, SourceFormat, register_format
from .rwkv4 import rename, squeeze_mixes

_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^rwkv\.embeddings\.weight$", r"model.embed_tokens.weight"),
        (r"^rwkv\.blocks\.0\.pre_ln\.(weight|bias)$", r"model.layers.0.pre_norm.\1"),
        (r"^rwkv\.blocks\.(\d+)\.ln1\.(weight|bias)$", r"model.layers.\1.mixer_norm.\2"),
        (r"^rwkv\.blocks\.(\d+)\.ln2\.(weight|bias)$", r"model.layers.\1.mlp_norm.\2"),
        (r"^rwkv\.blocks\.(\d+)\.attention\.(.+)$", r"model.layers.\1.mixer.\2"),
        (r"^rwkv\.blocks\.(\d+)\.feed_forward\.(.+)$", r"model.layers.\1.mlp.\2"),
        (r"^rwkv\.ln_out\.(weight|bias)$", r"model.norm.\1"),
        (r"^head\.weight$", r"lm_head.weight"),
    )
)


def rwkv4_config_from_hf(cfg: dict) -> HfrRWKV4Config:
    """Our config for transformers' ``RwkvConfig`` contents."""
    if cfg.get("model_type") != "rwkv":
        raise ConversionError(
            f"hf-rwkv expects transformers' RWKV config (model_type 'rwkv'); got {cfg.get('model_type')!r}"
        )
    try:
        hidden = cfg["hidden_size"]
        return HfrRWKV4Config(
            vocab_size=cfg["vocab_size"],
            hidden_size=hidden,
            num_hidden_layers=cfg["num_hidden_layers"],
            attention_hidden_size=cfg.get("attention_hidden_size") or hidden,
            intermediate_size=cfg.get("intermediate_size") or 4 * hidden,
            norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
            bos_token_id=cfg.get("bos_token_id", 0),
            eos_token_id=cfg.get("eos_token_id", 0),
            pad_token_id=cfg.get("pad_token_id"),
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        )
    except KeyError as err:
        raise ConversionError(f"config.json lacks {err.args[0]!r}, which an RWKV config must have") from None
    except (TypeError, ValueError) as err:
        raise ConversionError(f"config.json describes an RWKV model hfr_rwkv4 cannot represent: {err}") from None


def load_hf_rwkv(src: Path) -> ConvertedCheckpoint:
    """Read a transformers ``RwkvForCausalLM`` folder into our config and names."""
    src = require_dir(src)
    config = rwkv4_config_from_hf(read_config(src))
    state = {rename(key, _RENAMES): tensor for key, tensor in load_weights(src).items()}
    squeeze_mixes(state, config.hidden_size)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return ConvertedCheckpoint(config, state, tokenizer=src)


HF_RWKV = register_format(
    SourceFormat(
        name="hf-rwkv",
        description="RWKV-4 in transformers' RwkvForCausalLM layout (config.json model_type 'rwkv')",
        load=load_hf_rwkv,
    )
)
