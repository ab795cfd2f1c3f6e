"""Checks of converted weights against the model they are meant for: keys, shapes, finiteness."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from transformers import PreTrainedModel

from .errors import ConversionError


def format_shape(shape: torch.Size | tuple[int, ...]) -> str:
    """``(2, 3)`` style, for error messages."""
    return "(" + ", ".join(str(d) for d in shape) + ")"


def check_state_dict(model: PreTrainedModel, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise unless ``state_dict`` has exactly ``model``'s keys with its shapes.

    Tied parameters (the LM head when ``tie_word_embeddings``) may be absent: they are filled from their source.
    Every problem is reported, each naming the key, the shape expected and the shape found. Works on meta tensors.
    """
    expected = {key: tensor.shape for key, tensor in model.state_dict().items()}
    optional = set(model.all_tied_weights_keys)
    problems = [
        f"missing key {key!r}: expected shape {format_shape(expected[key])}, found none"
        for key in sorted(expected.keys() - state_dict.keys() - optional)
    ]
    model_type = model.config.model_type
    problems += [
        f"unexpected key {key!r} with shape {format_shape(state_dict[key].shape)}: {model_type} has no such parameter"
        for key in sorted(state_dict.keys() - expected.keys())
    ]
    problems += [
        f"shape mismatch for {key!r}: expected {format_shape(expected[key])}, "
        f"found {format_shape(state_dict[key].shape)}"
        for key in sorted(state_dict.keys() & expected.keys())
        if state_dict[key].shape != expected[key]
    ]
    if problems:
        raise ConversionError(
            f"the weights do not fit {type(model).__name__} ({len(problems)} problem(s)):\n  " + "\n  ".join(problems)
        )


def check_finite(state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise if a floating-point tensor holds NaN or infinity, naming each such tensor."""
    bad = []
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and tensor.device.type != "meta":
            finite = torch.isfinite(tensor)
            if not finite.all():
                nan = int(torch.isnan(tensor).sum())
                bad.append(f"{key!r} ({nan} NaN, {int((~finite).sum()) - nan} infinite of {tensor.numel()})")
    if bad:
        raise ConversionError("non-finite values in the weights: " + ", ".join(bad))
