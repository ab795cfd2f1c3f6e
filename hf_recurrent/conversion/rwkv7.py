"""``rwkv7``: BlinkDL's RWKV-7 "Goose" ``.pth`` state dicts (no config file; everything read off tensor shapes).

Source: one ``.pth`` file, or a folder holding exactly one (and optionally the world vocabulary
``rwkv_vocab_v20230424.txt``), loaded with ``torch.load(weights_only=True)``. Names, BlinkDL -> ours (``N`` = block):

================================================================  ==========================================
``emb.weight`` ``[V, C]``                                         ``model.embed_tokens.weight``
``blocks.0.ln0.*``, ``blocks.N.ln1.*``, ``blocks.N.ln2.*``        ``model.layers.0.pre_norm.*``, ``model.layers.N.mixer_norm.*``, ``mlp_norm.*``
``blocks.N.att.{x_r,x_w,x_k,x_v,x_a,x_g,w0,a0,v0,k_k,k_a}``       ``model.layers.N.mixer.*`` (``[1, 1, C]`` -> ``[C]``)
``[1, 1, C]``
``blocks.N.att.{w1,w2,a1,a2,v1,v2,g1,g2}``, ``att.r_k [H, N]``    ``model.layers.N.mixer.*`` (same shapes)
``blocks.N.att.{receptance,key,value,output}.weight``             ``model.layers.N.mixer.*.weight``
``blocks.N.att.ln_x.{weight,bias}``                               ``model.layers.N.mixer.ln_x.*``
``blocks.N.ffn.x_k`` ``[1, 1, C]``, ``ffn.{key,value}.weight``    ``model.layers.N.mlp.x_k`` ``[C]``, ``mlp.*.weight``
``ln_out.*``, ``head.weight``                                     ``model.norm.*``, ``lm_head.weight``
================================================================  ==========================================

Inferred: vocabulary and width from ``emb.weight``; layers from the block indices; heads and head size from
``blocks.0.att.r_k``; LoRA widths from ``w1``, ``a1``, ``g1`` and ``v1`` of the first block that has one (block 0
never has ``v0/v1/v2``: its values are the value residual; such tensors in block 0 are dropped, as BlinkDL's own
code ignores them); ``dim_ffn`` from ``ffn.key.weight``. Tokenizer as for ``rwkv4``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..modeling.rwkv7 import HfrRWKV7Config
from .errors import ConversionError
from .io import load_weights
from .registry import ConvertedCheckpoint, SourceFormat, register_format
from .rwkv4 import byte_or_world_tokenizer, count_blocks, rename, require

_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^emb\.weight$", r"model.embed_tokens.weight"),
        (r"^blocks\.0\.ln0\.(weight|bias)$", r"model.layers.0.pre_norm.\1"),
        (r"^blocks\.(\d+)\.ln1\.(weight|bias)$", r"model.layers.\1.mixer_norm.\2"),
        (r"^blocks\.(\d+)\.ln2\.(weight|bias)$", r"model.layers.\1.mlp_norm.\2"),
        (r"^blocks\.(\d+)\.att\.(.+)$", r"model.layers.\1.mixer.\2"),
        (r"^blocks\.(\d+)\.ffn\.(.+)$", r"model.layers.\1.mlp.\2"),
        (r"^ln_out\.(weight|bias)$", r"model.norm.\1"),
        (r"^head\.weight$", r"lm_head.weight"),
    )
)
_VECTORS = re.compile(r"\.(?:mixer\.(?:x_[rwkvag]|[wav]0|k_k|k_a)|mlp\.x_k)$")


def _lora_rank(state: Mapping[str, torch.Tensor], name: str, num_layers: int) -> int | None:
    for layer in range(num_layers):
        key = f"blocks.{layer}.att.{name}"
        if key in state:
            return require(state, key, 2, f"RWKV-7 LoRA {name} [hidden, rank]").shape[1]
    return None


def rwkv7_config_from_state(state: Mapping[str, torch.Tensor]) -> HfrRWKV7Config:
    """Our config inferred from BlinkDL's RWKV-7 tensor shapes."""
    vocab_size, hidden_size = require(state, "emb.weight", 2, "RWKV embedding [vocab, hidden]").shape
    num_layers = count_blocks(state)
    if "blocks.0.att.r_k" not in state:
        raise ConversionError("missing key 'blocks.0.att.r_k': not an RWKV-7 checkpoint (RWKV-4 has att.time_decay)")
    num_heads, head_size = require(state, "blocks.0.att.r_k", 2, "RWKV-7 r_k [heads, head size]").shape
    if num_heads * head_size != hidden_size:
        raise ConversionError(f"'blocks.0.att.r_k' has shape ({num_heads}, {head_size}): heads x head size must equal "
                              f"the hidden size {hidden_size} of emb.weight")
    ranks = {name: _lora_rank(state, name, num_layers) for name in ("w1", "a1", "v1", "g1")}
    for name in ("w1", "a1", "g1"):
        if ranks[name] is None:
            raise ConversionError(f"missing key 'blocks.0.att.{name}': not an RWKV-7 checkpoint")
    ffn = require(state, "blocks.0.ffn.key.weight", 2, "RWKV-7 channel-mix key [dim_ffn, hidden]").shape[0]
    try:
        return HfrRWKV7Config(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                           head_size=head_size, intermediate_size=ffn, decay_low_rank_dim=ranks["w1"],
                           a_low_rank_dim=ranks["a1"], v_low_rank_dim=ranks["v1"] or 32, gate_low_rank_dim=ranks["g1"])
    except (TypeError, ValueError) as err:
        raise ConversionError(f"these RWKV-7 shapes do not make a valid model: {err}") from None


def rwkv7_state_dict_from_blinkdl(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BlinkDL's RWKV-7 weights under our names; works on meta tensors (nothing is read or copied)."""
    ours: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if re.match(r"^blocks\.0\.att\.v[012]$", key):
            continue  # block 0 makes the value residual; BlinkDL's code ignores these if present
        name = rename(key, _RENAMES)
        if _VECTORS.search(name) and tensor.dim() == 3 and tensor.shape[:2] == (1, 1):
            tensor = tensor.reshape(-1)
        ours[name] = tensor
    return ours


def load_rwkv7(src: Path) -> ConvertedCheckpoint:
    """Read a BlinkDL RWKV-7 ``.pth`` (file or folder) into our config and names."""
    state = load_weights(src)
    config = rwkv7_config_from_state(state)
    return ConvertedCheckpoint(config, rwkv7_state_dict_from_blinkdl(state),
                               tokenizer=byte_or_world_tokenizer(Path(src), config.vocab_size))


RWKV7 = register_format(
    SourceFormat(
        name="rwkv7",
        description="RWKV-7 Goose from BlinkDL's .pth state dict (shapes give the config; world or byte tokenizer)",
        load=load_rwkv7,
    )
)
