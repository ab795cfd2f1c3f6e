"""Every recorded published config converts on the meta device: fla's model, mapped, fits ours key for key.

fla's own ``GLAForCausalLM`` is built from each recorded ``config.json`` on the meta device; its state dict (meta
tensors, in the current layout and in fla's 2024 layout) goes through the ``fla-gla`` mapping and the shared
checks against our model, also on meta. No weight is read or materialised.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from hf_recurrent.conversion import ConvertedCheckpoint, build_model
from hf_recurrent.conversion.fla_gla import gla_config_from_fla, gla_state_dict_from_fla

from .fla_checkpoints import to_2024_layout

PUBLISHED = sorted(Path(str(files("hf_recurrent.conversion") / "published")).glob("fla-hub_gla-*.json"))


def _fla_meta_state(fla_config: dict) -> tuple[dict[str, torch.Tensor], int]:
    from fla.models import GLAConfig as FlaGLAConfig
    from fla.models import GLAForCausalLM as FlaGLAForCausalLM

    with torch.device("meta"):
        model = FlaGLAForCausalLM(FlaGLAConfig(**fla_config))
    return model.state_dict(), sum(p.numel() for p in model.parameters())


def test_the_three_fla_hub_gla_configs_are_recorded() -> None:
    assert [p.stem for p in PUBLISHED] == ["fla-hub_gla-1.3B-100B", "fla-hub_gla-2.7B-100B", "fla-hub_gla-340M-15B"]


@pytest.mark.parametrize("layout", ["current", "2024"])
@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.stem)
def test_published_config_maps_every_key_and_shape(path: Path, layout: str) -> None:
    fla_config = json.loads(path.read_text())
    fla_state, fla_params = _fla_meta_state(fla_config)
    if layout == "2024":
        fla_state = to_2024_layout(fla_state, fla_config["num_hidden_layers"])
    config = gla_config_from_fla(fla_config, fla_state)
    model = build_model(ConvertedCheckpoint(config, gla_state_dict_from_fla(fla_state, config)))

    assert model.device.type == "meta"
    assert sum(p.numel() for p in model.parameters()) == fla_params
    assert model.config.tie_word_embeddings == fla_config["tie_word_embeddings"]
    assert model.config.hidden_size == fla_config["hidden_size"]
    assert model.config.num_hidden_layers == fla_config["num_hidden_layers"]
