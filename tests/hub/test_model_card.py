"""Model cards: valid per huggingface_hub's parser, the facts right, templates checked."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import ModelCard

from hf_recurrent.cli import main as cli_main
from hf_recurrent.hub import CardInfo, ExportError, render_model_card, state_size
from hf_recurrent.hub.model_card import TEMPLATE_FIELDS, TEMPLATES_DIR, format_parameters
from hf_recurrent.modeling.registry import ARCHITECTURES
from hf_recurrent.tokenization import byte_level_tokenizer
from tests.conftest import build_model


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_renders_a_valid_card(name):
    """Also checks each architecture's own template (model_cards/<name>.md, or default.md) as a format string."""
    arch = ARCHITECTURES[name]
    model = build_model(arch, next(iter(arch.test_configs)))
    card = ModelCard(render_model_card(model, name, CardInfo(model_name=f"someone/{name}-tiny")))
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert {"hf_recurrent", name, arch.config_class.model_type} <= set(card.data.tags)
    assert card.data.license == "apache-2.0" and card.data.base_model is None
    assert f"{model.num_parameters():,}" in card.text
    assert f"{state_size(model).elements:,} elements" in card.text
    assert f'from_pretrained("someone/{name}-tiny", trust_remote_code=True)' in card.text
    assert not [f for f in TEMPLATE_FIELDS if f"{{{f}}}" in card.text]  # every field filled


def test_cli_export_card_carries_conversion_facts(tmp_path):
    model = build_model(ARCHITECTURES["gla"], "plain")
    model.save_pretrained(tmp_path / "src")
    byte_level_tokenizer().save_pretrained(tmp_path / "src")
    argv = ["export", str(tmp_path / "src"), str(tmp_path / "hub"), "--model-name", "me/gla-tiny",
            "--license", "mit", "--base-model", "fla-hub/gla-1.3B-100B", "--dataset", "cerebras/SlimPajama-627B",
            "--conversion-source", "fla-gla format, from fla-hub/gla-1.3B-100B",
            "--parity", "max |logit difference| 3.1e-6 against flash-linear-attention 0.6.0"]
    assert cli_main(argv) == 0
    card = ModelCard.load(tmp_path / "hub" / "README.md")
    assert card.data.license == "mit"
    assert card.data.base_model == "fla-hub/gla-1.3B-100B"
    assert card.data.datasets == ["cerebras/SlimPajama-627B"]
    assert {"hf_recurrent", "gla", "hfr_gla"} <= set(card.data.tags)
    assert "# me/gla-tiny" in card.text and "arXiv:2312.06635" in card.text
    assert "fla-gla format, from fla-hub/gla-1.3B-100B" in card.text
    assert "3.1e-6 against flash-linear-attention 0.6.0" in card.text
    assert 'AutoTokenizer.from_pretrained("me/gla-tiny", trust_remote_code=True)' in card.text


def test_state_size_counts_every_state_tensor_in_its_own_dtype():
    """GLA: per layer a float32 state [H, Dk, Dv], plus conv tails [key + kv_key + kv_value dims, W - 1] in the
    model's dtype when short convolutions are on."""
    plain = build_model(ARCHITECTURES["gla"], "plain")  # 2 layers, 2 heads, Dk = 16/2, Dv = 32/2, no conv
    assert (state_size(plain).elements, state_size(plain).bytes) == (2 * 2 * 8 * 16, 2 * 2 * 8 * 16 * 4)
    assert state_size(plain.to(torch.bfloat16)).bytes == 2 * 2 * 8 * 16 * 4  # the state stays float32
    conv = build_model(ARCHITECTURES["gla"], "conv-gqa")  # 4 heads (2 kv heads), Dk = 4, Dv = 8, W = 4
    rec, tail = 4 * 4 * 8, (16 + 8 + 16) * 3
    assert (state_size(conv).elements, state_size(conv).bytes) == (2 * (rec + tail), 2 * (rec + tail) * 4)
    assert state_size(conv.to(torch.bfloat16)).bytes == 2 * (rec * 4 + tail * 2)


def test_parameter_formatting():
    assert format_parameters(1_339_871_232) == "1,339,871,232 (1.34B)"
    assert format_parameters(63_200) == "63,200 (63.2K)"
    assert format_parameters(999) == "999"


def test_templates_may_use_a_subset_of_fields_and_literal_braces(tmp_path):
    (tmp_path / "gla.md").write_text("# {model_name}\n\nA dict: {{'a': 1}}.\n")
    text = render_model_card(build_model(ARCHITECTURES["gla"], "plain"), "gla", CardInfo(model_name="x/y"),
                             templates_dir=tmp_path)
    assert "# x/y" in text and "A dict: {'a': 1}." in text
    assert ModelCard(text).data.library_name == "transformers"


def test_template_errors_are_clear(tmp_path):
    model = build_model(ARCHITECTURES["gla"], "plain")
    (tmp_path / "gla.md").write_text("# {model_name} with {num_layers}\n")
    with pytest.raises(ExportError, match=r"unknown field\(s\) \['num_layers'\]"):
        render_model_card(model, "gla", CardInfo(), templates_dir=tmp_path)
    (tmp_path / "gla.md").write_text("# {model_name\n")
    with pytest.raises(ExportError, match="literal braces"):
        render_model_card(model, "gla", CardInfo(), templates_dir=tmp_path)
    (tmp_path / "gla.md").unlink()
    with pytest.raises(ExportError, match="no model card template gla.md nor default.md"):
        render_model_card(model, "gla", CardInfo(), templates_dir=tmp_path)


def test_architecture_without_template_gets_the_default():
    text = render_model_card(build_model(ARCHITECTURES["gla"], "plain"), "no-such-arch", CardInfo(model_name="a/b"))
    assert (TEMPLATES_DIR / "default.md").is_file() and "# a/b" in text and "Gated Linear Attention" not in text
