"""Reading published checkpoint layouts safely: ``config.json`` and weights, never arbitrary pickles.

Weights come from, in this order of preference:

* ``model.safetensors``;
* sharded safetensors: ``model.safetensors.index.json`` and the shards its ``weight_map`` names;
* ``pytorch_model.bin`` (or sharded through ``pytorch_model.bin.index.json``), or a single ``*.pth`` / ``*.pt``
  file, read with ``torch.load(weights_only=True, map_location="cpu")``: tensors and plain containers only.

Every failure (missing path, no weights file, truncated or corrupt file, malformed JSON) raises
:class:`~hf_recurrent.conversion.errors.ConversionError` naming the file.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import ConversionError

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SUFFIXES = (".bin", ".pth", ".pt")


def require_dir(path: str | Path) -> Path:
    """``path`` as a :class:`Path`, which must be an existing directory."""
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"source {path} does not exist")
    if not path.is_dir():
        raise ConversionError(f"source {path} is not a directory (expected a checkpoint folder with config.json)")
    return path


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object stored at ``path``."""
    if not path.is_file():
        raise ConversionError(f"{path.name} not found in {path.parent}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConversionError(f"malformed JSON in {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def read_config(src: Path) -> dict[str, Any]:
    """``config.json`` of the checkpoint directory ``src``."""
    return read_json(require_dir(src) / "config.json")


def find_weight_files(src: Path) -> list[Path]:
    """The weight files of ``src`` (a checkpoint directory, or one weights file), in load order."""
    if src.is_file():
        return [src]
    src = require_dir(src)
    if (src / SAFETENSORS_FILE).is_file():
        return [src / SAFETENSORS_FILE]
    for index in (SAFETENSORS_INDEX, PICKLE_INDEX):
        if (src / index).is_file():
            return _shards(src / index)
    if (src / PICKLE_FILE).is_file():
        return [src / PICKLE_FILE]
    candidates = sorted(p for p in src.iterdir() if p.is_file() and p.suffix in (".pth", ".pt"))
    if len(candidates) == 1:
        return candidates
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise ConversionError(f"several weight files in {src} ({names}); pass the one to convert")
    raise ConversionError(
        f"no weights file in {src}: expected {SAFETENSORS_FILE}, {SAFETENSORS_INDEX}, {PICKLE_FILE}, "
        f"{PICKLE_INDEX} or one *.pth / *.pt file"
    )


def _shards(index: Path) -> list[Path]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConversionError(f"{index} has no 'weight_map' object mapping tensor names to shard files")
    shards = [index.parent / name for name in sorted(set(weight_map.values()))]
    for shard in shards:
        if not shard.is_file():
            raise ConversionError(f"shard {shard.name} listed in {index.name} is missing from {index.parent}")
    return shards


def load_weights(src: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint at ``src`` (directory or weights file), on the CPU, keys as stored."""
    state: dict[str, torch.Tensor] = {}
    for path in find_weight_files(Path(src)):
        part = _load_safetensors(path) if path.suffix == ".safetensors" else _load_pickle(path)
        duplicates = state.keys() & part.keys()
        if duplicates:
            raise ConversionError(f"{path.name} repeats tensors read from another shard: {sorted(duplicates)[:5]}")
        state.update(part)
    return state


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ConversionError(f"cannot read {path}: corrupt or truncated safetensors file ({err})") from None


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix not in PICKLE_SUFFIXES:
        raise ConversionError(f"cannot read {path}: unknown weights format (expected .safetensors, .bin, .pth, .pt)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        raise ConversionError(
            f"cannot read {path}: corrupt file, or it holds objects other than tensors "
            f"(only weights_only loading is allowed): {err}"
        ) from None
    return _as_state_dict(obj, path)


def _as_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` mapping, unwrapping the common ``{"state_dict": ...}`` / ``{"model": ...}``."""
    if isinstance(obj, Mapping) and len(obj) == 1:
        (key, inner), = obj.items()
        if key in ("state_dict", "model") and isinstance(inner, Mapping):
            obj = inner
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a mapping of tensor names to tensors")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"{path} holds non-tensor entries: {bad[:5]}")
    return dict(obj)
