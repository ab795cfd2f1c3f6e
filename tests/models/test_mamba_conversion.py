"""Mamba conversion: ``mamba-ssm`` (state-spaces layout) parity, published configs on the meta device, bad input.

The mamba-ssm checkpoint is written the way ``MambaLMHeadModel.save_pretrained`` writes it (``config.json`` with
``d_model``/``n_layer``/``ssm_cfg``, ``pytorch_model.bin`` of its state dict, tied ``lm_head.weight`` included),
from a random transformers ``MambaForCausalLM`` whose parameter names are mamba-ssm's but for
``backbone.embeddings`` (mamba-ssm: ``backbone.embedding``). mamba-ssm itself needs CUDA to install.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, MambaConfig, MambaForCausalLM

import hf_recurrent.conversion.mamba_ssm as mamba_ssm_format
from hf_recurrent.conversion import ConversionError, ConvertedCheckpoint, build_model, convert
from hf_recurrent.conversion.mamba_ssm import mamba_config_from_ssm, mamba_state_dict

PUBLISHED = sorted(Path(str(files("hf_recurrent.conversion") / "published")).glob("state-spaces_mamba-*.json"))
SIZES = {"130m": 129_135_360, "370m": 371_516_416, "790m": 793_204_224, "1.4b": 1_372_178_432, "2.8b": 2_768_345_600}


def _reference_model(d_model=32, n_layer=2, vocab=61, seed=0) -> MambaForCausalLM:
    torch.manual_seed(seed)
    padded = vocab + (-vocab) % 8
    cfg = MambaConfig(vocab_size=padded, hidden_size=d_model, num_hidden_layers=n_layer, state_size=16,
                      initializer_range=0.2)
    model = MambaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("mixer.D", "conv1d.bias")):
                p.normal_(0.0, 0.5)
    return model


def _ssm_state_dict(model: MambaForCausalLM) -> dict[str, torch.Tensor]:
    return {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone() for k, v in model.state_dict().items()}


def _write_mamba_ssm(model: MambaForCausalLM, folder: Path, vocab: int = 61, **overrides) -> Path:
    folder.mkdir(parents=True)
    config = dict(d_model=model.config.hidden_size, n_layer=model.config.num_hidden_layers, vocab_size=vocab,
                  ssm_cfg={}, rms_norm=True, residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8)
    (folder / "config.json").write_text(json.dumps({**config, **overrides}))
    torch.save(_ssm_state_dict(model), folder / "pytorch_model.bin")
    return folder


def test_mamba_ssm_checkpoint_converts_with_identical_logits_and_generations(tmp_path):
    ref = _reference_model()
    convert("mamba-ssm", _write_mamba_ssm(ref, tmp_path / "src"), tmp_path / "dst")
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "dst").eval()
    assert ours.config.vocab_size == 64 and ours.config.tie_word_embeddings
    ids = torch.randint(3, 61, (2, 17), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, atol=1e-4, rtol=0)
        kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert ours.generate(ids, **kwargs).tolist() == ref.generate(ids, **kwargs).tolist()


def test_bf16_checkpoint_keeps_A_log_float32(tmp_path):
    ref = _reference_model().to(torch.bfloat16)
    convert("mamba-ssm", _write_mamba_ssm(ref, tmp_path / "src"), tmp_path / "dst")
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "dst", dtype=torch.bfloat16)
    mixer = ours.model.layers[1].mixer
    assert mixer.A_log.dtype == torch.float32 and mixer.x_proj.weight.dtype == torch.bfloat16
    assert torch.equal(mixer.A_log, ref.backbone.layers[1].mixer.A_log.float())


def test_the_five_state_spaces_mamba_configs_are_recorded():
    assert sorted(p.stem.split("mamba-")[1] for p in PUBLISHED) == sorted(SIZES)


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.stem)
def test_published_config_maps_every_key_and_shape(path: Path):
    """mamba-ssm's parameter set for the recorded config (built by transformers' MambaForCausalLM on meta, whose
    names and shapes are mamba-ssm's) maps onto ours key for key, shape for shape."""
    cfg = json.loads(path.read_text())
    config = mamba_config_from_ssm(cfg)
    with torch.device("meta"):
        source = MambaForCausalLM(MambaConfig(vocab_size=config.vocab_size, hidden_size=cfg["d_model"],
                                              num_hidden_layers=cfg["n_layer"]))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in source.state_dict().items()}
    model = build_model(ConvertedCheckpoint(config, mamba_state_dict(state, config)))
    assert model.device.type == "meta"
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == sum(p.numel() for p in source.parameters()) == SIZES[path.stem.split("mamba-")[1]]
    assert config.vocab_size == 50280 and config.d_inner == 2 * cfg["d_model"] and config.state_size == 16


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(rms_norm=False), "LayerNorm"),
        (dict(d_intermediate=128), "MLP"),
        (dict(attn_layer_idx=[1]), "attention"),
        (dict(ssm_cfg={"d_state": 16, "headdim": 64}), "headdim"),
    ],
)
def test_unrepresentable_mamba_ssm_configs_are_refused(tmp_path, overrides, match):
    src = _write_mamba_ssm(_reference_model(), tmp_path / "src", **overrides)
    with pytest.raises(ConversionError, match=match):
        convert("mamba-ssm", src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_wrong_shapes_and_missing_keys_are_named(tmp_path):
    src = _write_mamba_ssm(_reference_model(), tmp_path / "src")
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    state["backbone.layers.0.mixer.A_log"] = torch.zeros(64, 8)
    del state["backbone.layers.1.mixer.D"]
    torch.save(state, src / "pytorch_model.bin")
    with pytest.raises(ConversionError) as err:
        convert("mamba-ssm", src, tmp_path / "dst")
    assert "model.layers.0.mixer.A_log" in str(err.value) and "(64, 16)" in str(err.value)
    assert "model.layers.1.mixer.D" in str(err.value)
    assert not (tmp_path / "dst").exists()


def test_config_that_is_not_mamba_ssm_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "mamba", "hidden_size": 32}))
    with pytest.raises(ConversionError, match="d_model"):
        convert("mamba-ssm", src, tmp_path / "dst")
    with pytest.raises(ConversionError, match="hf-mamba expects"):
        (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
        convert("hf-mamba", src, tmp_path / "dst")


def test_mamba2_checkpoints_are_handed_to_the_mamba2_converter(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    config = {"d_model": 64, "n_layer": 2, "vocab_size": 50, "ssm_cfg": {"layer": "Mamba2"}}
    (src / "config.json").write_text(json.dumps(config))
    seen = []
    import hf_recurrent.conversion.mamba2 as mamba2_format

    monkeypatch.setattr(mamba2_format, "convert_mamba2_ssm", lambda path: seen.append(path) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        mamba_ssm_format.load_mamba_ssm(src)
    assert seen == [src]
    monkeypatch.delattr(mamba2_format, "convert_mamba2_ssm")
    with pytest.raises(ConversionError, match="no Mamba-2 converter"):
        mamba_ssm_format.load_mamba_ssm(src)
