"""The common suite: every registered architecture and each of its test variants must pass all of these."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, DynamicCache
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from hf_recurrent.modeling.registry import ARCHITECTURES
from tests.conftest import ARCH_CASES, build_model

ATOL = 1e-4  # fp32 end to end on the CPU: chunked and recurrent orders of summation differ by ~1e-6 per layer


def _ids(vocab: int, batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=g)


@pytest.mark.parametrize("arch,variant", ARCH_CASES)
def test_prefill_in_chunks_then_decode_equals_full_forward(arch, variant):
    model = build_model(arch, variant)
    ids = _ids(model.config.vocab_size, 2, 23)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = DynamicCache(config=model.config)
        pieces = [model(ids[:, :9], cache=cache, use_cache=True).logits]  # prefill, chunk 1
        pieces.append(model(ids[:, 9:18], cache=cache, use_cache=True).logits)  # chunk 2 continues the state
        pieces += [model(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(18, 23)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch,variant", ARCH_CASES)
def test_prefill_chunked_by_config_equals_one_pass(arch, variant):
    """``prefill_chunk_length``: a long prompt goes through in pieces, state carried, same logits and generations."""
    model = build_model(arch, variant)
    pad = model.config.pad_token_id
    ids = _ids(model.config.vocab_size, 2, 17)
    mask = torch.ones_like(ids)
    ids[1, :4], mask[1, :4] = pad, 0  # left padding spans the first chunk boundary
    with torch.no_grad():
        model.config.prefill_chunk_length = None
        one_pass = model(ids, attention_mask=mask, use_cache=True).logits
        gen_one = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=pad)
        model.config.prefill_chunk_length = 3
        chunked = model(ids, attention_mask=mask, use_cache=True).logits
        last = model(ids, attention_mask=mask, use_cache=True, logits_to_keep=1).logits
        gen_chunked = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=pad)
    torch.testing.assert_close(chunked, one_pass, atol=ATOL, rtol=0)
    torch.testing.assert_close(last, one_pass[:, -1:], atol=ATOL, rtol=0)
    assert gen_chunked.tolist() == gen_one.tolist()


@pytest.mark.parametrize("arch,variant", ARCH_CASES)
def test_left_padded_batch_equals_each_row_alone(arch, variant):
    model = build_model(arch, variant)
    pad = model.config.pad_token_id
    rows = [_ids(model.config.vocab_size, 1, n, seed=n)[0] for n in (11, 6, 8)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :], mask[i, width - len(r) :] = r, 1
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, use_cache=False).logits
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=pad)
        for i, r in enumerate(rows):
            alone = model(r[None], use_cache=False).logits[0]
            torch.testing.assert_close(batched[i, width - len(r) :], alone, atol=ATOL, rtol=0)
            gen_alone = model.generate(r[None], max_new_tokens=6, do_sample=False, pad_token_id=pad)
            new_alone = gen_alone[0, len(r) :].tolist()  # shorter when this row stopped at EOS; the batch pads on
            assert gen[i, width : width + len(new_alone)].tolist() == new_alone
            assert set(gen[i, width + len(new_alone) :].tolist()) <= {pad}


@pytest.mark.parametrize("arch,variant", ARCH_CASES)
@pytest.mark.parametrize(
    "mode", [dict(do_sample=False), dict(do_sample=True, top_k=20, temperature=0.8), dict(num_beams=3)],
    ids=["greedy", "sample", "beam"],
)
def test_generate_with_cache_equals_without(arch, variant, mode):
    model = build_model(arch, variant)
    ids = _ids(model.config.vocab_size, 2, 7)
    outs = []
    for use_cache in (True, False):
        torch.manual_seed(1234)
        with torch.no_grad():
            outs.append(model.generate(ids, max_new_tokens=8, use_cache=use_cache, pad_token_id=0, **mode))
    assert outs[0].tolist() == outs[1].tolist()
    assert outs[0].shape[1] == 15 or model.config.eos_token_id in outs[0]


@pytest.mark.parametrize("arch,variant", ARCH_CASES)
def test_save_and_load_round_trip(arch, variant, tmp_path):
    model = build_model(arch, variant)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is arch.causal_lm_class
    volatile = ("transformers_version", "dtype", "_name_or_path")
    saved = {k: v for k, v in model.config.to_dict().items() if k not in volatile}
    assert {k: v for k, v in loaded.config.to_dict().items() if k not in volatile} == saved
    ids = _ids(model.config.vocab_size, 2, 9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)
    if model.config.tie_word_embeddings:
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is arch.model_class


@pytest.mark.parametrize("arch,variant", ARCH_CASES)
def test_gradient_checkpointing_gives_same_gradients(arch, variant):
    model = build_model(arch, variant).train()
    ids = _ids(model.config.vocab_size, 2, 12)
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(model.parameters()))
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("arch,variant", ARCH_CASES)
def test_loss_goes_down_on_a_toy_task(arch, variant):
    model = build_model(arch, variant, initializer_range=0.02).train()
    # A copy task with a fixed period: predictable from the recent past, so any working recurrence learns it.
    period = _ids(model.config.vocab_size, 4, 5)
    ids = period.repeat(1, 6)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("arch", ARCHITECTURES.values(), ids=lambda a: a.name)
def test_registered_with_auto_classes_without_name_collisions(arch):
    model_type = arch.config_class.model_type
    assert AutoConfig.for_model(model_type).__class__ is arch.config_class
    assert model_type not in CONFIG_MAPPING_NAMES  # transformers' own model types
    fla_models = pytest.importorskip("fla.models")
    fla_types = {getattr(fla_models, n).model_type for n in dir(fla_models) if n.endswith("Config")}
    assert model_type not in fla_types


@pytest.mark.parametrize("arch,variant", ARCH_CASES)
def test_beam_reorder_keeps_each_beams_own_state(arch, variant):
    """Reordering the cache (what beam search does) must equal running the reordered rows from scratch."""
    model = build_model(arch, variant)
    ids = _ids(model.config.vocab_size, 3, 10)
    order = torch.tensor([2, 0, 0])
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(ids[:, :9], cache=cache, use_cache=True)
        cache.reorder_cache(order)
        step = model(ids[order, 9:], cache=cache, use_cache=True).logits
        direct = model(ids[order], use_cache=False).logits[:, -1:]
    torch.testing.assert_close(step, direct, atol=ATOL, rtol=0)


def test_config_rejects_impossible_values():
    arch = ARCHITECTURES["gla"]
    with pytest.raises(Exception, match="num_heads"):
        arch.config_class(hidden_size=30, num_heads=4)
    with pytest.raises(Exception, match="feature_map"):
        arch.config_class(feature_map="cosine")


def test_position_ids_are_refused():
    model = build_model(ARCHITECTURES["gla"], "plain")
    ids = _ids(model.config.vocab_size, 1, 4)
    with pytest.raises(ValueError, match="position_ids"):
        model(ids, position_ids=torch.arange(4)[None])
    assert copy.deepcopy(model) is not model


@pytest.mark.parametrize("arch", ARCHITECTURES.values(), ids=list(ARCHITECTURES))
def test_malformed_inputs_get_clear_errors(arch):
    """Ids of the wrong shape, type or range and embeddings of the wrong width: a ValueError that says so (instead of
    an indexing error, or on a GPU a device-side assert)."""
    model = build_model(arch, next(iter(arch.test_configs)))
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    cases = [
        (dict(input_ids=torch.tensor([1, 2, 3])), r"input_ids must be \[batch, length\] integer token ids"),
        (dict(input_ids=torch.ones(1, 3)), r"integer token ids; got \(1, 3\) torch.float32"),
        (dict(input_ids=torch.tensor([[1, vocab]])), rf"input_ids must lie in \[0, {vocab}\)"),
        (dict(input_ids=torch.tensor([[-1, 2]])), rf"input_ids must lie in \[0, {vocab}\)"),
        (dict(inputs_embeds=torch.randn(1, 3, hidden + 1)), rf"inputs_embeds must be \[batch, length, {hidden}\]"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            model(**kwargs)


@pytest.mark.parametrize("arch,variant", ARCH_CASES)
def test_packed_sequences_equal_separate_rows(arch, variant):
    """A packed row with ``cu_seqlens`` (the training layout) gives each document's logits and gradients alone."""
    model = build_model(arch, variant).train()
    if not all(getattr(b.mixer, "supports_packed_sequences", False) for b in model.model.layers):
        with pytest.raises(ValueError, match="packed"):
            model(_ids(model.config.vocab_size, 1, 6), cu_seqlens=torch.tensor([0, 2, 6]))
        return
    docs = [_ids(model.config.vocab_size, 1, n, seed=n) for n in (7, 3, 12)]
    packed = torch.cat(docs, dim=1)
    cu = torch.tensor([0, 7, 10, 22])
    logits = model(packed, cu_seqlens=cu).logits
    alone = torch.cat([model(d).logits for d in docs], dim=1)
    torch.testing.assert_close(logits, alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("batch", [2, 1])
@pytest.mark.parametrize("arch,variant", ARCH_CASES)
def test_triton_backend_equals_reference_end_to_end(arch, variant, batch, monkeypatch):
    """The whole model on the Triton kernels (interpreted on the CPU: fused norms, grouped projections, the
    family's chunked and one-token kernels) gives the reference backend's logits, prefill and decode. A single
    sequence decodes on the one-row matrix-vector kernel."""
    model = build_model(arch, variant)
    ids = _ids(model.config.vocab_size, batch, 7)
    logits = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("HF_RECURRENT_BACKEND", backend)
        logits[backend] = _prefill_and_decode(model, ids)
    torch.testing.assert_close(logits["triton"], logits["reference"], atol=ATOL, rtol=0)


def _prefill_and_decode(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits of a 5-token prefill and two decode steps, float32."""
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        prefill = model(ids[:, :5], cache=cache, use_cache=True).logits
        steps = [model(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in (5, 6)]
    return torch.cat([prefill, *steps], dim=1).float()


@pytest.mark.parametrize("arch,variant", ARCH_CASES)
def test_triton_backend_in_bf16_is_as_accurate_as_the_reference(arch, variant, monkeypatch):
    """The model in bfloat16 on the Triton kernels (interpreted) is about as close to the float32 logits as the
    reference backend in bfloat16 is: both round activations to bf16 and keep states in float32, the kernels round a
    few more intermediates (products fed to dots), so within twice the reference's error (norm ratio), or 2e-2 where
    that is smaller. A kernel that mishandles bf16 is off by O(1) (the Triton 3.6 interpreter's raw-bits arithmetic
    was off by 1e9 before tests/triton_interpreter.py)."""
    model = build_model(arch, variant)
    ids = _ids(model.config.vocab_size, 2, 7)
    exact = _prefill_and_decode(model, ids)
    model = model.to(torch.bfloat16)
    errors = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("HF_RECURRENT_BACKEND", backend)
        errors[backend] = ((_prefill_and_decode(model, ids) - exact).norm() / exact.norm()).item()
    assert errors["triton"] <= max(2 * errors["reference"], 2e-2), errors
