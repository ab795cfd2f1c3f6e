"""Shared helpers of the benchmark scripts: the device description and the measured memory bandwidth."""

from __future__ import annotations

import importlib
import json
import platform
from pathlib import Path

import torch


def environment() -> dict:
    """GPU name and the versions of everything that shapes the numbers."""
    versions = {}
    for name in ("torch", "triton", "transformers", "fla"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 - a missing peer is recorded, not fatal
            versions[name] = None
    return {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        **versions,
    }


def measured_bandwidth(gigabytes: float = 2.0) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + bytes written over the median copy time)."""
    import triton.testing

    n = int(gigabytes * 2**30 / 4)
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    return 2 * src.numel() * 4 / (ms * 1e-3)


def write_json(path: str | Path, payload: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1))


def knob_values(items: list[str]) -> dict:
    """``["NAME=VALUE", ...]`` from the command line as knob settings (integers, True/False, else strings)."""
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"a knob setting is NAME=VALUE; got {item!r}")
        values[name] = int(value) if value.lstrip("-").isdigit() else {"True": True, "False": False}.get(value, value)
    return values
