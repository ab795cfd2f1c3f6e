"""RWKV-7: parity with BlinkDL's own inference code (the ``rwkv`` package) on random weights in the published
``.pth`` layout, conversion of layouts with and without block 0's ``v0/v1/v2``, and bad checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from hf_recurrent.conversion import ConversionError, convert

REPO_ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-4  # fp32 on the CPU, 3 layers; both sides sum in different orders (measured differences ~1e-6)


def blinkdl_rwkv7_state(vocab=70, C=64, layers=3, head=16, ranks=(32, 32, 32, 32), ffn=128, v_in_block0=False,
                        seed=0, meta=False) -> dict[str, torch.Tensor]:
    """Random weights in BlinkDL's published RWKV-7 layout, scaled so every part of the model matters (``meta``:
    shapes only, on the meta device)."""
    g = torch.Generator().manual_seed(seed)
    if meta:
        rnd = lambda *s, std=0.3: torch.empty(*s, device="meta")  # noqa: E731
        uni = lambda *s: torch.empty(*s, device="meta")  # noqa: E731
    else:
        rnd = lambda *s, std=0.3: torch.randn(*s, generator=g) * std  # noqa: E731
        uni = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    dw, da, dv, dg = ranks
    sd = {"emb.weight": rnd(vocab, C, std=1.0), "blocks.0.ln0.weight": 1 + rnd(C, std=0.1),
          "blocks.0.ln0.bias": rnd(C, std=0.1)}
    for i in range(layers):
        p = f"blocks.{i}."
        for ln in ("ln1", "ln2"):
            sd[p + ln + ".weight"], sd[p + ln + ".bias"] = 1 + rnd(C, std=0.1), rnd(C, std=0.1)
        att = p + "att."
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            sd[att + name] = uni(1, 1, C)
        sd[att + "w0"] = rnd(1, 1, C, std=1.0) - 1
        sd[att + "w1"], sd[att + "w2"] = rnd(C, dw), rnd(dw, C)
        sd[att + "a0"], sd[att + "a1"], sd[att + "a2"] = rnd(1, 1, C), rnd(C, da), rnd(da, C)
        if i > 0 or v_in_block0:
            sd[att + "v0"], sd[att + "v1"], sd[att + "v2"] = rnd(1, 1, C) + 0.5, rnd(C, dv), rnd(dv, C)
        sd[att + "g1"], sd[att + "g2"] = rnd(C, dg), rnd(dg, C)
        sd[att + "k_k"], sd[att + "k_a"] = 0.85 + rnd(1, 1, C, std=0.1), 1 + rnd(1, 1, C, std=0.1)
        sd[att + "r_k"] = rnd(C // head, head)
        for name in ("receptance", "key", "value", "output"):
            sd[att + name + ".weight"] = rnd(C, C, std=C**-0.5)
        sd[att + "ln_x.weight"], sd[att + "ln_x.bias"] = 1 + rnd(C, std=0.1), rnd(C, std=0.1)
        sd[p + "ffn.x_k"] = uni(1, 1, C)
        sd[p + "ffn.key.weight"], sd[p + "ffn.value.weight"] = rnd(ffn, C, std=C**-0.5), rnd(C, ffn, std=ffn**-0.5)
    sd["ln_out.weight"], sd["ln_out.bias"] = 1 + rnd(C, std=0.1), rnd(C, std=0.1)
    sd["head.weight"] = rnd(vocab, C, std=C**-0.5)
    return sd


@pytest.fixture(scope="module")
def parity_case(tmp_path_factory):
    pytest.importorskip("rwkv")
    folder = tmp_path_factory.mktemp("rwkv7")
    torch.save(blinkdl_rwkv7_state(), folder / "model.pth")
    tokens = torch.randint(0, 70, (19,), generator=torch.Generator().manual_seed(5)).tolist()
    run = subprocess.run(
        [sys.executable, "-m", "tests.models.rwkv7_reference", str(folder / "model.pth"),
         ",".join(map(str, tokens)), str(folder / "reference.pt")],
        cwd=REPO_ROOT, env={**os.environ, "RWKV_V7_ON": "1", "RWKV_JIT_ON": "0", "RWKV_CUDA_ON": "0"},
        capture_output=True, text=True, timeout=300,
    )
    if run.returncode != 0:
        pytest.fail(f"rwkv package run failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    reference = torch.load(folder / "reference.pt", weights_only=True)
    model = AutoModelForCausalLM.from_pretrained(convert("rwkv7", folder / "model.pth", folder / "ours")).eval()
    return model, torch.tensor([tokens]), reference


def test_rwkv7_matches_blinkdl_full_forward(parity_case):
    model, ids, reference = parity_case
    assert (model.config.num_hidden_layers, model.config.num_heads, model.config.head_size) == (3, 4, 16)
    with torch.no_grad():
        logits = model(ids).logits[0]
    torch.testing.assert_close(reference["steps"], reference["sequence"], atol=ATOL, rtol=0)  # their two paths
    torch.testing.assert_close(logits, reference["sequence"], atol=ATOL, rtol=0)


def test_rwkv7_matches_blinkdl_token_by_token_and_in_chunks(parity_case):
    model, ids, reference = parity_case
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        pieces = [model(ids[:, :7], cache=cache, use_cache=True).logits[0]]
        pieces += [model(ids[:, t : t + 1], cache=cache, use_cache=True).logits[0] for t in range(7, ids.shape[1])]
    torch.testing.assert_close(torch.cat(pieces), reference["steps"], atol=ATOL, rtol=0)


def test_rwkv7_greedy_generation_matches_blinkdl(parity_case):
    model, ids, reference = parity_case
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=1, do_sample=False)
    assert out[0, -1].item() == reference["sequence"][-1].argmax().item()


def test_rwkv7_block0_value_lora_is_dropped_and_shapes_inferred(tmp_path):
    state = blinkdl_rwkv7_state(C=32, layers=2, head=8, ranks=(32, 64, 32, 96), v_in_block0=True, seed=1)
    torch.save(state, tmp_path / "model.pth")
    model = AutoModelForCausalLM.from_pretrained(convert("rwkv7", tmp_path / "model.pth", tmp_path / "out"))
    assert model.config.lora_ranks == {"w": 32, "a": 64, "v": 32, "g": 96}
    assert not hasattr(model.model.layers[0].mixer, "v1")
    torch.testing.assert_close(model.model.layers[1].mixer.v0.data, state["blocks.1.att.v0"].reshape(-1))


def test_rwkv7_conversion_refuses_bad_checkpoints(tmp_path):
    good = blinkdl_rwkv7_state(C=32, layers=2, head=8, seed=2)
    bad_cases = [
        ({k: v for k, v in good.items() if k != "blocks.0.att.r_k"}, "not an RWKV-7 checkpoint"),
        ({**good, "blocks.0.att.r_k": torch.zeros(3, 8)}, "heads x head size"),
        ({**good, "blocks.1.att.w2": torch.zeros(5, 32)}, r"shape mismatch for 'model.layers.1.mixer.w2'"),
        ({k: v for k, v in good.items() if k != "blocks.1.att.v2"}, "missing key 'model.layers.1.mixer.v2'"),
    ]
    for i, (state, message) in enumerate(bad_cases):
        torch.save(state, tmp_path / f"bad{i}.pth")
        with pytest.raises(ConversionError, match=message):
            convert("rwkv7", tmp_path / f"bad{i}.pth", tmp_path / f"out{i}")
        assert not (tmp_path / f"out{i}").exists()


@pytest.mark.parametrize("layers,width,vocab", [(12, 768, 65536), (24, 2048, 65536), (32, 2560, 65536)],
                         ids=["0.1B", "1.5B", "2.9B"])
def test_published_sizes_map_on_the_meta_device(layers, width, vocab):
    """RWKV-7 World sizes (layers x width), shapes of BlinkDL's layout with its LoRA-width rules; no memory used."""
    from hf_recurrent.conversion import ConvertedCheckpoint, build_model
    from hf_recurrent.conversion.rwkv7 import rwkv7_config_from_state, rwkv7_state_dict_from_blinkdl
    from hf_recurrent.modeling.rwkv7 import HfrRWKV7Config

    ranks = HfrRWKV7Config(hidden_size=width).lora_ranks
    with torch.device("meta"):
        state = blinkdl_rwkv7_state(vocab=vocab, C=width, layers=layers, head=64, ffn=4 * width,
                                    ranks=tuple(ranks[n] for n in "wavg"), meta=True)
    config = rwkv7_config_from_state(state)
    model = build_model(ConvertedCheckpoint(config, rwkv7_state_dict_from_blinkdl(state)))
    assert model.device.type == "meta"
    assert sum(p.numel() for p in model.parameters()) == sum(
        t.numel() for k, t in state.items() if k not in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"))
