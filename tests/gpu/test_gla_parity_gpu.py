"""GPU parity: a converted random fla GLA against flash-linear-attention's own kernels, at a realistic size.

hidden 512, 4 layers, 4 heads over 2 key/value heads, short convolutions, T = 300 (not a multiple of 64, so
chunked kernels see a ragged last chunk). fla runs in its ``chunk`` and ``fused_recurrent`` modes (fla switches
to fused_recurrent by itself only for T <= 64). Error = max |ours - fla| / max |fla| over all logits.

* bf16: ours in bf16 against fla in bf16, per mode, <= 1e-2.
* fp32: ours in fp32 against fla in fp32, per mode, <= 1e-4. fla's ``chunk`` kernels may multiply fp32 through
  TF32 tensor cores on Hopper (Triton's default dot precision), so that case is a non-strict xfail: its outcome
  is recorded (XPASS / XFAIL), the fused_recurrent case is the assertion.
* greedy: 24 new tokens after a 300-token prompt, ours (``generate``: chunked prefill, then cached recurrent
  steps) against fla fp32 fused_recurrent re-computing the whole sequence at each step.

Run on a GPU machine with ``pytest -m gpu tests/gpu/test_gla_parity_gpu.py -rxX -s`` (``-s`` prints the errors).
"""

from __future__ import annotations

import copy
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


@pytest.mark.parametrize("mode", MODES)
@torch.no_grad()
def test_bf16_logits(checkpoints, input_ids, mode: str) -> None:
    """In bf16 both models round: ours must be as close to the exact (fp32) logits as fla's own bf16 run is.

    A fixed bound would not do: this random model's bf16 logits are ~4% (norm) from its fp32 ones in either code.
    """
    fla, ours = checkpoints
    exact = _fla_on_gpu(fla, mode, torch.float32)(input_ids=input_ids, use_cache=False).logits.float()
    fla_bf16 = _fla_on_gpu(fla, mode, torch.bfloat16)(input_ids=input_ids, use_cache=False).logits.float()
    ours_bf16 = _ours_on_gpu(ours, torch.bfloat16)(input_ids).logits.float()
    fla_err = ((fla_bf16 - exact).norm() / exact.norm()).item()
    our_err = ((ours_bf16 - exact).norm() / exact.norm()).item()
    print(f"[gla gpu parity] bf16 vs exact fp32: ours {our_err:.3e}, fla {mode} {fla_err:.3e}")
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
