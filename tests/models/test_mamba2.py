"""Mamba-2: parity with transformers' own Mamba2ForCausalLM (torch path) and the three checkpoint layouts.

transformers' Mamba2 is an independent implementation of the same published maths (its SSD chunk scan in PyTorch,
its own gated norm and conv): logits must agree to fp32 round-off (1e-4; observed ~5e-7), greedy generations
exactly, with and without left padding, for 1 and 2 groups and a length that is not a multiple of either chunk size.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from transformers import Mamba2Config as HFMamba2Config
from transformers import Mamba2ForCausalLM as HFMamba2ForCausalLM

from hf_recurrent.conversion import ConversionError, ConvertedCheckpoint, build_model, convert
from hf_recurrent.conversion.mamba2 import (
    convert_mamba2_ssm,
    mamba2_config_from_ssm,
    mamba2_state_dict,
)
from hf_recurrent.modeling.mamba2 import HfrMamba2ForCausalLM

PUBLISHED = Path(str(files("hf_recurrent.conversion") / "published"))
ATOL = 1e-4


def _hf_model(n_groups: int, vocab_size: int = 64, seed: int = 0) -> HFMamba2ForCausalLM:
    """A random transformers Mamba2 with non-default A_log, D, dt_bias and norm weights (so each one matters)."""
    torch.manual_seed(seed)
    config = HFMamba2Config(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, state_size=8, head_dim=16, num_heads=4,
        n_groups=n_groups, expand=2, conv_kernel=4, chunk_size=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    model = HFMamba2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(part in name for part in ("A_log", ".D", "dt_bias", "norm")):
                p.add_(0.3 * torch.randn_like(p))
    return model


def _converted(hf: HFMamba2ForCausalLM, tmp_path: Path) -> HfrMamba2ForCausalLM:
    hf.save_pretrained(tmp_path / "src")
    convert("hf-mamba2", tmp_path / "src", tmp_path / "dst")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "dst").eval()
    assert type(model) is HfrMamba2ForCausalLM
    return model


@pytest.mark.parametrize("n_groups", [1, 2])
def test_logits_and_greedy_generation_match_transformers(n_groups, tmp_path):
    hf = _hf_model(n_groups)
    ours = _converted(hf, tmp_path)
    ids = torch.randint(3, 64, (2, 13), generator=torch.Generator().manual_seed(1))  # 13: not a multiple of 8 or 16
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    padded = ids.masked_fill(mask == 0, 0)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=0)
        ref, got = hf(padded, attention_mask=mask).logits, ours(padded, attention_mask=mask).logits
        torch.testing.assert_close(got[mask.bool()], ref[mask.bool()], atol=ATOL, rtol=0)
        for inputs, attention in ((ids, None), (padded, mask)):
            kw = dict(attention_mask=attention, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
            assert ours.generate(inputs, **kw).tolist() == hf.generate(inputs, **kw).tolist()


def _ssm_source(hf: HFMamba2ForCausalLM, folder: Path, vocab_size: int, multiple: int) -> None:
    """Write ``hf``'s weights the way mamba-ssm publishes them: its config.json, its names, pytorch_model.bin."""
    folder.mkdir()
    c = hf.config
    (folder / "config.json").write_text(json.dumps(dict(
        d_model=c.hidden_size, d_intermediate=0, n_layer=c.num_hidden_layers, vocab_size=vocab_size,
        ssm_cfg=dict(layer="Mamba2", d_state=c.state_size, headdim=c.head_dim, ngroups=c.n_groups, chunk_size=8),
        attn_layer_idx=[], attn_cfg={}, rms_norm=True, residual_in_fp32=True, fused_add_norm=True,
        pad_vocab_size_multiple=multiple, tie_embeddings=False,
    )))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf.state_dict().items()}
    torch.save(state, folder / "pytorch_model.bin")


def test_mamba_ssm_layout_with_padded_vocabulary(tmp_path):
    hf = _hf_model(2, vocab_size=64)
    _ssm_source(hf, tmp_path / "ssm", vocab_size=50, multiple=16)  # 50 rounds up to the 64 embedding rows
    convert("mamba-ssm", tmp_path / "ssm", tmp_path / "dst")  # the shared format hands Mamba2 configs to us
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "dst").eval()
    assert type(ours) is HfrMamba2ForCausalLM and ours.config.vocab_size == 64
    ids = torch.randint(3, 50, (2, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=0)


def test_codestral_params_json_layout(tmp_path):
    hf = _hf_model(2)
    src = tmp_path / "codestral"
    src.mkdir()
    c = hf.config
    (src / "params.json").write_text(json.dumps(dict(
        dim=c.hidden_size, n_layers=c.num_hidden_layers, vocab_size=c.vocab_size, n_groups=c.n_groups,
        state_size=c.state_size, head_dim=c.head_dim, rms_norm=True, residual_in_fp32=True, fused_add_norm=True,
        pad_vocab_size_multiple=1, tie_embeddings=False,
    )))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.contiguous()
             for k, v in hf.state_dict().items()}
    save_file(state, src / "consolidated.safetensors")
    convert("hf-mamba2", src, tmp_path / "dst")
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "dst").eval()
    ids = torch.randint(3, 64, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "name,billions", [("130m", 0.13), ("370m", 0.37), ("780m", 0.78), ("1.3b", 1.3), ("2.7b", 2.7)]
)
def test_published_configs_map_on_the_meta_device(name, billions):
    """Build transformers' Mamba2 for each recorded config on the meta device, rename to mamba-ssm's keys, map."""
    source = json.loads((PUBLISHED / f"state-spaces_mamba2-{name}.json").read_text())
    config = mamba2_config_from_ssm(source)
    hf_config = HFMamba2Config(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        state_size=128, head_dim=64, num_heads=config.num_heads, n_groups=1, expand=2, conv_kernel=4,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        hf = HFMamba2ForCausalLM(hf_config)
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf.state_dict().items()}
    model = build_model(ConvertedCheckpoint(config, mamba2_state_dict(state, config)))
    count = sum(p.numel() for p in model.parameters())
    assert model.device.type == "meta" and count == sum(p.numel() for p in hf.parameters())
    assert abs(count / 1e9 - billions) / billions < 0.1, count  # the size in the checkpoint's name
    assert config.vocab_size == 50288 and config.tie_word_embeddings


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(ssm_cfg={"layer": "Mamba1"}), "ssm_cfg.layer must be 'Mamba2'"),
        (dict(attn_layer_idx=[3]), "hybrid attention"),
        (dict(d_intermediate=1024), "MLP"),
        (dict(ssm_cfg={"layer": "Mamba2", "headdim": 100}), "num_heads \\* head_dim"),
        (dict(ssm_cfg={"layer": "Mamba2", "norm_before_gate": True}), "norm_before_gate"),
    ],
)
def test_unrepresentable_configs_are_refused(change, message):
    source = {**json.loads((PUBLISHED / "state-spaces_mamba2-130m.json").read_text()), **change}
    with pytest.raises(ConversionError, match=message):
        mamba2_config_from_ssm(source)


def test_wrong_shape_is_refused_naming_the_key(tmp_path):
    hf = _hf_model(1)
    _ssm_source(hf, tmp_path / "ssm", vocab_size=64, multiple=16)
    checkpoint = convert_mamba2_ssm(tmp_path / "ssm")
    checkpoint.state_dict["model.layers.1.mixer.dt_bias"] = torch.zeros(5)
    with pytest.raises(ConversionError, match=r"model\.layers\.1\.mixer\.dt_bias.*expected \(4\).*found \(5\)"):
        build_model(checkpoint)
    assert not (tmp_path / "dst").exists()
