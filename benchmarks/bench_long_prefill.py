"""Peak GPU memory of prefilling long prompts: chunked prefill keeps it independent of the prompt length.

GLA 1.3B config (hidden 2048, 24 layers), random weights, bf16, batch 1: peak allocated memory and time of one
forward with a cache over prompts of 8k..128k tokens, logits for the last position only (what generate asks),
with ``prefill_chunk_length`` 8192 (default) and, where it fits, in one pass.

    python benchmarks/bench_long_prefill.py --out benchmarks/results/long_prefill_<gpu>.json
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import DynamicCache

from benchmarks.common import environment, write_json
from hf_recurrent.modeling.gla import HfrGLAConfig, HfrGLAForCausalLM


def measure(model, length: int, chunk: int | None) -> dict:
    model.config.prefill_chunk_length = chunk
    ids = torch.randint(3, model.config.vocab_size, (1, length), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    try:
        with torch.no_grad():
            logits = model(ids, cache=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1).logits
        torch.cuda.synchronize()
    except torch.OutOfMemoryError:
        return dict(tokens=length, chunk=chunk, error="out of memory")
    return dict(tokens=length, chunk=chunk, seconds=time.perf_counter() - start,
                peak_extra_gib=(torch.cuda.max_memory_allocated() - base) / 2**30,
                last_logits=logits[0, -1, :8].float().tolist())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", nargs="*", type=int, default=[8192, 32768, 131072])
    parser.add_argument("--out", default="benchmarks/results/long_prefill.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = HfrGLAConfig(hidden_size=2048, num_hidden_layers=24, num_heads=4, vocab_size=32000)
    model = HfrGLAForCausalLM(config).to("cuda", torch.bfloat16).eval()
    rows = []
    for length in args.lengths:
        for chunk in (8192, None):
            rows.append(measure(model, length, chunk))
            print(rows[-1], flush=True)
    write_json(args.out, dict(environment=environment(), model="GLA 1.3B config, bf16, batch 1", rows=rows))


if __name__ == "__main__":
    main()
