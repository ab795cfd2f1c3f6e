"""Generation engine on a GPU: CUDA-graph decode equals eager decode; chunked prefill equals one pass."""

from __future__ import annotations

import pytest
import torch

from hf_recurrent.modeling.gla import HfrGLAConfig, HfrGLAForCausalLM

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _model(**overrides) -> HfrGLAForCausalLM:
    torch.manual_seed(0)
    config = HfrGLAConfig(**{**dict(vocab_size=512, hidden_size=256, num_hidden_layers=4, num_heads=4,
                                 use_short_conv=True, initializer_range=0.05), **overrides})
    return HfrGLAForCausalLM(config).cuda().eval()


@pytest.mark.parametrize("mode", [dict(do_sample=False), dict(num_beams=4)], ids=["greedy", "beam"])
def test_cuda_graph_decode_equals_eager(mode):
    model = _model()
    ids = torch.randint(3, 512, (3, 20), device="cuda")
    outs = []
    for graphs in (True, False):
        model.config.use_cuda_graphs = graphs
        outs.append(model.generate(ids, max_new_tokens=24, pad_token_id=0, **mode))
    assert "_decode_graph" in model.__dict__  # the graph path really ran
    assert outs[0].tolist() == outs[1].tolist()


def test_cuda_graph_logits_match_eager_each_step():
    model = _model()
    ids = torch.randint(3, 512, (2, 9), device="cuda")
    logits = []
    for graphs in (True, False):
        model.config.use_cuda_graphs = graphs
        out = model.generate(ids, max_new_tokens=12, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0)
        logits.append(torch.stack(out.logits))
    torch.testing.assert_close(logits[0], logits[1], atol=1e-4, rtol=1e-4)


def test_chunked_prefill_of_a_long_prompt_equals_one_pass():
    model = _model(num_hidden_layers=2, use_short_conv=False)
    ids = torch.randint(3, 512, (1, 65536), device="cuda")
    with torch.no_grad():
        model.config.prefill_chunk_length = None
        one = model(ids, use_cache=True, logits_to_keep=1).logits
        model.config.prefill_chunk_length = 4096
        chunked = model(ids, use_cache=True, logits_to_keep=1).logits
    torch.testing.assert_close(chunked, one, atol=2e-3, rtol=2e-3)


def test_one_graph_serves_every_generate_call_and_earlier_caches_stay_valid():
    """A second generate() reuses the captured graph (no new capture); a cache that lent the graph's buffers
    gets its own copy back and continues exactly as an eager cache would."""
    from transformers import DynamicCache

    model = _model()
    model.config.use_cuda_graphs = True
    ids = torch.randint(3, 512, (2, 12), device="cuda")
    first = model.generate(ids, max_new_tokens=8, pad_token_id=0, do_sample=False)
    runner = model.__dict__["_decode_graph"]
    second = model.generate(ids.flip(0), max_new_tokens=8, pad_token_id=0, do_sample=False)
    assert model.__dict__["_decode_graph"] is runner
    assert second.tolist() == first.flip(0).tolist()

    token = ids[:, -1:]
    with torch.no_grad():
        cache_a, cache_b = DynamicCache(config=model.config), DynamicCache(config=model.config)
        model(ids, cache=cache_a, use_cache=True)
        model(ids.flip(0), cache=cache_b, use_cache=True)
        model(token, cache=cache_a, use_cache=True)  # cache_a holds the buffers now
        model(token, cache=cache_b, use_cache=True)  # takes them over; cache_a gets copies
        graph_a = model(token, cache=cache_a, use_cache=True).logits
        model.config.use_cuda_graphs = False
        eager = DynamicCache(config=model.config)
        model(ids, cache=eager, use_cache=True)
        model(token, cache=eager, use_cache=True)
        eager_a = model(token, cache=eager, use_cache=True).logits
    torch.testing.assert_close(graph_a, eager_a, atol=1e-4, rtol=1e-4)
