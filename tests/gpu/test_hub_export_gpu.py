"""GPU: an exported GLA loads without hf_recurrent and runs the flattened Triton kernels, same results as the original.

GLA with hidden 512, 4 layers, 4 heads (2 key/value heads), short convolutions; a left-padded batch of 2 x 300
tokens (a ragged last chunk). The original runs in this process (hf_recurrent's Triton backend on CUDA); the
export is loaded in a subprocess where ``import hf_recurrent`` fails but Triton is installed, so the copies of
the Triton kernels that travel with the export run (checked: their flattened modules are loaded there).

Both sides run the same kernels on the same GPU, so the numbers should agree to the last bit; the tolerances allow
only for non-deterministic library reductions: max |remote - original| / max |original| <= 1e-6 in fp32 and
<= 1e-3 in bf16, the greedy continuation (16 tokens) identical in fp32.

Run: ``python -m pytest -m gpu tests/gpu/test_hub_export_gpu.py -s``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_recurrent.hub import export_model
from hf_recurrent.kernels.backend import resolve_backend
from hf_recurrent.modeling.gla import HfrGLAConfig, HfrGLAForCausalLM
from hf_recurrent.tokenization import byte_level_tokenizer
from tests.hub.test_export import LOADER, _into_hub_cache

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CONFIG = dict(vocab_size=1000, hidden_size=512, num_hidden_layers=4, num_heads=4, num_kv_heads=2, use_short_conv=True,
              pad_token_id=0, bos_token_id=1, eos_token_id=None, initializer_range=0.05)
SEQ_LEN, NEW_TOKENS = 300, 16
TOLERANCE = {"float32": 1e-6, "bfloat16": 1e-3}


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, CONFIG["vocab_size"], (2, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    ids[1, :37], mask[1, :37] = 0, 0
    return ids, mask


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-gpu")
    ids, mask = _inputs()
    cases, originals = [], {}
    for dtype in TOLERANCE:
        torch.manual_seed(0)
        model = HfrGLAForCausalLM(HfrGLAConfig(**CONFIG)).to(getattr(torch, dtype)).eval()
        model.save_pretrained(root / f"src-{dtype}")
        byte_level_tokenizer().save_pretrained(root / f"src-{dtype}")  # the loader also loads the exported tokenizer
        export_model(root / f"src-{dtype}", root / f"hub-{dtype}", max_shard_size="5MB")
        _into_hub_cache(root / f"hub-{dtype}", root / "hub-cache", f"hfr-test/gla-{dtype}")
        model = model.cuda()
        assert resolve_backend(None, model.lm_head.weight) == "triton"
        with torch.no_grad():
            originals[dtype] = {
                "logits": model(ids.cuda(), attention_mask=mask.cuda(), use_cache=False).logits.cpu(),
                "generated": model.generate(ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=NEW_TOKENS,
                                            do_sample=False, pad_token_id=0).cpu(),
            }
        cases.append({"name": f"gla-{dtype}", "dir": str(root / f"hub-{dtype}"), "hub_id": f"hfr-test/gla-{dtype}",
                      "input_ids": ids.tolist(), "attention_mask": mask.tolist(), "max_new_tokens": NEW_TOKENS,
                      "pad_token_id": 0, "text": "def main():"})
    (root / "out").mkdir()
    spec = root / "spec.json"
    spec.write_text(json.dumps({"models": cases, "out": str(root / "out"), "threads": torch.get_num_threads(),
                                "hide": ["hf_recurrent"], "device": "cuda"}))
    env = {k: v for k, v in os.environ.items() if k != "HF_RECURRENT_BACKEND"}
    # Keep PYTHONPATH entries that bring other packages (a newer transformers, say), not this checkout's root; the
    # loader's import blocker hides hf_recurrent whatever the path.
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and str(Path(p).resolve()) != repo
    )
    env.update(HF_MODULES_CACHE=str(root / "modules"), HF_HUB_CACHE=str(root / "hub-cache"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(LOADER), str(spec)], cwd=root, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((root / "out" / "report.json").read_text())
    assert report["hidden"] == {"hf_recurrent": True} and report["errors"] == {}
    return report, originals, {d: load_file(root / "out" / f"gla-{d}.safetensors") for d in TOLERANCE}


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
