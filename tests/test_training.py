"""``hf-recurrent train``: data packing, and a short real run through the command line."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_recurrent.cli import main
from hf_recurrent.training.data import IGNORE_INDEX, BlockDataset, packed_collator


def test_packed_collator_marks_every_block_and_document_start():
    stream = torch.arange(20)
    starts = torch.zeros(20, dtype=torch.bool)
    starts[[0, 3, 11]] = True
    data = BlockDataset(stream, starts, seq_len=8)  # blocks [0..8), [8..16); 16..19 dropped
    batch = packed_collator([data[0], data[1]])
    assert batch["input_ids"].tolist() == [list(range(16))]
    assert batch["cu_seqlens"].tolist() == [0, 3, 8, 11, 16]
    ignored = (batch["labels"][0] == IGNORE_INDEX).nonzero().flatten().tolist()
    assert ignored == [0, 3, 8, 11]


def test_train_command_learns_and_writes_a_loadable_model(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        (data / f"doc{i}.py").write_text("def f(x):\n    return x + 1\n\n" * 40)
    out = tmp_path / "model"
    main(["train", "--arch", "gla", "--data", str(data), "--out", str(out), "--config", "hidden_size=32",
          "num_hidden_layers=1", "num_heads=2", "--seq-len", "64", "--batch-size", "4", "--max-steps", "40",
          "--lr", "1e-2", "--logging-steps", "5"])
    log = json.loads((out / "train_log.json").read_text())
    losses = [e["loss"] for e in log["log_history"] if "loss" in e]
    assert log["packed"] and losses[-1] < 0.5 * losses[0], losses
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("def f(x):\n    return", return_tensors="pt").input_ids
    text = tok.decode(model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:])
    assert text.startswith(" x"), text  # the one pattern in the data
