"""Mamba parity with transformers' own ``MambaForCausalLM`` / ``FalconMambaForCausalLM`` (their PyTorch path, CPU).

A random transformers model is saved with ``save_pretrained``, converted with ``hf-mamba`` and loaded through the
Auto classes. Both compute in float32 with the same sequential-scan maths, so logits agree to ~1e-6; the bound is
1e-4 as in the common suite. Greedy generations must be identical token for token.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    DynamicCache,
    FalconMambaConfig,
    FalconMambaForCausalLM,
    MambaConfig,
    MambaForCausalLM,
)

from hf_recurrent.conversion import convert
from hf_recurrent.modeling.mamba import HfrMambaConfig, HfrMambaForCausalLM

ATOL = 1e-4
TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=8, expand=2, conv_kernel=4,
            initializer_range=0.2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
SOURCES = {
    "mamba": lambda: MambaForCausalLM(MambaConfig(**TINY)),
    "falcon_mamba-untied-bias": lambda: FalconMambaForCausalLM(
        FalconMambaConfig(**TINY, tie_word_embeddings=False, use_bias=True, use_conv_bias=False)
    ),
}


@pytest.fixture(scope="module", params=sorted(SOURCES))
def pair(request, tmp_path_factory):
    """(transformers' model, ours converted from its ``save_pretrained`` folder), both eval, float32."""
    torch.manual_seed(0)
    ref = SOURCES[request.param]().eval()
    with torch.no_grad():  # non-trivial D, dt biases and conv biases: every parameter matters
        for name, p in ref.named_parameters():
            if name.endswith(("mixer.D", "conv1d.bias", "in_proj.bias", "out_proj.bias")):
                p.normal_(0.0, 0.5)
    root = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(root / "src")
    convert("hf-mamba", root / "src", root / "dst")
    ours = AutoModelForCausalLM.from_pretrained(root / "dst").eval()
    assert type(ours) is HfrMambaForCausalLM
    return ref, ours


def _ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 64, (batch, length), generator=torch.Generator().manual_seed(seed))


def _left_padded(lengths=(12, 5, 9)):
    rows = [_ids(1, n, seed=n)[0] for n in lengths]
    width = max(lengths)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :], mask[i, width - len(r) :] = r, 1
    return ids, mask


@torch.no_grad()
def test_logits_match_transformers(pair):
    ref, ours = pair
    ids = _ids(2, 40)  # longer than the reference scan's chunk of 32 steps
    torch.testing.assert_close(ours(ids).logits, ref(ids).logits.float(), atol=ATOL, rtol=0)


@torch.no_grad()
def test_left_padded_batch_matches_transformers_on_each_row(pair):
    """Our left-padded batch against transformers on each row alone (with ``in_proj`` biases transformers' own padded
    batch differs from its rows alone: it zeroes the mixer input, not the convolution input, at padded positions)."""
    ref, ours = pair
    ids, mask = _left_padded()
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)
    logits = ours(ids, attention_mask=mask).logits
    generated = ours.generate(ids, attention_mask=mask, **kwargs)
    for i in range(ids.shape[0]):
        row = ids[i, mask[i].bool()][None]
        torch.testing.assert_close(logits[i, mask[i].bool()], ref(row).logits[0].float(), atol=ATOL, rtol=0)
        assert generated[i, ids.shape[1] :].tolist() == ref.generate(row, **kwargs)[0, row.shape[1] :].tolist()
    if not ref.config.use_bias:  # then transformers' padded batch is right too, and equal
        assert generated.tolist() == ref.generate(ids, attention_mask=mask, **kwargs).tolist()


@torch.no_grad()
def test_greedy_generation_matches_transformers(pair):
    ref, ours = pair
    ids = _ids(2, 7)
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert ours.generate(ids, **kwargs).tolist() == ref.generate(ids, **kwargs).tolist()


@torch.no_grad()
def test_multi_token_forward_on_a_cache_carries_the_state(pair):
    """Chunks of several tokens on an existing cache continue the scan (transformers restarts it from zero there):
    prefill 9 + chunk of 8 + chunk of 4 must equal one full forward of the 21 tokens, which equals transformers'."""
    ref, ours = pair
    ids = _ids(2, 21)
    full = ref(ids).logits.float()
    cache = DynamicCache(config=ours.config)
    pieces = [ours(ids[:, s:e], cache=cache, use_cache=True).logits for s, e in ((0, 9), (9, 17), (17, 21))]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=ATOL, rtol=0)


def test_bf16_load_keeps_A_log_in_float32(pair, tmp_path):
    _, ours = pair
    ours.to(torch.bfloat16).save_pretrained(tmp_path)
    ours.float()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    mixer = loaded.model.layers[0].mixer
    assert mixer.A_log.dtype == torch.float32 and mixer.in_proj.weight.dtype == torch.bfloat16
    ids = _ids(1, 6)
    with torch.no_grad():
        bf16 = loaded(ids).logits
    torch.testing.assert_close(bf16, ours(ids).logits, atol=0.15, rtol=0.05)  # bf16 weights, fp32 residual stream


def test_model_to_bf16_keeps_A_log_float32_and_exact():
    torch.manual_seed(0)
    model = HfrMambaForCausalLM(HfrMambaConfig(**TINY))
    before = model.model.layers[0].mixer.A_log.detach().clone()
    model.to(torch.bfloat16)
    mixer = model.model.layers[0].mixer
    assert mixer.A_log.dtype == torch.float32 and torch.equal(mixer.A_log.detach(), before)
    assert mixer.in_proj.weight.dtype == torch.bfloat16 and isinstance(mixer.A_log, torch.nn.Parameter)
    with torch.no_grad():
        assert model(_ids(1, 5)).logits.isfinite().all()


def test_vocabulary_is_padded_like_mamba_ssm():
    assert HfrMambaConfig(vocab_size=50277, pad_vocab_size_multiple=8).vocab_size == 50280
    assert HfrMambaConfig(vocab_size=50280, pad_vocab_size_multiple=8).vocab_size == 50280
    assert HfrMambaConfig(hidden_size=2560).time_step_rank == 160


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(hidden_ratio=4), "no MLP"), (dict(conv_kernel=1), "conv_kernel"), (dict(time_step_rank=0), "time_step_rank"),
     (dict(time_step_min=0.5, time_step_max=0.1), "time_step_min")],
)
def test_config_rejects_impossible_values(kwargs, match):
    with pytest.raises(Exception, match=match):
        HfrMambaConfig(**kwargs)


def test_padded_positions_leave_the_state_unchanged():
    """A cache advanced by a fully padded chunk (mask 0 everywhere) holds exactly the state it held before."""
    torch.manual_seed(0)
    model = HfrMambaForCausalLM(HfrMambaConfig(**{**TINY, "initializer_range": 0.2})).eval()
    ids = _ids(2, 6)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(ids, cache=cache, use_cache=True)
        before = [layer.recurrent_states[0].clone() for layer in cache.layers]
        model(ids[:, :3], attention_mask=torch.cat([torch.ones(2, 6), torch.zeros(2, 3)], 1).long(), cache=cache)
    for layer, state in zip(cache.layers, before):
        assert torch.equal(layer.recurrent_states[0], state)
