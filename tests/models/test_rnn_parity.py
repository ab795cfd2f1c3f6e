"""``torch-lstm`` / ``torch-gru`` conversions: parity with ``torch.nn.LSTM`` / ``nn.GRU`` language models.

The source is PyTorch's word-language-model layout (``encoder`` embedding, multi-layer ``rnn``, ``decoder`` head)
built here with torch's own modules and saved with ``torch.save(state_dict)``. After ``convert`` and
``from_pretrained``: logits equal, every layer's final ``(h, c)`` in our cache equals ``nn.LSTM``'s ``(h_n, c_n)``
(layer-level parity), greedy continuations are identical. float32 on the CPU: the two compute the same products in
different summation orders (our gate matmul is per gate block), so differences are ~1e-7; bounded at 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
from transformers import AutoModelForCausalLM, DynamicCache

from hf_recurrent.conversion import ConversionError, convert

TOL = dict(atol=1e-5, rtol=1e-5)


class WordLM(nn.Module):
    """The module layout of PyTorch's examples/word_language_model ``RNNModel`` (encoder, rnn, decoder)."""

    def __init__(self, rnn: type[nn.Module], vocab: int, hidden: int, layers: int, tied: bool, bias: bool = True):
        super().__init__()
        self.encoder = nn.Embedding(vocab, hidden)
        self.rnn = rnn(hidden, hidden, layers, batch_first=True, bias=bias)
        self.decoder = nn.Linear(hidden, vocab)
        if tied:
            self.decoder.weight = self.encoder.weight

    def forward(self, ids, state=None):
        out, state = self.rnn(self.encoder(ids), state)
        return self.decoder(out), state


def _greedy(lm: WordLM, ids: torch.Tensor, steps: int) -> torch.Tensor:
    logits, state = lm(ids)
    out = ids
    for _ in range(steps):
        nxt = logits[:, -1:].argmax(-1)
        out = torch.cat([out, nxt], 1)
        logits, state = lm(nxt, state)
    return out


CASES = {
    "lstm-3layers-untied": ("torch-lstm", nn.LSTM, dict(layers=3, tied=False)),
    "lstm-tied-nobias": ("torch-lstm", nn.LSTM, dict(layers=2, tied=True, bias=False)),
    "gru-2layers-tied": ("torch-gru", nn.GRU, dict(layers=2, tied=True)),
}


@pytest.mark.parametrize("case", CASES)
def test_converted_lm_equals_torch_module(case, tmp_path: Path):
    fmt, rnn, kwargs = CASES[case]
    torch.manual_seed(0)
    lm = WordLM(rnn, vocab=50, hidden=24, **kwargs).eval()
    torch.save(lm.state_dict(), tmp_path / "lm.pt")
    convert(fmt, tmp_path / "lm.pt", tmp_path / "out")
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert ours.config.num_hidden_layers == kwargs["layers"] and ours.config.tie_word_embeddings == kwargs["tied"]

    ids = torch.randint(0, 50, (3, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, (h_n, *c_n) = lm(ids)[0], (lambda s: s if isinstance(s, tuple) else (s,))(lm(ids)[1])
        cache = DynamicCache(config=ours.config)
        got = ours(ids, cache=cache, use_cache=True).logits
        torch.testing.assert_close(got, expected, **TOL)
        for k in range(kwargs["layers"]):  # layer-level parity: each layer's final state
            state = cache.layers[k].recurrent_states[0]  # [B, S, 1 head, D]
            torch.testing.assert_close(state[:, 0, 0], h_n[k], **TOL)
            if c_n:
                torch.testing.assert_close(state[:, 1, 0], c_n[0][k], **TOL)
        gen = ours.generate(ids, max_new_tokens=8, do_sample=False)
    assert gen.tolist() == _greedy(lm, ids, 8).tolist()


def _save(tmp_path: Path, state: dict) -> Path:
    path = tmp_path / "lm.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "fmt,make,message",
    [
        ("torch-lstm", lambda: WordLM(nn.GRU, 20, 8, 1, False).state_dict(), "must be [4 * hidden, hidden]"),
        ("torch-gru", lambda: {k: v for k, v in WordLM(nn.GRU, 20, 8, 1, False).state_dict().items()
                               if k != "decoder.weight"}, "missing key 'decoder.weight'"),
        ("torch-lstm", lambda: {**WordLM(nn.LSTM, 20, 8, 1, False).state_dict(), "encoder.weight": torch.zeros(20, 6)},
         "embedding width 6 differs from the hidden size 8"),
        ("torch-lstm", lambda: {**WordLM(nn.LSTM, 20, 8, 1, False).state_dict(),
                                "rnn.weight_ih_l0_reverse": torch.zeros(32, 8)}, "bidirectional"),
        ("torch-lstm", lambda: {**WordLM(nn.LSTM, 20, 8, 1, False).state_dict(),
                                "rnn.weight_hh_l0": torch.zeros(32, 9)},
         "'rnn.weight_hh_l0' must be [4 * hidden, hidden]"),
    ],
    ids=["gru-as-lstm", "no-head", "embedding-width", "bidirectional", "bad-recurrent-shape"],
)
def test_bad_input_is_refused_clearly(fmt, make, message, tmp_path: Path):
    src = _save(tmp_path, make())
    with pytest.raises(ConversionError) as info:
        convert(fmt, src, tmp_path / "out")
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


def test_configs_refuse_impossible_values():
    from hf_recurrent import HfrLSTMConfig, HfrSLSTMConfig

    with pytest.raises(Exception, match="divisible by num_heads"):
        HfrLSTMConfig(hidden_size=30, num_heads=4)
    with pytest.raises(Exception, match="plain_stack layers have no MLP"):
        HfrLSTMConfig(hidden_size=32, num_heads=1, plain_stack=True)
    with pytest.raises(Exception, match="conv_size"):
        HfrSLSTMConfig(hidden_size=32, num_heads=2, conv_size=1)


def test_packed_sequences_are_refused_clearly():
    from hf_recurrent import HfrLSTMConfig, HfrLSTMForCausalLM

    model = HfrLSTMForCausalLM(HfrLSTMConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_heads=1))
    with pytest.raises(ValueError, match="cannot run packed sequences"):
        model(torch.zeros(1, 6, dtype=torch.long), cu_seqlens=torch.tensor([0, 2, 6]), use_cache=False)
