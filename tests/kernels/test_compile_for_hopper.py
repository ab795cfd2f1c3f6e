"""Every Triton kernel specialisation that representative calls launch compiles for Hopper (sm_90), without a GPU.

The kernel tests run on Triton's CPU interpreter, which never runs the compiler, so compile-only errors (e.g.
``Loop-carried variable _ has initial type int64 but is re-assigned to <['32', '8'], fp32> in loop!``) would reach
the GPU unseen. :mod:`tests.triton_compile_check` records the launches of one small call per family and mode under
the interpreter (launches recorded, not run), then compiles each specialisation with ``triton.compile`` for
``GPUTarget("cuda", 90, 32)``, each autotuned launch once per GPU candidate config. Both steps run in subprocesses:
this process's ``TRITON_INTERPRET`` and its already-imported interpreted kernels are left alone.

The compile stops after Triton GPU IR (``ttgir``, the front end and its GPU passes: ~0.1 s a specialisation against
~1 s for a cubin); ``HF_RECURRENT_COMPILE_CHECK_STAGE=cubin`` (or ``llir``, ``ptx``) compiles further.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import triton_compile_check as check

ROOT = Path(__file__).resolve().parents[2]

# Kernel modules the representative calls must reach (a family whose calls stop launching is a gap in the check).
FAMILIES = [
    "causal_conv1d.triton", "delta_rule.triton", "fused_layers.triton", "fused_layers.triton_gemv",
    "linear_attention.triton_chunk",
    "linear_attention.triton_step", "linear_scan.triton", "rnn_cells.triton", "rnn_cells.triton_resident",
    "rnn_cells.triton_split", "selective_scan.triton", "selective_scan.triton_chunked", "selective_scan.triton_scan",
    "selective_scan.triton_sequential", "wkv4.triton",
]


def _run(args: list[str], env: dict[str, str], timeout: int) -> None:
    proc = subprocess.run([sys.executable, "-m", "tests.triton_compile_check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"`triton_compile_check {args[0]}` failed ({proc.returncode}):\n{proc.stderr[-6000:]}")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    pytest.importorskip("triton")
    reason = check.nvidia_backend_available()
    if reason is not None:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("hopper_compile")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["TRITON_CACHE_DIR"] = str(tmp / "triton_cache")  # a fresh cache: every specialisation really compiles
    _run(["record", str(tmp / "launches.json")], {**env, "TRITON_INTERPRET": "1"}, timeout=600)
    _run(["compile", str(tmp / "launches.json"), str(tmp / "compiled.json"), "2"], env, timeout=1500)
    recorded = json.loads((tmp / "launches.json").read_text())
    compiled = json.loads((tmp / "compiled.json").read_text())
    if "unsupported" in compiled:
        if "vacuous" in compiled["unsupported"]:
            pytest.fail(compiled["unsupported"])
        pytest.skip(compiled["unsupported"])
    return recorded, compiled


def test_representative_calls_launch_every_family(results):
    recorded, _ = results
    assert not recorded["errors"], "representative calls failed:\n" + "\n".join(
        f"--- {case}\n{error}" for case, error in recorded["errors"].items()
    )
    modules = {launch["module"] for launch in recorded["launches"]}
    missing = [f for f in FAMILIES if f"hf_recurrent.kernels.{f}" not in modules]
    assert not missing, f"no kernel of these modules was launched: {missing}"


def test_every_specialisation_compiles_for_hopper(results):
    _, compiled = results
    specs = compiled["specs"]
    assert specs, "nothing was compiled"
    assert not compiled["expand_errors"], compiled["expand_errors"]
    failures = [spec for spec in specs if spec["error"] is not None]
    assert not failures, f"{len(failures)} of {len(specs)} specialisations fail to compile for sm_90:\n" + "\n".join(
        f"--- {spec['description']}\n{spec['error']}" for spec in failures
    )
