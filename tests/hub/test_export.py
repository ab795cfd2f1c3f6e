"""``hf-recurrent export``: every registered architecture loads from its export with hf_recurrent hidden.

One subprocess (see load_without_package.py) loads all the exports with ``trust_remote_code=True`` while
``import hf_recurrent`` and ``import triton`` fail, and must reproduce the original's logits and greedy generation
exactly (same code, same fp32 CPU arithmetic, same thread count), also when loaded with ``device_map="auto"``
from sharded safetensors, and when loaded by repo id from an offline Hub cache (transformers' Hub code path,
which fetches each remote-code file by name and runs check_imports on it). The tokenizer must encode alike.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hf_recurrent
from hf_recurrent.cli import main as cli_main
from hf_recurrent.conversion.errors import ConversionError
from hf_recurrent.hub import ExportError, export_model
from hf_recurrent.modeling.registry import ARCHITECTURES
from hf_recurrent.tokenization import byte_level_tokenizer
from tests.conftest import build_model
from tests.hub.remote import COMMIT, into_hub_cache, run_loader

ARCH_NAMES = list(ARCHITECTURES)
MAX_NEW_TOKENS = 8
TEXT = "def main():\n    return 42"
WORLD_TOKENIZER_ARCHS = {"rwkv4", "rwkv7"}


def _inputs(vocab: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch: rows of 7 and 4 tokens."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, vocab, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    ids[1, :3], mask[1, :3] = pad, 0
    return ids, mask


def _tokenizer(name: str, folder: Path):
    """RWKV's world tokenizer (a tokenizer class of hf_recurrent, exported as remote code) for the RWKV
    architectures, over a tiny vocabulary with multi-byte entries; the byte-level fast tokenizer for the others."""
    if name not in WORLD_TOKENIZER_ARCHS:
        return byte_level_tokenizer()
    from hf_recurrent.tokenization_world import VOCAB_FILE, world_tokenizer

    tokens = [chr(c) for c in range(32, 127)] + ["def", "return", "    ", "ma", "main"]
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{i} {t!r} {len(t.encode())}" for i, t in enumerate(tokens, start=1)] + ["101 '\\n' 1"]
    (folder / VOCAB_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return world_tokenizer(folder / VOCAB_FILE)


def _export_one(name: str, root: Path) -> tuple[dict, dict]:
    model = build_model(ARCHITECTURES[name], next(iter(ARCHITECTURES[name].test_configs)))
    src, dst = root / f"{name}-src", root / f"{name}-hub"
    model.save_pretrained(src)
    tokenizer = _tokenizer(name, root / f"{name}-vocab")
    tokenizer.save_pretrained(src)
    export_model(src, dst, max_shard_size="20KB")
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    ids, mask = _inputs(model.config.vocab_size, pad)
    with torch.no_grad():
        original = {
            "logits": model(ids, attention_mask=mask, use_cache=False).logits,
            "tokenized": tokenizer(TEXT)["input_ids"],
            "tokenizer_class": type(tokenizer).__name__,
            "generated": model.generate(ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                        pad_token_id=pad),
        }
    into_hub_cache(dst, root / "hub-cache", f"hfr-test/{name}")
    case = {"name": name, "dir": str(dst), "hub_id": f"hfr-test/{name}", "input_ids": ids.tolist(),
            "attention_mask": mask.tolist(), "max_new_tokens": MAX_NEW_TOKENS, "pad_token_id": pad, "text": TEXT}
    return case, original


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export the first test variant of every architecture; run the hidden-package loader once over all of them.

    An architecture that fails here (export or original) is recorded in ``errors`` and fails only its own tests.
    """
    root = tmp_path_factory.mktemp("export")
    cases, originals, errors = [], {}, {}
    for name in ARCHITECTURES:
        try:
            case, originals[name] = _export_one(name, root)
            cases.append(case)
        except Exception:  # noqa: BLE001  (reported by that architecture's tests)
            errors[name] = traceback.format_exc(limit=-6)
    report, remote = run_loader(root, cases, ["hf_recurrent", "triton"], "cpu", torch.get_num_threads())
    errors.update(report["errors"])
    return root, report, originals, remote, errors


def _ok(exported, name: str):
    root, report, originals, remote, errors = exported
    if name in errors:
        pytest.fail(f"export or remote load of {name} failed: {errors[name]}")
    return root, report[name], originals.get(name), remote.get(name)


def test_package_and_triton_are_hidden_in_the_loading_process(exported):
    assert exported[1]["hidden"] == {"hf_recurrent": True, "triton": True}


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_export_loads_without_hf_recurrent_and_matches_exactly(exported, name):
    _, report, original, remote = _ok(exported, name)
    assert report["class_module"].startswith("transformers_modules.")
    assert report["config_module"].startswith("transformers_modules.")
    assert torch.equal(remote["logits"], original["logits"])
    assert remote["generated"].tolist() == original["generated"].tolist()
    # sharded safetensors + device_map="auto" (accelerate's dispatch on the CPU)
    assert report["sharded_devices"] == ["cpu"]
    assert torch.equal(remote["sharded_logits"], original["logits"])
    # the tokenizer: the byte-level one is transformers' own class; RWKV's world tokenizer travels as remote code
    assert report["tokenized"] == original["tokenized"] and len(original["tokenized"]) > 3
    custom = original["tokenizer_class"] == "RwkvWorldTokenizer"
    assert report["tokenizer_module"].startswith("transformers_modules." if custom else "transformers.")
    # by repo id through the Hub code path (offline cache), where every file is fetched and import-checked
    assert report["hub_class_module"].startswith("transformers_modules.") and COMMIT in report["hub_class_module"]
    assert torch.equal(remote["hub_logits"], original["logits"])


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_hub_loader_finds_every_file_and_does_not_demand_triton(exported, name):
    """From the Hub, transformers fetches the files it finds from the entry module and runs check_imports on each."""
    root, report, _, _ = _ok(exported, name)
    folder = root / f"{name}-hub"
    code = sorted(p.name for p in folder.glob("*.py"))
    assert report["files_fetched_from_hub"] == code
    kernels = Path(hf_recurrent.__file__).parent / "kernels"
    for family in (p.name for p in kernels.iterdir() if f"kernels_{p.name}.py" in code):
        if (kernels / family / "triton.py").is_file():  # the Triton backend travels with the reference
            assert f"kernels_{family}_triton.py" in code
    assert report["check_imports"] == dict.fromkeys(code, "ok")


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_export_folder_layout(exported, name):
    root = _ok(exported, name)[0]
    arch, folder = ARCHITECTURES[name], root / f"{name}-hub"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == arch.config_class.model_type
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
    assert config["auto_map"]["AutoModelForCausalLM"].endswith("." + arch.causal_lm_class.__name__)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and sorted(set(index["weight_map"].values())) == [p.name for p in shards]
    for shard in map(load_file, shards):  # "20KB" = 20,000 bytes of tensors, unless one tensor alone is larger
        assert sum(t.numel() * t.element_size() for t in shard.values()) <= 20_000 or len(shard) == 1
    for file in ("tokenizer_config.json", "generation_config.json", "README.md"):
        assert (folder / file).is_file()
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pkl"))


def test_default_export_is_one_safetensors_file(tmp_path):
    build_model(ARCHITECTURES["gla"], "plain").save_pretrained(tmp_path / "src")
    export_model(tmp_path / "src", tmp_path / "hub")
    assert (tmp_path / "hub" / "model.safetensors").is_file()
    assert not (tmp_path / "hub" / "model.safetensors.index.json").exists()
    assert not (tmp_path / "hub" / "tokenizer.json").exists()  # none in SRC: none copied, the card says so
    assert "no tokenizer ships" in (tmp_path / "hub" / "README.md").read_text()


def test_export_refuses_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no config.json"):
        export_model(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "hfr_gla", "hidden_size": -3}')
    with pytest.raises(ExportError, match="cannot load the model"):
        export_model(tmp_path / "broken", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    build_model(ARCHITECTURES["gla"], "plain").save_pretrained(tmp_path / "src")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConversionError, match="already exists"):
        export_model(tmp_path / "src", tmp_path / "taken")
    with pytest.raises(ExportError, match="not the source"):
        export_model(tmp_path / "src", tmp_path / "src", overwrite=True)
    assert cli_main(["export", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
