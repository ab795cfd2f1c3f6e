"""Training data: text files -> token ids -> fixed-length blocks, packed with ``cu_seqlens`` at document bounds.

Every file is one document; documents are joined with the tokenizer's end-of-text token and cut into blocks of
``seq_len`` tokens. In a packed batch the ``B`` blocks become one row ``[1, B * seq_len]`` and ``cu_seqlens``
marks every block and document start, so each document starts from an empty recurrent state and no prediction
crosses a boundary (the label at each start is ignored).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


def collect_files(sources: Iterable[str], pattern: str = "*.py") -> list[Path]:
    """Files named by ``sources``: files, glob patterns, or directories searched recursively for ``pattern``."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files += sorted(p for p in path.rglob(pattern) if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(source, recursive=True) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(f"--data {source!r}: no such file or directory, and no file matches it")
            files += matches
    if not files:
        raise FileNotFoundError(f"no training files found in {list(sources)} (pattern {pattern!r} for directories)")
    return files


def tokenize_files(files: list[Path], tokenizer: PreTrainedTokenizerBase) -> tuple[torch.Tensor, torch.Tensor]:
    """All documents as one id stream ``[N]`` plus a bool ``[N]`` marking each document's first token."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer needs an end-of-text token to separate documents")
    ids: list[int] = []
    starts: list[int] = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text:
            continue
        starts.append(len(ids))
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
    stream = torch.tensor(ids, dtype=torch.long)
    is_start = torch.zeros_like(stream, dtype=torch.bool)
    is_start[torch.tensor(starts, dtype=torch.long)] = True
    return stream, is_start


class BlockDataset(Dataset):
    """Consecutive ``seq_len``-token blocks of the stream; item: ``(ids [seq_len], document starts [seq_len])``."""

    def __init__(self, stream: torch.Tensor, is_start: torch.Tensor, seq_len: int) -> None:
        n = stream.numel() // seq_len
        if n == 0:
            raise ValueError(f"the data has {stream.numel()} tokens, fewer than one block of {seq_len}")
        self.ids = stream[: n * seq_len].view(n, seq_len)
        self.starts = is_start[: n * seq_len].view(n, seq_len).clone()
        self.starts[:, 0] = True

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ids[i], self.starts[i]


def packed_collator(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Blocks -> one packed row with ``cu_seqlens`` at every document start; labels ignored at starts."""
    ids = torch.cat([i for i, _ in items])[None]
    starts = torch.cat([s for _, s in items])
    labels = ids.clone()
    labels[0, starts] = IGNORE_INDEX  # predicted from the previous document: not a real prediction
    bounds = torch.nonzero(starts).flatten()
    cu_seqlens = torch.cat([bounds, torch.tensor([ids.shape[1]])])
    return {"input_ids": ids, "labels": labels, "cu_seqlens": cu_seqlens}


def batched_collator(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Blocks -> ``[B, seq_len]`` rows; the state flows across documents within a block (no packing)."""
    ids = torch.stack([i for i, _ in items])
    return {"input_ids": ids, "labels": ids.clone()}
