"""Run BlinkDL's own RWKV-7 inference code (the ``rwkv`` package) on a ``.pth``; save its logits.

``python -m tests.models.rwkv7_reference MODEL.pth TOKENS_CSV OUT.pt`` writes ``{"sequence": [T, V] logits of one
forward_seq call with full_output, "steps": [T, V] logits of forward one token at a time}``. A separate process:
the package reads RWKV_V7_ON / RWKV_JIT_ON / RWKV_CUDA_ON at import and changes global torch settings.
"""

from __future__ import annotations

import os
import sys

os.environ.update(RWKV_V7_ON="1", RWKV_JIT_ON="0", RWKV_CUDA_ON="0")

import torch  # noqa: E402


def main(model_path: str, tokens_csv: str, out: str) -> None:
    from rwkv.model import RWKV

    tokens = [int(t) for t in tokens_csv.split(",")]
    model = RWKV(model=model_path.removesuffix(".pth"), strategy="cpu fp32")
    sequence, _ = model.forward(tokens, None, full_output=True)
    state, steps = None, []
    for token in tokens:
        logits, state = model.forward([token], state)
        steps.append(logits.clone())
    torch.save({"sequence": sequence.float(), "steps": torch.stack(steps).float()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
