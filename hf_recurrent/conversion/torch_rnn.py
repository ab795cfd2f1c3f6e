"""``torch-lstm`` / ``torch-gru``: language models built on ``torch.nn.LSTM`` / ``nn.GRU`` -> our LSTM / GRU.

Source layout: the state dict of PyTorch's word-language-model example (``examples/word_language_model``'s
``RNNModel``: an ``nn.Embedding``, a multi-layer ``nn.LSTM``/``nn.GRU``, an ``nn.Linear`` decoder), one ``.pt`` /
``.pth`` / ``.bin`` / ``.safetensors`` file or a folder holding one, read without unpickling objects:

===========================================================  =========================================================
``encoder.weight`` ``[V, E]``                                ``model.embed_tokens.weight`` (``E`` must equal the hidden)
``rnn.weight_ih_l{k}`` ``[G*H, H]``                          ``model.layers.{k}.mixer.gate_proj.weight``
``rnn.bias_ih_l{k}`` (+ ``rnn.bias_hh_l{k}`` for the LSTM)   ``model.layers.{k}.mixer.gate_proj.bias``
``rnn.weight_hh_l{k}`` ``[G*H, H]`` (per gate: out, in)       ``model.layers.{k}.mixer.recurrent_weight`` ``[1,G,H,H]``
                                                             (each gate's block transposed: input index first)
``rnn.bias_hh_l{k}`` (GRU)                                   ``model.layers.{k}.mixer.recurrent_bias`` ``[1, G, H]``
``decoder.weight`` ``[V, H]``, ``decoder.bias`` ``[V]``       ``lm_head.weight`` (tied when equal to the encoder's),
                                                             ``lm_head.bias``
===========================================================  =========================================================

Gate order: PyTorch stacks the gates gate-major, ``(i, f, g, o)`` for the LSTM and ``(r, z, n)`` for the GRU; our
gate projection is head-major ``[H, G, D]`` and the recurrent weight ``[H, G, D_in, D_out]``. With one head the
gates keep their order (ours was chosen to be PyTorch's), the recurrent blocks are transposed per gate. The model
is a ``plain_stack`` (no norms, residuals or MLP), so its layers equal ``nn.LSTM``'s exactly. Layers without bias
(``bias=False``) get zero biases. Refused with a clear error: bidirectional layers, LSTM projections
(``proj_size``), an embedding width other than the hidden size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..modeling.rnn import HfrGRUConfig, HfrLSTMConfig
from .errors import ConversionError
from .io import load_weights
from .registry import ConvertedCheckpoint, SourceFormat, register_format

_GATES = {"lstm": 4, "gru": 3}


def _require(state: Mapping[str, torch.Tensor], key: str, shape: tuple[int, ...] | None, what: str) -> torch.Tensor:
    if key not in state:
        raise ConversionError(f"missing key {key!r} ({what}); expected PyTorch's word-language-model layout "
                              "(encoder.*, rnn.*, decoder.*)")
    tensor = state[key]
    if shape is not None and tuple(tensor.shape) != shape:
        raise ConversionError(f"{key!r} ({what}) must have shape {shape}, found {tuple(tensor.shape)}")
    return tensor


def torch_rnn_to_ours(cell: str, state: Mapping[str, torch.Tensor]) -> tuple[HfrLSTMConfig | HfrGRUConfig, dict]:
    """Our config and state dict for a word-language-model state dict whose recurrence is ``cell``."""
    unsupported = sorted(k for k in state if k.endswith("_reverse") or "weight_hr_l" in k)
    if unsupported:
        raise ConversionError(
            f"bidirectional layers and LSTM projections are not causal LMs we can run: {unsupported[:4]}"
        )
    G = _GATES[cell]
    emb = _require(state, "encoder.weight", None, "embedding [vocab, hidden]")
    if emb.dim() != 2:
        raise ConversionError(f"'encoder.weight' must be [vocab, hidden], found {tuple(emb.shape)}")
    vocab, width = emb.shape
    w_hh0 = _require(state, "rnn.weight_hh_l0", None, f"{cell.upper()} recurrent weight")
    if w_hh0.dim() != 2 or w_hh0.shape[0] % G or w_hh0.shape[0] != G * w_hh0.shape[1]:
        raise ConversionError(
            f"'rnn.weight_hh_l0' must be [{G} * hidden, hidden] for torch-{cell}, found {tuple(w_hh0.shape)}"
            + (" (is this the other cell type?)" if w_hh0.dim() == 2 and w_hh0.shape[0] % w_hh0.shape[1] == 0 else "")
        )
    H = w_hh0.shape[1]
    if width != H:
        raise ConversionError(
            f"embedding width {width} differs from the hidden size {H}: our layers map hidden to hidden"
        )
    layers = sorted({int(m.group(1)) for k in state if (m := re.fullmatch(r"rnn\.weight_ih_l(\d+)", k))})
    if layers != list(range(len(layers))):
        raise ConversionError(f"rnn layers must be numbered 0..N-1 without gaps; found {layers}")
    ours: dict[str, torch.Tensor] = {"model.embed_tokens.weight": emb}
    for k in layers:
        w_ih = _require(state, f"rnn.weight_ih_l{k}", (G * H, H), "input weights")
        w_hh = _require(state, f"rnn.weight_hh_l{k}", (G * H, H), "recurrent weights")
        b_ih, b_hh = (
            _require(state, key, (G * H,), what) if key in state else w_ih.new_zeros(G * H)  # bias=False: zeros
            for key, what in ((f"rnn.bias_ih_l{k}", "input bias"), (f"rnn.bias_hh_l{k}", "recurrent bias"))
        )
        prefix = f"model.layers.{k}.mixer."
        ours[prefix + "gate_proj.weight"] = w_ih
        ours[prefix + "recurrent_weight"] = w_hh.view(G, H, H).transpose(1, 2).reshape(1, G, H, H).contiguous()
        if cell == "gru":
            ours[prefix + "gate_proj.bias"] = b_ih
            ours[prefix + "recurrent_bias"] = b_hh.view(1, G, H)
        else:
            ours[prefix + "gate_proj.bias"] = b_ih + b_hh
    head = _require(state, "decoder.weight", (vocab, H), "LM head")
    tied = head is emb or torch.equal(head, emb)
    if not tied:
        ours["lm_head.weight"] = head
    if "decoder.bias" in state:
        ours["lm_head.bias"] = _require(state, "decoder.bias", (vocab,), "LM head bias")
    extra = sorted(set(state) - {k for k in state if k.startswith(("encoder.", "rnn.", "decoder."))})
    if extra:
        raise ConversionError(f"unexpected keys for torch-{cell}: {extra[:5]}")
    config_class = HfrLSTMConfig if cell == "lstm" else HfrGRUConfig
    config = config_class(
        vocab_size=vocab, hidden_size=H, num_hidden_layers=len(layers), num_heads=1, plain_stack=True,
        hidden_ratio=0, lm_head_bias="decoder.bias" in state, tie_word_embeddings=tied,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    return config, ours


def _loader(cell: str):
    def load(src: Path) -> ConvertedCheckpoint:
        config, state = torch_rnn_to_ours(cell, load_weights(src))
        return ConvertedCheckpoint(config, state, tokenizer=None)

    return load


TORCH_LSTM = register_format(SourceFormat(
    name="torch-lstm",
    description="language model on torch.nn.LSTM (PyTorch word_language_model layout: encoder, rnn, decoder)",
    load=_loader("lstm"),
))
TORCH_GRU = register_format(SourceFormat(
    name="torch-gru",
    description="language model on torch.nn.GRU (PyTorch word_language_model layout: encoder, rnn, decoder)",
    load=_loader("gru"),
))
