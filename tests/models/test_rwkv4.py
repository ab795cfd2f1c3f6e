"""RWKV-4: a real trained checkpoint (rwkv.cpp's tiny model), transformers' RwkvForCausalLM parity, conversion errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from hf_recurrent.conversion import ConversionError, convert
from hf_recurrent.modeling.rwkv4 import HfrRWKV4ForCausalLM

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_DIR = REPO_ROOT / ".." / "shared" / "data" / "rwkv4-tiny"
PROMPT = b'"in'
ATOL = 1e-4  # fp32 on the CPU; rwkv.cpp and two independent implementations agree to 1.6e-6 (README of the data)


@pytest.fixture(scope="module")
def tiny_rwkv4(tmp_path_factory) -> Path:
    if not (TINY_DIR / "rwkv4-tiny-660K.pth").is_file():
        pytest.skip(f"real RWKV-4 checkpoint not present at {TINY_DIR} (shared test data)")
    return convert("rwkv4", TINY_DIR / "rwkv4-tiny-660K.pth", tmp_path_factory.mktemp("rwkv4") / "tiny")


def test_real_checkpoint_matches_rwkv_cpp_logits(tiny_rwkv4):
    expected = torch.from_numpy(np.fromfile(TINY_DIR / "expected-logits.bin", dtype=np.float32))
    model = AutoModelForCausalLM.from_pretrained(tiny_rwkv4, dtype=torch.float32).eval()
    assert isinstance(model, HfrRWKV4ForCausalLM)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size, cfg.mlp_size) == (4, 128, 256, 256)
    tokenizer = AutoTokenizer.from_pretrained(tiny_rwkv4)
    ids = torch.tensor([tokenizer(PROMPT.decode()).input_ids])
    assert ids[0].tolist() == list(PROMPT)
    with torch.no_grad():
        full = model(ids).logits[0, -1]
        cache = DynamicCache(config=cfg)
        for t in range(ids.shape[1]):
            step = model(ids[:, t : t + 1], cache=cache, use_cache=True).logits[0, -1]
    torch.testing.assert_close(full, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(step, expected, atol=ATOL, rtol=0)
    assert [tokenizer.decode([int(i)]) for i in full.topk(5).indices] == ["s", "t", "\\", "g", "d"]


def test_cli_converts_the_real_checkpoint(tiny_rwkv4, tmp_path):
    from hf_recurrent.cli import main

    assert main(["convert", "rwkv4", str(TINY_DIR / "rwkv4-tiny-660K.pth"), str(tmp_path / "out")]) == 0
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    reference = AutoModelForCausalLM.from_pretrained(tiny_rwkv4)
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def _hf_rwkv(seed: int = 0, **overrides):
    from transformers import RwkvConfig, RwkvForCausalLM

    torch.manual_seed(seed)  # attention_hidden_size != hidden_size breaks transformers' own cached RWKV
    config = RwkvConfig(vocab_size=60, hidden_size=32, num_hidden_layers=3, attention_hidden_size=32,
                        intermediate_size=48, **overrides)
    model = RwkvForCausalLM(config).eval()
    with torch.no_grad():  # transformers initialises some projections to zero: make every weight matter
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    hf = _hf_rwkv()
    src = tmp_path_factory.mktemp("hf-rwkv") / "src"
    hf.save_pretrained(src)
    ours = AutoModelForCausalLM.from_pretrained(convert("hf-rwkv", src, src.parent / "ours")).eval()
    return hf, ours


def test_hf_rwkv_parity_full_forward_and_greedy(hf_pair):
    hf, ours = hf_pair
    ids = torch.randint(0, 60, (2, 17), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits.float(), atol=ATOL, rtol=0)
        for row in ids[:, :5]:
            want = hf.generate(row[None], max_new_tokens=10, do_sample=False, use_cache=False)
            got = ours.generate(row[None], max_new_tokens=10, do_sample=False)
            assert got.tolist() == want.tolist()


def test_batched_cached_decode_equals_each_row_alone(hf_pair):
    """transformers' own RWKV gives wrong logits at batch > 1 in cached decode; ours must equal each row alone."""
    hf, ours = hf_pair
    ids = torch.randint(0, 60, (3, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        cache = DynamicCache(config=ours.config)
        steps = [ours(ids[:, :5], cache=cache, use_cache=True).logits]
        steps += [ours(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(5, 12)]
        batched = torch.cat(steps, dim=1)
        for i in range(3):
            alone = hf(ids[i : i + 1], use_cache=False).logits[0].float()
            torch.testing.assert_close(batched[i], alone, atol=ATOL, rtol=0)


def test_rwkv4_conversion_refuses_bad_checkpoints(tmp_path):
    good = {
        "emb.weight": torch.zeros(16, 8),
        "blocks.0.att.key.weight": torch.zeros(8, 8),
        "blocks.0.ffn.key.weight": torch.zeros(32, 8),
        "blocks.0.att.time_decay": torch.zeros(8),
    }
    cases = [
        ({k: v for k, v in good.items() if k != "emb.weight"}, "emb.weight"),
        ({k: v for k, v in good.items() if k != "blocks.0.att.time_decay"}, "RWKV-7"),
        ({**good, "blocks.2.ln1.weight": torch.zeros(8)}, r"blocks \[1\] are missing"),
        (good, "missing key 'model.layers.0.mixer.value.weight'"),  # inferred config, then the shared key check
        ({**good, "emb.weight": torch.zeros(16)}, "2 dimensions"),
    ]
    for i, (state, message) in enumerate(cases):
        torch.save(state, tmp_path / f"bad{i}.pth")
        with pytest.raises(ConversionError, match=message):
            convert("rwkv4", tmp_path / f"bad{i}.pth", tmp_path / f"out{i}")
        assert not (tmp_path / f"out{i}").exists()
    torch.save({"emb.weight": torch.zeros(2, 2), "args": argparse.Namespace(x=1)}, tmp_path / "pickled.pth")
    with pytest.raises(ConversionError, match="weights_only"):  # arbitrary objects are never unpickled
        convert("rwkv4", tmp_path / "pickled.pth", tmp_path / "out")


def test_world_tokenizer_greedy_longest_match_and_round_trip(tmp_path):
    from hf_recurrent.tokenization_world import RwkvWorldTokenizer, read_world_vocab

    lines = ["1 'a' 1", "2 'b' 1", "3 'ab' 2", "4 'abc' 3", "5 'c' 1", "6 ' ' 1", "7 'é' 2", "8 b'\\xc3' 1",
             "9 b'\\xa9' 1"]
    vocab_file = tmp_path / "rwkv_vocab_v20230424.txt"
    vocab_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = RwkvWorldTokenizer(str(vocab_file))
    assert tok("abcab é").input_ids == [4, 3, 6, 7]
    assert tok.decode([4, 3, 6, 7, 0]) == "abcab é"
    tok.save_pretrained(tmp_path / "saved")
    assert AutoTokenizer.from_pretrained(tmp_path / "saved")("cab").input_ids == [5, 3]
    (tmp_path / "bad.txt").write_text("1 'ab' 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not 3 bytes long"):
        read_world_vocab(tmp_path / "bad.txt")


def _blinkdl_rwkv4_meta(layers: int, C: int, vocab: int) -> dict[str, torch.Tensor]:
    """Shapes of BlinkDL's RWKV-4 layout (dim_att = C, dim_ffn = 4C), on the meta device."""
    m = lambda *s: torch.empty(*s, device="meta")  # noqa: E731
    sd = {"emb.weight": m(vocab, C), "blocks.0.ln0.weight": m(C), "blocks.0.ln0.bias": m(C),
          "ln_out.weight": m(C), "ln_out.bias": m(C), "head.weight": m(vocab, C)}
    for i in range(layers):
        p = f"blocks.{i}."
        sd.update({p + n: m(C) for n in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.time_decay",
                                         "att.time_first")})
        sd.update({p + n: m(1, 1, C) for n in ("att.time_mix_k", "att.time_mix_v", "att.time_mix_r",
                                               "ffn.time_mix_k", "ffn.time_mix_r")})
        sd.update({p + f"att.{n}.weight": m(C, C) for n in ("key", "value", "receptance", "output")})
        sd.update({p + "ffn.key.weight": m(4 * C, C), p + "ffn.receptance.weight": m(C, C),
                   p + "ffn.value.weight": m(C, 4 * C)})
    return sd


@pytest.mark.parametrize("layers,width", [(12, 768), (24, 1024), (24, 2048), (32, 2560), (32, 4096), (40, 5120)],
                         ids=["169M", "430M", "1.5B", "3B", "7B", "14B"])
def test_pile_sizes_map_on_the_meta_device(layers, width):
    """The RWKV-4 Pile sizes (layers x width, vocabulary 50277) convert key for key without using memory."""
    from hf_recurrent.conversion import ConvertedCheckpoint, build_model
    from hf_recurrent.conversion.rwkv4 import rwkv4_config_from_state, rwkv4_state_dict_from_blinkdl

    state = _blinkdl_rwkv4_meta(layers, width, 50277)
    config = rwkv4_config_from_state(state)
    model = build_model(ConvertedCheckpoint(config, rwkv4_state_dict_from_blinkdl(state, config.hidden_size)))
    assert model.device.type == "meta"
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel() for t in state.values())


def test_world_tokenizer_equals_blinkdl_on_the_real_vocabulary():
    """The published world vocabulary (65,530 ids, shipped inside BlinkDL's rwkv package): our ids equal his
    TRIE_TOKENIZER's on mixed-script text, and decoding gives the text back."""
    import os

    import rwkv
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    from hf_recurrent.tokenization_world import RwkvWorldTokenizer

    vocab_file = os.path.join(os.path.dirname(rwkv.__file__), "rwkv_vocab_v20230424.txt")
    ours, theirs = RwkvWorldTokenizer(vocab_file), TRIE_TOKENIZER(vocab_file)
    assert ours.vocab_size == 65530  # ids 0..65529; the models pad their embedding to 65536
    texts = [
        "The quick brown fox jumps over the lazy dog.\n\n  def main():\n\treturn 42",
        "Être ou ne pas être — 这是一个问题。 Привет, мир! こんにちは 🌍🚀",
        "User: What is RWKV?\n\nAssistant: An RNN with transformer-level performance.",
        "\x00\x7f weird bytes \u200b and spaces     at the end   ",
    ]
    for text in texts:
        ids = ours.encode(text, add_special_tokens=False)
        assert ids == theirs.encode(text)
        assert ours.decode(ids) == text
