"""Outputs of flash-linear-attention's own GLA on the CPU, for the parity tests.

Run as ``TRITON_INTERPRET=1 python -m tests.conversion.fla_reference OUT``: for every case of
:data:`tests.conversion.fla_checkpoints.CASES` it writes ``OUT/<case>/checkpoint`` (fla's published layout) and
``OUT/<case>/reference.pt`` (input ids, fla's fp32 logits, a prompt and fla's greedy continuation).
``... fla_reference --logits IN OUT`` reads ``{"config", "seed", "input_ids"}`` from ``IN`` and saves the fp32
logits of :func:`fla_gla_model` ``(seed, **config)`` (fused_recurrent mode) to ``OUT`` (the GPU parity test's
oracle, free of fla's GPU compilation).

It runs in a subprocess of its own because Triton's interpreter must be chosen before fla defines its kernels,
and must not leak into the other tests of the session. Two shims make fla's kernels run interpreted with
Triton 3.6 and NumPy 2.4 (this script only):

* the autotuner would time every config on a GPU driver: every config is given the same time, the first wins;
* the interpreter turns a runtime scalar into a 1-element array and ``int()`` of that fails since NumPy 2.4
  (triton-lang/triton#9171): ``__index__`` squeezes it first, as the upstream fix does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from .fla_checkpoints import CASES, fla_gla_model, fla_greedy, save_fla_checkpoint

BATCH, SEQ_LEN, PROMPT_LEN, NEW_TOKENS = 2, 16, 6, 10


def _patch_triton_interpreter() -> None:
    from triton.runtime import autotuner, interpreter

    autotuner.Autotuner._bench = lambda self, *args, config, **kwargs: [0.0, 0.0, 0.0]
    original = interpreter._patch_lang_tensor

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patch_lang_tensor


def main(out: Path) -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("run with TRITON_INTERPRET=1 (fla's Triton kernels on the CPU)")
    _patch_triton_interpreter()
    for index, (name, case) in enumerate(CASES.items()):
        model = fla_gla_model(seed=index, **case.config)
        save_fla_checkpoint(model, out / name / "checkpoint", case)
        gen = torch.Generator().manual_seed(100 + index)
        input_ids = torch.randint(model.config.vocab_size, (BATCH, SEQ_LEN), generator=gen)
        with torch.no_grad():
            logits = model(input_ids=input_ids, use_cache=False).logits.float()
        prompt = input_ids[:, :PROMPT_LEN]
        greedy = fla_greedy(model, prompt, NEW_TOKENS)
        torch.save(
            {"input_ids": input_ids, "logits": logits, "prompt": prompt, "greedy": greedy}, out / name / "reference.pt"
        )


def logits(request: Path, out: Path) -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("run with TRITON_INTERPRET=1 (fla's Triton kernels on the CPU)")
    _patch_triton_interpreter()
    spec = torch.load(request)
    model = fla_gla_model(seed=spec["seed"], **spec["config"])
    for layer in model.model.layers:
        layer.attn.mode = "fused_recurrent"
    with torch.no_grad():
        torch.save(model(input_ids=spec["input_ids"], use_cache=False).logits.float(), out)


if __name__ == "__main__":
    if sys.argv[1] == "--logits":
        logits(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main(Path(sys.argv[1]))
