"""An exported GLA runs its own copies of the Triton kernels without hf_recurrent: on the CPU, interpreted.

The CPU twin of ``tests/gpu/test_hub_export_gpu.py``: the export is loaded in a subprocess where
``import hf_recurrent`` fails but Triton imports, with ``TRITON_INTERPRET=1`` and ``HF_RECURRENT_BACKEND=triton``
(what the CUDA default chooses), so the flattened Triton modules that travel with the export, and the fused layers
they reach, run. GLA with short convolutions and grouped key/value heads, 2 x 70 tokens (a ragged second chunk),
the second row left-padded; fp32 and bf16. Same kernels, same interpreter, same thread count on both sides:
the logits agree to the last bit (tolerance 0) and so do the greedy continuations.
"""

from __future__ import annotations

import pytest
import torch

from hf_recurrent.kernels.backend import triton_available
from tests.hub.remote import export_and_run_gla

pytestmark = pytest.mark.skipif(not triton_available() or torch.cuda.is_available(),
                                reason="the interpreted twin of the GPU test; needs Triton, runs without a GPU")

CONFIG = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_heads=4, num_kv_heads=2, use_short_conv=True,
              pad_token_id=0, bos_token_id=1, eos_token_id=None, initializer_range=0.05)
DTYPES = ["float32", "bfloat16"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The original on the Triton backend here (interpreted, as conftest sets it up), the export in the loader."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_RECURRENT_BACKEND", "triton")
        return export_and_run_gla(tmp_path_factory.mktemp("hub-triton"), CONFIG, 70, 4, DTYPES, "cpu",
                                  env={"TRITON_INTERPRET": "1", "HF_RECURRENT_BACKEND": "triton"})


@pytest.mark.parametrize("dtype", DTYPES)
def test_export_runs_its_triton_kernels_and_matches(runs, dtype):
    report, originals, remote = runs
    loaded = report[f"gla-{dtype}"]["triton_modules_loaded"]
    assert "kernels_linear_attention_triton_chunk" in loaded and "kernels_fused_layers_triton" in loaded, loaded
    for key in ("logits", "sharded_logits", "hub_logits"):
        torch.testing.assert_close(remote[dtype][key], originals[dtype]["logits"], atol=0, rtol=0)
    assert remote[dtype]["generated"].tolist() == originals[dtype]["generated"].tolist()
