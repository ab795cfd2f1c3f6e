"""Writing the output folder atomically, and carrying the tokenizer over.

Everything is written into a hidden temporary folder next to the destination and renamed into place at the end:
a failure at any point leaves no destination folder, and no half-written one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from .errors import ConversionError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
)
"""Tokenizer files copied from a source folder when present (transformers' names)."""


def refuse_existing(dst: Path, overwrite: bool) -> None:
    """Raise if ``dst`` exists and ``overwrite`` is false."""
    if (dst.exists() or dst.is_symlink()) and not overwrite:
        raise ConversionError(f"output {dst} already exists; pass --overwrite (overwrite=True) to replace it")


@contextmanager
def staged_output_dir(dst: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; when the block succeeds it becomes ``dst`` (replacing it if ``overwrite``).

    The temporary folder lives in the nearest existing ancestor of ``dst`` (same filesystem, so the final step is
    a rename); it is removed if the block raises. Missing parents of ``dst`` are created only at the end.
    """
    refuse_existing(dst, overwrite)
    anchor = dst.absolute().parent
    while not anchor.exists():
        anchor = anchor.parent
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=anchor))
    try:
        yield staging
        refuse_existing(dst, overwrite)
        dst.parent.mkdir(parents=True, exist_ok=True)
        _move_into_place(staging, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: Path, dst: Path) -> None:
    if not (dst.exists() or dst.is_symlink()):
        os.replace(staging, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    os.replace(dst, old / dst.name)
    try:
        os.replace(staging, dst)
    except BaseException:
        os.replace(old / dst.name, dst)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def save_tokenizer(tokenizer: Path | PreTrainedTokenizerBase | None, out: Path) -> list[str]:
    """Copy the tokenizer files of a folder (or save a tokenizer object) into ``out``; the names written."""
    if tokenizer is None:
        return []
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return [Path(f).name for f in tokenizer.save_pretrained(out)]
    copied = []
    for name in TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            shutil.copyfile(tokenizer / name, out / name)
            copied.append(name)
    return copied
