"""Padding masks for recurrent layers and the logits slice of ``logits_to_keep``.

Small enough to own rather than import from transformers' internals (``create_recurrent_attention_mask``,
``slice_logits_to_keep`` are private helpers that have moved between 5.x releases); the semantics are the same.
"""

from __future__ import annotations

import torch


def padding_mask(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """The ``[B, length]`` 0/1 mask of the current input, or ``None`` when nothing in it is padding.

    ``attention_mask`` may cover past positions too (generate passes the whole history): its last ``length``
    columns are the current input. A single decode token is never padding; a 4-D mask carries no padding signal.
    """
    if attention_mask is None or attention_mask.dim() != 2 or length == 1:
        return None
    mask = attention_mask[:, -length:]
    if not torch.compiler.is_compiling() and bool(mask.all()):
        return None
    return mask.contiguous()


def slice_logits_to_keep(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """Hidden states whose logits are wanted: the last ``n`` positions (``0``: all) or the given indices."""
    if isinstance(logits_to_keep, int):
        return hidden_states if logits_to_keep == 0 else hidden_states[:, -logits_to_keep:]
    return hidden_states[:, logits_to_keep]
