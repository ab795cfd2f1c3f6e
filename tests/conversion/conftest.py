"""Fixtures of the conversion tests: fla GLA checkpoints on disk, and fla's own outputs for them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .fla_checkpoints import CASES, FlaCase, fla_gla_model, save_fla_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fla_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``<case>/checkpoint`` and ``<case>/reference.pt`` for every case, made by fla on the CPU."""
    out = tmp_path_factory.mktemp("fla-reference")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "tests.conversion.fla_reference", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    if run.returncode != 0:
        pytest.fail(f"fla reference run failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}")
    missing = [name for name in CASES if not (out / name / "reference.pt").is_file()]
    assert not missing, f"fla reference run wrote no outputs for {missing}"
    return out


@pytest.fixture
def fla_checkpoint(tmp_path: Path) -> Path:
    """A tiny random fla GLA saved by fla's own ``save_pretrained`` (model.safetensors + config.json)."""
    return save_fla_checkpoint(fla_gla_model(seed=0, use_short_conv=True), tmp_path / "src", FlaCase())
