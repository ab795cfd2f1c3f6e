"""fla's own GLA (run on the CPU through Triton's interpreter) against the converted model: logits and greedy text.

Each case of :data:`~tests.conversion.fla_checkpoints.CASES` is a random fla model saved in one of fla's
published layouts; it is converted through the command line and loaded back with ``AutoModelForCausalLM``.
fla's reference outputs come from a subprocess (see :mod:`tests.conversion.fla_reference`). T <= 64, so fla runs
its fused_recurrent kernel; its chunk kernel is covered by ``tests/gpu/test_gla_parity_gpu.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import hf_recurrent  # noqa: F401  (registers hfr_gla with the Auto classes)
from hf_recurrent.cli import main

from .fla_checkpoints import CASES
from .fla_reference import NEW_TOKENS


@pytest.mark.parametrize("case", sorted(CASES))
def test_converted_model_matches_fla(case: str, fla_reference: Path, tmp_path: Path) -> None:
    dst = tmp_path / "converted"
    assert main(["convert", "fla-gla", str(fla_reference / case / "checkpoint"), str(dst)]) == 0
    ref = torch.load(fla_reference / case / "reference.pt", weights_only=True)
    model = AutoModelForCausalLM.from_pretrained(dst, dtype=torch.float32).eval()
    assert model.config.model_type == "hfr_gla"

    with torch.no_grad():
        logits = model(ref["input_ids"]).logits
    assert (logits - ref["logits"]).abs().max().item() <= 1e-4

    prompt = ref["prompt"]
    greedy = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS, do_sample=False,
        eos_token_id=None, pad_token_id=0,
    )
    assert greedy.tolist() == ref["greedy"].tolist()
