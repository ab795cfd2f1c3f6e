"""transformers' generation features work unchanged on our models: pipeline, streamers, stop strings, penalties."""

from __future__ import annotations

import torch
from transformers import GenerationConfig, TextIteratorStreamer, pipeline

from hf_recurrent.modeling.gla import HfrGLAConfig, HfrGLAForCausalLM
from hf_recurrent.tokenization import byte_level_tokenizer


def _model_and_tokenizer():
    tok = byte_level_tokenizer()
    torch.manual_seed(0)
    config = HfrGLAConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_heads=2, hidden_ratio=2,
                       initializer_range=0.3, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       bos_token_id=None)
    model = HfrGLAForCausalLM(config).eval()
    with torch.no_grad():  # printable ASCII only (other rows give logit 0, below the best printable one)
        printable = torch.zeros(config.vocab_size, dtype=torch.bool)
        printable[32:127] = True
        model.lm_head.weight[~printable] = 0
    return model, tok


def test_pipeline_text_generation_equals_generate():
    model, tok = _model_and_tokenizer()
    pipe = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
    text = pipe("hello", max_new_tokens=10, do_sample=False, return_full_text=False)[0]["generated_text"]
    ids = tok("hello", return_tensors="pt").input_ids
    direct = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
    assert text == tok.decode(direct[0, ids.shape[1] :], skip_special_tokens=True)


def test_streamer_yields_the_generated_text():
    model, tok = _model_and_tokenizer()
    ids = tok("abc", return_tensors="pt").input_ids
    streamer = TextIteratorStreamer(tok, skip_prompt=True)
    out = model.generate(ids, max_new_tokens=8, do_sample=False, streamer=streamer, pad_token_id=tok.pad_token_id)
    assert "".join(streamer) == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_stop_strings_end_generation_at_the_string():
    model, tok = _model_and_tokenizer()
    ids = tok("x", return_tensors="pt").input_ids
    free = model.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id)
    text = tok.decode(free[0, 1:])
    stop = text[3:5]  # a string the free generation produces: generation must stop right after it
    stopped = model.generate(ids, max_new_tokens=20, do_sample=False, stop_strings=[stop], tokenizer=tok,
                             pad_token_id=tok.pad_token_id)
    stopped_text = tok.decode(stopped[0, 1:])
    assert stopped_text.endswith(stop) and len(stopped_text) <= text.index(stop) + len(stop) + 1


def test_repetition_penalty_changes_greedy_output_as_transformers_defines_it():
    model, tok = _model_and_tokenizer()
    ids = tok("aaaa", return_tensors="pt").input_ids
    config = GenerationConfig(max_new_tokens=1, do_sample=False, repetition_penalty=5.0, pad_token_id=0,
                              output_scores=True, return_dict_in_generate=True)
    out = model.generate(ids, generation_config=config)
    logits = model(ids).logits[0, -1]
    seen = torch.unique(ids[0])
    penalised = logits.clone()
    penalised[seen] = torch.where(logits[seen] < 0, logits[seen] * 5.0, logits[seen] / 5.0)
    torch.testing.assert_close(out.scores[0][0], penalised, atol=1e-5, rtol=1e-5)
