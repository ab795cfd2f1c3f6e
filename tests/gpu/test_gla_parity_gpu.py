"""GPU parity: a converted random fla GLA against flash-linear-attention's own model, at a realistic size.

hidden 512, 4 layers, 4 heads over 2 key/value heads, short convolutions, T = 300 (not a multiple of 64, so
chunked kernels see a ragged last chunk). fla runs in its ``fused_recurrent`` mode. Error = max |ours - fla| /
max |fla| over all logits (fp32), or the norm ratio (bf16).

Two fp32 oracles: fla on this GPU, and fla on the CPU (its Triton kernels interpreted, in a subprocess: slower,
but independent of how fla's kernels compile for this GPU; fla reports Hopper miscompiles with Triton 3.4-3.7.0).
On an H200 (Triton 3.6) our bf16 logits were 0.85 (norm ratio) from fla's GPU fp32 ones, while ours in bf16 are
0.03 from ours in fp32 on that GPU and ours in fp32 match fla's CPU logits to 2.4e-6: the CPU oracle decides.

* fp32: ours on the GPU against fla on the CPU <= 1e-4; fla's GPU run against its CPU run is recorded (xfail,
  non-strict: a check of the peer on this stack, not of us).
* bf16: ours in bf16 must be as close to the CPU oracle as fla's bf16 run is to fla's fp32 run (x 1.25).
* greedy: 24 new tokens after a 300-token prompt, ours (``generate``: chunked prefill, then cached recurrent
  steps) against fla fp32 fused_recurrent on the GPU re-computing the whole sequence at each step.

Run on a GPU machine with ``pytest -m gpu tests/gpu/test_gla_parity_gpu.py -rxX -s`` (``-s`` prints the errors).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import hf_recurrent  # noqa: F401  (registers hfr_gla with the Auto classes)
from hf_recurrent.cli import main
from tests.conversion.fla_checkpoints import FlaCase, fla_gla_model, fla_greedy, save_fla_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CONFIG = dict(vocab_size=1000, hidden_size=512, num_hidden_layers=4, num_heads=4, num_kv_heads=2, hidden_ratio=4,
              use_short_conv=True)
BATCH, SEQ_LEN, NEW_TOKENS = 2, 300, 24
# fla's chunk mode is left out: fla reports its chunk kernels miscompile on Hopper with Triton >= 3.4, < 3.7.1, and
# here (H200, Triton 3.6) its bf16 chunk forward did not finish within 150 s.
MODES = ["fused_recurrent"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """fla's model (fp32, CPU) and our conversion of its published-layout checkpoint."""
    root = tmp_path_factory.mktemp("gla-gpu")
    fla = fla_gla_model(seed=0, **CONFIG)
    save_fla_checkpoint(fla, root / "fla", FlaCase())
    assert main(["convert", "fla-gla", str(root / "fla"), str(root / "ours")]) == 0
    return fla, root / "ours"


@pytest.fixture(scope="module")
def input_ids() -> torch.LongTensor:
    return torch.randint(CONFIG["vocab_size"], (BATCH, SEQ_LEN), generator=torch.Generator().manual_seed(0)).cuda()


@pytest.fixture(scope="module")
def fla_cpu_logits(tmp_path_factory: pytest.TempPathFactory, input_ids) -> torch.Tensor:
    """fla's fp32 logits on the CPU (``tests.conversion.fla_reference --logits`` in a subprocess), on the GPU."""
    root = tmp_path_factory.mktemp("fla-cpu")
    torch.save({"config": CONFIG, "seed": 0, "input_ids": input_ids.cpu()}, root / "request.pt")
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-m", "tests.conversion.fla_reference", "--logits", str(root / "request.pt"),
                    str(root / "logits.pt")], env=env, cwd=Path(__file__).parents[2], check=True, timeout=900)
    return torch.load(root / "logits.pt").cuda()


def _fla_on_gpu(fla: torch.nn.Module, mode: str, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of the fp32 CPU model on the GPU in ``dtype`` (the original keeps full precision for later tests)."""
    model = copy.deepcopy(fla).to(device="cuda", dtype=dtype)
    for layer in model.model.layers:
        layer.attn.mode = mode
    return model


def _ours_on_gpu(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).cuda().eval()


@torch.no_grad()
def _relative_error(path: Path, fla: torch.nn.Module, ids: torch.Tensor, mode: str, dtype: torch.dtype) -> float:
    ref = _fla_on_gpu(fla, mode, dtype)(input_ids=ids, use_cache=False).logits.float()
    ours = _ours_on_gpu(path, dtype)(ids).logits.float()
    error = ((ours - ref).abs().max() / ref.abs().max()).item()
    print(f"[gla gpu parity] {torch.cuda.get_device_name()} {dtype} fla {mode}: relative error {error:.3e}")
    return error


@torch.no_grad()
def test_fp32_logits_against_fla_on_the_cpu(checkpoints, input_ids, fla_cpu_logits) -> None:
    _, ours = checkpoints
    got = _ours_on_gpu(ours, torch.float32)(input_ids).logits.float()
    error = ((got - fla_cpu_logits).abs().max() / fla_cpu_logits.abs().max()).item()
    print(f"[gla gpu parity] fp32 ours (GPU) vs fla (CPU): {error:.3e}")
    assert error <= 1e-4


@pytest.mark.xfail(strict=False, reason="a check of fla's GPU kernels on this Triton (Hopper miscompiles reported)")
@torch.no_grad()
def test_fla_on_the_gpu_agrees_with_fla_on_the_cpu(checkpoints, input_ids, fla_cpu_logits) -> None:
    got = _fla_on_gpu(checkpoints[0], "fused_recurrent", torch.float32)(input_ids=input_ids, use_cache=False)
    error = ((got.logits.float() - fla_cpu_logits).abs().max() / fla_cpu_logits.abs().max()).item()
    print(f"[gla gpu parity] fp32 fla (GPU) vs fla (CPU): {error:.3e}")
    assert error <= 1e-4


@pytest.mark.parametrize("mode", MODES)
@torch.no_grad()
def test_bf16_logits(checkpoints, input_ids, fla_cpu_logits, mode: str) -> None:
    """In bf16 both models round: ours must be as close to the exact (fp32, CPU) logits as fla's own bf16 run is to
    its fp32 run. A fixed bound would not do: this random model's bf16 logits are ~3% (norm) from its fp32 ones in
    either code."""
    fla, ours = checkpoints
    fla_fp32 = _fla_on_gpu(fla, mode, torch.float32)(input_ids=input_ids, use_cache=False).logits.float()
    fla_bf16 = _fla_on_gpu(fla, mode, torch.bfloat16)(input_ids=input_ids, use_cache=False).logits.float()
    ours_bf16 = _ours_on_gpu(ours, torch.bfloat16)(input_ids).logits.float()
    fla_err = ((fla_bf16 - fla_fp32).norm() / fla_fp32.norm()).item()
    our_err = ((ours_bf16 - fla_cpu_logits).norm() / fla_cpu_logits.norm()).item()
    print(f"[gla gpu parity] bf16: ours vs exact (CPU) {our_err:.3e}; fla {mode} vs its fp32 {fla_err:.3e}")
    assert our_err <= max(1.25 * fla_err, 1e-2)


@pytest.mark.parametrize("mode", MODES)
def test_fp32_logits(checkpoints, input_ids, mode: str) -> None:
    fla, ours = checkpoints
    assert _relative_error(ours, fla, input_ids, mode, torch.float32) <= 1e-4


def test_fp32_greedy_generation(checkpoints, input_ids) -> None:
    fla, ours = checkpoints
    expected = fla_greedy(_fla_on_gpu(fla, "fused_recurrent", torch.float32), input_ids, NEW_TOKENS)
    got = _ours_on_gpu(ours, torch.float32).generate(
        input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=NEW_TOKENS, do_sample=False,
        eos_token_id=None, pad_token_id=0,
    )
    assert got.tolist() == expected.tolist()
