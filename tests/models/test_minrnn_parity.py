"""``mingru`` conversion: parity with minGRU-pytorch's own language model (``minLM``), minGRU and minLSTM.

minGRU-pytorch computes the recurrence with a log-space Heinsen scan (``logcumsumexp``), we with the direct scan
``h_t = a_t h_{t-1} + b_t`` in float32: the same numbers up to rounding (~1e-6 relative over these lengths), bounded
at 1e-5 on the logits. Greedy continuations are compared with minLM re-run on the whole prefix at each step (its
cached path does not exist with the convolution, and for minLSTM it applies ``g`` to the carried state, a deviation
from the paper that we do not copy).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from hf_recurrent.conversion import ConversionError, convert

minlm = pytest.importorskip("minGRU_pytorch.minLM")

CASES = {
    "mingru-conv-expand": dict(expansion=1.5, enable_conv=True),
    "mingru-noconv-noproj": dict(expansion=1.0, enable_conv=False),
    "minlstm-conv": dict(expansion=1.5, enable_conv=True, use_lstm=True),
}


def _greedy(lm, ids: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        ids = torch.cat([ids, lm(ids)[:, -1:].argmax(-1)], dim=1)
    return ids


@pytest.mark.parametrize("case", CASES)
def test_converted_minlm_equals_mingru_pytorch(case, tmp_path: Path):
    torch.manual_seed(0)
    lm = minlm.minLM(num_tokens=256, dim=24, depth=2, ff_mult=2, **CASES[case]).eval()
    torch.save(lm.state_dict(), tmp_path / "minlm.pt")
    convert("mingru", tmp_path / "minlm.pt", tmp_path / "out")
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert ours.config.model_type == ("hfr_minlstm" if CASES[case].get("use_lstm") else "hfr_mingru")
    assert (tmp_path / "out" / "tokenizer.json").exists() or (tmp_path / "out" / "tokenizer_config.json").exists()

    ids = torch.randint(0, 256, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = lm(ids)
        torch.testing.assert_close(ours(ids, use_cache=False).logits, expected, atol=1e-5, rtol=1e-5)
        cache = DynamicCache(config=ours.config)  # prefill then token-by-token decode through our cache
        pieces = [ours(ids[:, :7], cache=cache, use_cache=True).logits]
        pieces += [ours(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(7, 13)]
        torch.testing.assert_close(torch.cat(pieces, 1), expected, atol=1e-5, rtol=1e-5)
        gen = ours.generate(ids, max_new_tokens=6, do_sample=False)
        assert gen.tolist() == _greedy(lm, ids, 6).tolist()


def test_not_a_minlm_state_dict_is_refused(tmp_path: Path):
    state = minlm.minLM(num_tokens=16, dim=8, depth=1).state_dict()
    state.pop("layers.0.2.to_hidden_and_gate.weight")
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ConversionError, match="missing key 'layers.0.2.to_hidden_and_gate.weight'"):
        convert("mingru", tmp_path / "bad.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_configs_refuse_impossible_values():
    from hf_recurrent import HfrMinGRUConfig

    with pytest.raises(Exception, match="hidden_act"):
        HfrMinGRUConfig(hidden_act="swish")
    with pytest.raises(Exception, match="proj_out=False needs expansion=1"):
        HfrMinGRUConfig(hidden_size=32, expansion=1.5, proj_out=False)
