"""Bad input: every case raises ConversionError naming the problem, and leaves no output folder behind.

The cases go through :func:`hf_recurrent.conversion.convert`, which the ``convert`` command calls.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_recurrent.conversion import ConversionError, convert

WEIGHTS = "model.safetensors"


def _edit_weights(src: Path, edit) -> None:
    state = load_file(src / WEIGHTS)
    edit(state)
    save_file(state, src / WEIGHTS, metadata={"format": "pt"})


def _edit_config(src: Path, **changes) -> None:
    config = json.loads((src / "config.json").read_text())
    config.update(changes)
    (src / "config.json").write_text(json.dumps(config))


def _convert_fails(src: Path, *patterns: str) -> str:
    """Convert ``src`` into a sibling folder; assert the error contains every pattern and nothing was written."""
    dst = src.parent / "out" / "converted"
    before = sorted(src.parent.iterdir())
    with pytest.raises(ConversionError) as info:
        convert("fla-gla", src, dst)
    message = str(info.value)
    for pattern in patterns:
        assert pattern in message, f"{pattern!r} not in error message:\n{message}"
    assert sorted(src.parent.iterdir()) == before, "conversion left files or folders behind"
    return message


def test_missing_key(fla_checkpoint: Path) -> None:
    _edit_weights(fla_checkpoint, lambda s: s.pop("model.layers.1.attn.k_proj.weight"))
    _convert_fails(fla_checkpoint, "missing key 'model.layers.1.mixer.k_proj.weight'", "expected shape (16, 32)")


def test_wrong_shape(fla_checkpoint: Path) -> None:
    def edit(state):
        state["model.layers.0.attn.v_proj.weight"] = torch.zeros(31, 32)

    _edit_weights(fla_checkpoint, edit)
    _convert_fails(fla_checkpoint, "'model.layers.0.mixer.v_proj.weight'", "expected (32, 32), found (31, 32)")


def test_unexpected_key(fla_checkpoint: Path) -> None:
    def edit(state):
        state["model.layers.0.attn.h_conv1d.weight"] = torch.zeros(32, 1, 4)

    _edit_weights(fla_checkpoint, edit)
    _convert_fails(fla_checkpoint, "unexpected key 'model.layers.0.attn.h_conv1d.weight'", "(32, 1, 4)")


def test_every_problem_is_reported_at_once(fla_checkpoint: Path) -> None:
    def edit(state):
        del state["model.norm.weight"]
        state["lm_head.weight"] = torch.zeros(64, 16)

    _edit_weights(fla_checkpoint, edit)
    message = _convert_fails(fla_checkpoint, "2 problem(s)", "missing key 'model.norm.weight'", "'lm_head.weight'")
    assert "expected (64, 32), found (64, 16)" in message


def test_fused_mlp_of_wrong_size(fla_checkpoint: Path) -> None:
    def edit(state):
        del state["model.layers.0.mlp.up_proj.weight"]
        state["model.layers.0.mlp.gate_proj.weight"] = torch.zeros(300, 32)

    _edit_weights(fla_checkpoint, edit)
    _convert_fails(fla_checkpoint, "fused model.layers.0.mlp.gate_proj.weight", "expected (512, 32), found (300, 32)")


def test_nan_weights(fla_checkpoint: Path) -> None:
    def edit(state):
        state["model.layers.0.attn.q_proj.weight"][3, 4] = float("nan")
        state["model.norm.weight"][0] = float("inf")

    _edit_weights(fla_checkpoint, edit)
    _convert_fails(fla_checkpoint, "non-finite", "'model.layers.0.mixer.q_proj.weight' (1 NaN", "'model.norm.weight'")


def test_unknown_format(fla_checkpoint: Path) -> None:
    with pytest.raises(ConversionError, match=r"unknown conversion format 'fla-glaa'; known formats: .*fla-gla"):
        convert("fla-glaa", fla_checkpoint, fla_checkpoint.parent / "out")
    assert not (fla_checkpoint.parent / "out").exists()


def test_truncated_safetensors(fla_checkpoint: Path) -> None:
    data = (fla_checkpoint / WEIGHTS).read_bytes()
    (fla_checkpoint / WEIGHTS).write_bytes(data[: len(data) // 2])
    _convert_fails(fla_checkpoint, f"cannot read {fla_checkpoint / WEIGHTS}", "corrupt or truncated")


def test_garbage_bin(fla_checkpoint: Path) -> None:
    (fla_checkpoint / WEIGHTS).unlink()
    (fla_checkpoint / "pytorch_model.bin").write_bytes(b"\x80\x04 this is not a checkpoint" * 50)
    _convert_fails(fla_checkpoint, f"cannot read {fla_checkpoint / 'pytorch_model.bin'}", "corrupt file")


class _Payload:
    """Stands for an arbitrary object in a pickle: weights_only loading must refuse to build it."""

    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_bin_with_arbitrary_objects_is_refused(fla_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    state = load_file(fla_checkpoint / WEIGHTS)
    (fla_checkpoint / WEIGHTS).unlink()
    with open(fla_checkpoint / "pytorch_model.bin", "wb") as f:
        pickle.dump({**state, "extra": _Payload()}, f)
    _convert_fails(fla_checkpoint, "pytorch_model.bin", "only weights_only loading is allowed")
    assert "unpickled arbitrary code" not in capsys.readouterr().out


def test_missing_shard(fla_checkpoint: Path) -> None:
    state = load_file(fla_checkpoint / WEIGHTS)
    (fla_checkpoint / WEIGHTS).unlink()
    shards = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    weight_map = {key: shards[i % 2] for i, key in enumerate(state)}
    (fla_checkpoint / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    save_file({k: v for k, v in state.items() if weight_map[k] == shards[0]}, fla_checkpoint / shards[0])
    _convert_fails(fla_checkpoint, "shard model-00002-of-00002.safetensors", "is missing")


def test_no_weights_file(fla_checkpoint: Path) -> None:
    (fla_checkpoint / WEIGHTS).unlink()
    _convert_fails(fla_checkpoint, "no weights file in", "model.safetensors")


def test_missing_config(fla_checkpoint: Path) -> None:
    (fla_checkpoint / "config.json").unlink()
    _convert_fails(fla_checkpoint, "config.json not found in")


def test_malformed_config(fla_checkpoint: Path) -> None:
    (fla_checkpoint / "config.json").write_text('{"model_type": "gla", "hidden_size": 32,')
    _convert_fails(fla_checkpoint, "malformed JSON in", "config.json")


def test_missing_source(tmp_path: Path) -> None:
    _convert_fails(tmp_path / "nowhere", "does not exist")


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"model_type": "mamba"}, "model_type 'gla'"),
        ({"use_gv": True}, "value gates (use_gv=True)"),
        ({"attn": {"layers": [1], "num_heads": 2}}, "hybrid softmax-attention layers"),
        ({"attnres_block_size": 4}, "attnres_block_size=4"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"feature_map": "elu"}, "feature_map='elu'"),
        ({"num_heads": 3}, "cannot represent"),
        ({"d_model": 32, "n_layer": 2}, "original gated_linear_attention repository"),
    ],
)
def test_unrepresentable_config(fla_checkpoint: Path, changes: dict, pattern: str) -> None:
    _edit_config(fla_checkpoint, **changes)
    _convert_fails(fla_checkpoint, pattern)


def test_existing_destination_is_refused_and_kept(fla_checkpoint: Path) -> None:
    dst = fla_checkpoint.parent / "existing"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="already exists; pass --overwrite"):
        convert("fla-gla", fla_checkpoint, dst)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in fla_checkpoint.parent.iterdir()) == ["existing", "src"]


def test_failed_overwrite_keeps_the_old_destination(fla_checkpoint: Path) -> None:
    dst = fla_checkpoint.parent / "existing"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    (fla_checkpoint / "config.json").unlink()
    with pytest.raises(ConversionError, match="config.json not found"):
        convert("fla-gla", fla_checkpoint, dst, overwrite=True)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in fla_checkpoint.parent.iterdir()) == ["existing", "src"]


def test_command_line_reports_a_conversion_error_in_one_line(fla_checkpoint: Path, capsys) -> None:
    from hf_recurrent.cli import main

    state = load_file(fla_checkpoint / "model.safetensors")
    state.pop("model.norm.weight")
    save_file(state, fla_checkpoint / "model.safetensors")
    dst = fla_checkpoint.parent / "out"
    assert main(["convert", "fla-gla", str(fla_checkpoint), str(dst)]) == 2
    err = capsys.readouterr().err
    assert "conversion failed" in err and "model.norm.weight" in err and "Traceback" not in err
    assert not dst.exists()
