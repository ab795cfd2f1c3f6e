"""Outputs of flash-linear-attention's own RetNet on the CPU, for the parity tests of ``fla-retnet``.

Run as ``TRITON_INTERPRET=1 python -m tests.models.fla_retnet_reference OUT``: for each case of :data:`CASES` it
writes ``OUT/<case>/checkpoint`` (fla's ``save_pretrained``: config.json + model.safetensors) and
``OUT/<case>/reference.pt``: input ids and fla's fp32 logits; a left-padded batch, its mask and fla's logits;
a prompt and fla's greedy continuation (full recomputation each step). It runs in a subprocess because Triton's
interpreter must be chosen before fla defines its kernels; the interpreter shims are the GLA parity run's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from tests.conversion.fla_checkpoints import fla_greedy, randomize_
from tests.conversion.fla_reference import _patch_triton_interpreter

TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_heads=2, hidden_ratio=2, fuse_cross_entropy=False)
CASES = {
    "plain": dict(),
    "gqa-tied-unfused": dict(num_heads=4, num_kv_heads=2, tie_word_embeddings=True, fuse_norm=False, fuse_swiglu=False),
}
SEQ_LEN, PROMPT_LEN, NEW_TOKENS = 21, 6, 6  # 21: not a multiple of any chunk size


def main(out: Path) -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("run with TRITON_INTERPRET=1 (fla's Triton kernels on the CPU)")
    _patch_triton_interpreter()
    from fla.models import RetNetConfig, RetNetForCausalLM

    for index, (name, overrides) in enumerate(CASES.items()):
        model = RetNetForCausalLM(RetNetConfig(**{**TINY, **overrides})).eval()
        randomize_(model, seed=index)
        model.save_pretrained(out / name / "checkpoint")
        gen = torch.Generator().manual_seed(100 + index)
        ids = torch.randint(3, 64, (2, SEQ_LEN), generator=gen)
        mask = torch.ones_like(ids)
        mask[1, :7] = 0
        padded = ids.masked_fill(mask == 0, 0)
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits.float()
            padded_logits = model(input_ids=padded, attention_mask=mask, use_cache=False).logits.float()
        torch.save(
            dict(input_ids=ids, logits=logits, padded=padded, mask=mask, padded_logits=padded_logits,
                 greedy=fla_greedy(model, ids[:, :PROMPT_LEN], NEW_TOKENS)),
            out / name / "reference.pt",
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
