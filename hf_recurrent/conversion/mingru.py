"""``mingru``: minGRU-pytorch's language model (``minGRU_pytorch.minLM``; minGRU, or minLSTM with ``use_lstm``).

Source: the model's ``state_dict()`` in one ``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors`` file (or a folder
holding one), read without unpickling objects; the config is read off the shapes. Names (``i`` = layer; minLM's
blocks are ``ModuleList([conv or None, norm, rnn, ff_norm, ff, dropout])``):

===============================================  ===================================================
``token_emb.weight``                             ``model.embed_tokens.weight``
``layers.i.0.net.0.{weight,bias}`` ``[C,1,W]``   ``model.layers.i.conv1d.{weight,bias}`` (depthwise)
``layers.i.0.net.1.{weight,bias}`` ``[C,C,1]``   ``model.layers.i.conv_proj.{weight,bias}`` ``[C, C]``
``layers.i.1.weight``, ``layers.i.3.weight``     ``model.layers.i.mixer_norm.weight``, ``mlp_norm.weight``
``layers.i.2.to_hidden_and_gate.weight``         ``model.layers.i.mixer.in_proj.weight`` (minGRU)
``layers.i.2.to_hidden_and_f_i_gate.weight``     ``model.layers.i.mixer.in_proj.weight`` (minLSTM)
``layers.i.2.to_out.weight``                     ``model.layers.i.mixer.to_out.weight``
``layers.i.4.{0,2}.{weight,bias}``               ``model.layers.i.mlp.{0,2}.{weight,bias}``
``norm.weight``, ``to_logits.weight``            ``model.norm.weight``, ``lm_head.weight``
===============================================  ===================================================

minLM's ``nn.RMSNorm(dim)`` has ``eps=None`` (the input dtype's machine epsilon); the converted config records
float32's. A 256-token vocabulary (the enwik8 byte setup of minGRU-pytorch) gets the byte-level tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..modeling.minrnn import HfrMinGRUConfig, HfrMinLSTMConfig
from .errors import ConversionError
from .io import load_weights
from .registry import ConvertedCheckpoint, SourceFormat, register_format

_RENAMES = tuple((re.compile(p), r) for p, r in (
    (r"^token_emb\.weight$", "model.embed_tokens.weight"),
    (r"^layers\.(\d+)\.0\.net\.0\.(weight|bias)$", r"model.layers.\1.conv1d.\2"),
    (r"^layers\.(\d+)\.0\.net\.1\.(weight|bias)$", r"model.layers.\1.conv_proj.\2"),
    (r"^layers\.(\d+)\.1\.weight$", r"model.layers.\1.mixer_norm.weight"),
    (r"^layers\.(\d+)\.2\.(?:to_hidden_and_gate|to_hidden_and_f_i_gate)\.weight$",
     r"model.layers.\1.mixer.in_proj.weight"),
    (r"^layers\.(\d+)\.2\.to_out\.weight$", r"model.layers.\1.mixer.to_out.weight"),
    (r"^layers\.(\d+)\.3\.weight$", r"model.layers.\1.mlp_norm.weight"),
    (r"^layers\.(\d+)\.4\.([02])\.(weight|bias)$", r"model.layers.\1.mlp.\2.\3"),
    (r"^norm\.weight$", "model.norm.weight"),
    (r"^to_logits\.weight$", "lm_head.weight"),
))


def _rename(key: str) -> str:
    for pattern, replacement in _RENAMES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return key  # the shared check reports it as unexpected


def _get(state: Mapping[str, torch.Tensor], key: str, dims: int, what: str) -> torch.Tensor:
    if key not in state:
        raise ConversionError(f"missing key {key!r} ({what}): not a minGRU-pytorch minLM state dict")
    if state[key].dim() != dims:
        raise ConversionError(f"{key!r} ({what}) must have {dims} dimensions, found {tuple(state[key].shape)}")
    return state[key]


def mingru_to_ours(state: Mapping[str, torch.Tensor]) -> tuple[HfrMinGRUConfig | HfrMinLSTMConfig, dict]:
    """Our config and state dict for a minLM state dict."""
    vocab, dim = _get(state, "token_emb.weight", 2, "embedding [vocab, dim]").shape
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))})
    if not layers or layers != list(range(len(layers))):
        raise ConversionError(f"minLM layers must be numbered 0..N-1; found {layers}")
    use_lstm = "layers.0.2.to_hidden_and_f_i_gate.weight" in state
    key = "layers.0.2." + ("to_hidden_and_f_i_gate" if use_lstm else "to_hidden_and_gate") + ".weight"
    rows = _get(state, key, 2, "recurrent input projection").shape[0]
    parts = 3 if use_lstm else 2
    if rows % parts:
        raise ConversionError(f"{key!r} has {rows} rows, not a multiple of {parts}")
    inner = rows // parts
    ff = _get(state, "layers.0.4.0.weight", 2, "MLP input weight").shape[0]
    conv = state.get("layers.0.0.net.0.weight")
    config_class = HfrMinLSTMConfig if use_lstm else HfrMinGRUConfig
    config = config_class(
        vocab_size=vocab, hidden_size=dim, num_hidden_layers=len(layers), expansion=inner / dim,
        proj_out="layers.0.2.to_out.weight" in state, intermediate_size=ff, use_conv=conv is not None,
        conv_size=3 if conv is None else conv.shape[-1], norm_eps=torch.finfo(torch.float32).eps,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    if config.inner_size != inner:
        raise ConversionError(f"inner width {inner} is not int(dim * expansion) for dim {dim}")
    ours = {_rename(k): v for k, v in state.items()}
    for i in layers:
        name = f"model.layers.{i}.conv_proj.weight"
        if name in ours and ours[name].dim() == 3 and ours[name].shape[-1] == 1:
            ours[name] = ours[name][:, :, 0]
    return config, ours


def load_mingru(src: Path) -> ConvertedCheckpoint:
    """Read a minLM state dict (file or folder) into our config and names."""
    from ..tokenization import byte_level_tokenizer

    config, state = mingru_to_ours(load_weights(src))
    tokenizer = byte_level_tokenizer(eos=False) if config.vocab_size == 256 else None
    return ConvertedCheckpoint(config, state, tokenizer=tokenizer)


MINGRU = register_format(SourceFormat(
    name="mingru",
    description="minGRU-pytorch's language model minLM (minGRU, or minLSTM with use_lstm; shapes give the config)",
    load=load_mingru,
))
