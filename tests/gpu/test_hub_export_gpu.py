"""GPU: an exported GLA loads without hf_recurrent and runs the flattened Triton kernels, same results as the original.

GLA with hidden 512, 4 layers, 4 heads (2 key/value heads), short convolutions; a left-padded batch of 2 x 300
tokens (a ragged last chunk). The original runs in this process (hf_recurrent's Triton backend on CUDA); the
export is loaded in a subprocess where ``import hf_recurrent`` fails but Triton is installed, so the copies of
the Triton kernels that travel with the export run (checked: their flattened modules are loaded there). The same
check runs in CI on the CPU, kernels interpreted (``tests/hub/test_export_triton.py``).

Both sides run the same kernels on the same GPU, so the numbers should agree to the last bit; the tolerances allow
only for non-deterministic library reductions: max |remote - original| / max |original| <= 1e-6 in fp32 and
<= 1e-3 in bf16, the greedy continuation (16 tokens) identical in fp32.

Run: ``python -m pytest -m gpu tests/gpu/test_hub_export_gpu.py -s``.
"""

from __future__ import annotations

import pytest
import torch

from tests.hub.remote import export_and_run_gla

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CONFIG = dict(vocab_size=1000, hidden_size=512, num_hidden_layers=4, num_heads=4, num_kv_heads=2, use_short_conv=True,
              pad_token_id=0, bos_token_id=1, eos_token_id=None, initializer_range=0.05)
SEQ_LEN, NEW_TOKENS = 300, 16
TOLERANCE = {"float32": 1e-6, "bfloat16": 1e-3}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return export_and_run_gla(tmp_path_factory.mktemp("hub-gpu"), CONFIG, SEQ_LEN, NEW_TOKENS, list(TOLERANCE), "cuda")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_export_runs_flattened_triton_kernels_and_matches(runs, dtype):
    report, originals, remote = runs
    assert "kernels_linear_attention_triton_chunk" in report[f"gla-{dtype}"]["triton_modules_loaded"]
    assert report[f"gla-{dtype}"]["sharded_devices"] == ["cuda:0"]
    errors = {key: _rel(remote[dtype][key], originals[dtype]["logits"])
              for key in ("logits", "sharded_logits", "hub_logits")}
    print(f"\n{dtype}: max relative logit error remote vs original: {errors}")
    assert max(errors.values()) <= TOLERANCE[dtype]
    if dtype == "float32":
        assert remote[dtype]["generated"].tolist() == originals[dtype]["generated"].tolist()
