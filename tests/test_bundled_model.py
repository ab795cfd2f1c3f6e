"""The bundled model: small, loads with the Auto classes, and has really learnt Python source."""

from __future__ import annotations

import inspect

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_recurrent.training.data as unseen_module
from hf_recurrent.cli import bundled_model_path, main


def test_bundled_model_is_small_and_predicts_unseen_python_well():
    path = bundled_model_path()
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size <= 10 * 2**20, size
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    # Python it never saw (this package's own source): a uniform byte model scores ln(257) = 5.5 nats/byte.
    text = inspect.getsource(unseen_module)[:2000]
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    assert loss < 1.6, loss


def test_generate_command_uses_the_bundled_model(capsys):
    assert main(["generate", "def main(", "--max-new-tokens", "24", "--temperature", "0", "--seed", "0"]) == 0
    out, err = capsys.readouterr()
    assert "bundled GLA" in err and "tokens/s" in err
    assert out.startswith("def main(") and len(out) > len("def main(") + 10
