"""``rwkv4``: BlinkDL's RWKV-4 ``.pth`` state dicts (no config file; everything is read off the tensor shapes).

Source: one ``.pth`` file, or a folder holding exactly one (and optionally the world vocabulary
``rwkv_vocab_v20230424.txt``). Loaded with ``torch.load(weights_only=True)``. Names, BlinkDL -> ours (``N`` = block):

=============================================================  ==============================================
``emb.weight`` ``[V, C]``                                      ``model.embed_tokens.weight``
``blocks.0.ln0.{weight,bias}``                                 ``model.layers.0.pre_norm.*``
``blocks.N.ln1.*`` / ``blocks.N.ln2.*``                        ``model.layers.N.mixer_norm.*`` / ``mlp_norm.*``
``blocks.N.att.time_decay`` / ``time_first`` ``[A]``           ``model.layers.N.mixer.time_decay`` / ``time_first``
``blocks.N.att.time_mix_{k,v,r}`` ``[1, 1, C]``                ``model.layers.N.mixer.time_mix_{key,value,receptance}`` ``[C]``
``blocks.N.att.{key,value,receptance,output}.weight``          ``model.layers.N.mixer.*.weight``
``blocks.N.ffn.time_mix_{k,r}`` ``[1, 1, C]``                  ``model.layers.N.mlp.time_mix_{key,receptance}`` ``[C]``
``blocks.N.ffn.{key,receptance,value}.weight``                 ``model.layers.N.mlp.*.weight``
``ln_out.*``, ``head.weight``                                  ``model.norm.*``, ``lm_head.weight``
=============================================================  ==============================================

``time_decay`` is stored as published (the model uses ``w = -exp(time_decay)``). Inferred: vocabulary and width
from ``emb.weight``, layers from the block indices, ``dim_att`` from ``att.key.weight``, ``dim_ffn`` from
``ffn.key.weight``. Tokenizer: the world vocabulary file when the folder carries one, else byte-level for a
256-entry vocabulary (:func:`hf_recurrent.tokenization.byte_level_tokenizer` without end-of-text token).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from ..modeling.rwkv4 import HfrRWKV4Config
from .errors import ConversionError
from .io import load_weights
from .registry import ConvertedCheckpoint, SourceFormat, register_format

WORLD_VOCAB_FILE = "rwkv_vocab_v20230424.txt"

_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^emb\.weight$", r"model.embed_tokens.weight"),
        (r"^blocks\.0\.ln0\.(weight|bias)$", r"model.layers.0.pre_norm.\1"),
        (r"^blocks\.(\d+)\.ln1\.(weight|bias)$", r"model.layers.\1.mixer_norm.\2"),
        (r"^blocks\.(\d+)\.ln2\.(weight|bias)$", r"model.layers.\1.mlp_norm.\2"),
        (r"^blocks\.(\d+)\.att\.(time_decay|time_first)$", r"model.layers.\1.mixer.\2"),
        (r"^blocks\.(\d+)\.att\.time_mix_k$", r"model.layers.\1.mixer.time_mix_key"),
        (r"^blocks\.(\d+)\.att\.time_mix_v$", r"model.layers.\1.mixer.time_mix_value"),
        (r"^blocks\.(\d+)\.att\.time_mix_r$", r"model.layers.\1.mixer.time_mix_receptance"),
        (r"^blocks\.(\d+)\.att\.((?:key|value|receptance|output)\.weight)$", r"model.layers.\1.mixer.\2"),
        (r"^blocks\.(\d+)\.ffn\.time_mix_k$", r"model.layers.\1.mlp.time_mix_key"),
        (r"^blocks\.(\d+)\.ffn\.time_mix_r$", r"model.layers.\1.mlp.time_mix_receptance"),
        (r"^blocks\.(\d+)\.ffn\.((?:key|receptance|value)\.weight)$", r"model.layers.\1.mlp.\2"),
        (r"^ln_out\.(weight|bias)$", r"model.norm.\1"),
        (r"^head\.weight$", r"lm_head.weight"),
    )
)


def rename(name: str, renames: tuple[tuple[re.Pattern[str], str], ...] = _RENAMES) -> str:
    """Our name for a source parameter; unknown names pass through (the shared check reports them)."""
    for pattern, replacement in renames:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return name


def require(state: Mapping[str, torch.Tensor], key: str, dims: int, what: str) -> torch.Tensor:
    """``state[key]``, which must exist and have ``dims`` dimensions (for shape inference); else a clear error."""
    if key not in state:
        raise ConversionError(f"missing key {key!r} ({what}); is this a {what.split()[0]} checkpoint?")
    tensor = state[key]
    if tensor.dim() != dims:
        raise ConversionError(f"{key!r} must have {dims} dimensions, found shape {tuple(tensor.shape)}")
    return tensor


def count_blocks(state: Mapping[str, torch.Tensor], prefix: str = "blocks.") -> int:
    """Number of blocks: one more than the largest ``blocks.N`` index, which must run from 0 without gaps."""
    indices = {int(m.group(1)) for key in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", key))}
    if not indices:
        raise ConversionError(f"no '{prefix}N.' keys: not an RWKV checkpoint")
    missing = sorted(set(range(max(indices) + 1)) - indices)
    if missing:
        raise ConversionError(f"blocks {missing} are missing (found blocks up to {max(indices)})")
    return max(indices) + 1


def squeeze_mixes(state: dict[str, torch.Tensor], hidden_size: int) -> None:
    """Token-shift ratios ``[1, 1, C]`` (published) -> ``[C]``; any other shape is left for the shape check."""
    for key, tensor in state.items():
        if ".time_mix_" in key and tensor.numel() == hidden_size and tensor.dim() == 3:
            state[key] = tensor.reshape(hidden_size)


def byte_or_world_tokenizer(src: Path, vocab_size: int) -> PreTrainedTokenizerBase | None:
    """The world tokenizer when ``src`` is a folder holding its vocabulary file, byte-level for 256 ids."""
    from ..tokenization import byte_level_tokenizer
    from ..tokenization_world import world_tokenizer

    if src.is_dir() and (src / WORLD_VOCAB_FILE).is_file():
        return world_tokenizer(src / WORLD_VOCAB_FILE)
    if vocab_size == 256:
        return byte_level_tokenizer(eos=False)
    return None


def rwkv4_config_from_state(state: Mapping[str, torch.Tensor]) -> HfrRWKV4Config:
    """Our config inferred from BlinkDL's RWKV-4 tensor shapes."""
    vocab_size, hidden_size = require(state, "emb.weight", 2, "RWKV embedding [vocab, hidden]").shape
    num_layers = count_blocks(state)
    attention = require(state, "blocks.0.att.key.weight", 2, "RWKV-4 time-mix key [dim_att, hidden]").shape[0]
    ffn = require(state, "blocks.0.ffn.key.weight", 2, "RWKV-4 channel-mix key [dim_ffn, hidden]").shape[0]
    if "blocks.0.att.time_decay" not in state:
        raise ConversionError("missing key 'blocks.0.att.time_decay': not an RWKV-4 checkpoint (RWKV-7 has att.w0)")
    return HfrRWKV4Config(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                       attention_hidden_size=attention, intermediate_size=ffn)


def rwkv4_state_dict_from_blinkdl(state: Mapping[str, torch.Tensor], hidden_size: int) -> dict[str, torch.Tensor]:
    """BlinkDL's RWKV-4 weights under our names; works on meta tensors."""
    ours = {rename(key): tensor for key, tensor in state.items()}
    squeeze_mixes(ours, hidden_size)
    return ours


def load_rwkv4(src: Path) -> ConvertedCheckpoint:
    """Read a BlinkDL RWKV-4 ``.pth`` (file or folder) into our config and names."""
    state = load_weights(src)
    config = rwkv4_config_from_state(state)
    return ConvertedCheckpoint(config, rwkv4_state_dict_from_blinkdl(state, config.hidden_size),
                               tokenizer=byte_or_world_tokenizer(Path(src), config.vocab_size))


RWKV4 = register_format(
    SourceFormat(
        name="rwkv4",
        description="RWKV-4 from BlinkDL's .pth state dict (shapes give the config; world or byte tokenizer)",
        load=load_rwkv4,
    )
)
