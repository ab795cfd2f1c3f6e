"""What a successful conversion writes: safetensors, our config, generation config, the source's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_recurrent  # noqa: F401  (registers hfr_gla with the Auto classes)
from hf_recurrent.cli import main
from hf_recurrent.conversion import convert
from hf_recurrent.conversion.output import TOKENIZER_FILES
from hf_recurrent.tokenization import byte_level_tokenizer


def test_output_folder_holds_model_config_and_tokenizer(fla_checkpoint: Path) -> None:
    byte_level_tokenizer().save_pretrained(fla_checkpoint)
    dst = fla_checkpoint.parent / "new" / "nested" / "out"  # missing parents are created
    assert main(["convert", "fla-gla", str(fla_checkpoint), str(dst)]) == 0

    names = {p.name for p in dst.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert not names & {"pytorch_model.bin", "model.safetensors.index.json"}
    assert {p.name for p in fla_checkpoint.iterdir() if p.name in TOKENIZER_FILES} <= names
    config = json.loads((dst / "config.json").read_text())
    assert config["model_type"] == "hfr_gla" and config["use_short_conv"] and not config["conv_bias"]
    assert json.loads((dst / "generation_config.json").read_text())["eos_token_id"] == 2
    assert AutoTokenizer.from_pretrained(dst)("hi")["input_ids"] == [104, 105]
    assert sorted(p.name for p in fla_checkpoint.parent.iterdir()) == ["new", "src"]  # no staging folder left


def test_weights_are_carried_exactly_and_dtype_is_kept(fla_checkpoint: Path, tmp_path: Path) -> None:
    source = load_file(fla_checkpoint / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in source.items()}, fla_checkpoint / "model.safetensors")
    convert("fla-gla", fla_checkpoint, tmp_path / "out")

    written = load_file(tmp_path / "out" / "model.safetensors")
    assert {t.dtype for t in written.values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    assert torch.equal(written["model.embed_tokens.weight"], source["model.embeddings.weight"].to(torch.bfloat16))
    assert torch.equal(written["model.layers.1.mixer.q_conv1d.weight"],
                       source["model.layers.1.attn.q_conv1d.weight"].to(torch.bfloat16))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.dtype == torch.bfloat16


def test_overwrite_replaces_the_destination(fla_checkpoint: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "stale.txt").write_text("old")
    convert("fla-gla", fla_checkpoint, dst, overwrite=True)
    assert not (dst / "stale.txt").exists() and (dst / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
