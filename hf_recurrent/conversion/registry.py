"""The registry of source checkpoint formats that ``hf-recurrent convert FORMAT SRC DST`` understands.

A format is a name, a one-line description and a ``load`` function reading a source path into a
:class:`ConvertedCheckpoint`: one of our configs, the weights under OUR parameter names, and where the tokenizer
comes from. Everything after that (checking keys and shapes, building the model, writing the output folder) is
shared: see :func:`hf_recurrent.conversion.convert`. A format module calls :func:`register_format` at import and
is imported by ``hf_recurrent/conversion/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedConfig, PreTrainedTokenizerBase

from .errors import ConversionError


@dataclass
class ConvertedCheckpoint:
    """A source checkpoint translated to our conventions, not yet checked against our model.

    ``tokenizer`` is a directory whose tokenizer files are copied, a tokenizer object to save, or ``None``.
    """

    config: PreTrainedConfig
    state_dict: dict[str, torch.Tensor]
    tokenizer: Path | PreTrainedTokenizerBase | None = None


@dataclass(frozen=True)
class SourceFormat:
    """A published checkpoint layout: ``load(src)`` reads it into a :class:`ConvertedCheckpoint`."""

    name: str
    description: str
    load: Callable[[Path], ConvertedCheckpoint]


FORMATS: dict[str, SourceFormat] = {}


def register_format(fmt: SourceFormat) -> SourceFormat:
    """Add ``fmt`` to :data:`FORMATS` (names are unique)."""
    if fmt.name in FORMATS:
        raise ValueError(f"conversion format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> SourceFormat:
    """The registered format ``name``; the error lists the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(FORMATS)) or "none"
        raise ConversionError(f"unknown conversion format {name!r}; known formats: {known}") from None
