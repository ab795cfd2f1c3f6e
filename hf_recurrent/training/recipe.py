"""``hf-recurrent train``: a causal LM of any registered architecture on text files, with transformers' Trainer."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedModel, Trainer, TrainerCallback, TrainingArguments

from ..modeling.registry import ARCHITECTURES
from ..tokenization import byte_level_tokenizer
from .data import BlockDataset, batched_collator, collect_files, packed_collator, tokenize_files
from .plot import plot_loss_curve


@dataclass
class TrainSettings:
    arch: str
    data: list[str]
    out: str
    config: dict = field(default_factory=dict)
    tokenizer: str | None = None
    pattern: str = "*.py"
    seq_len: int = 512
    batch_size: int = 16
    max_steps: int = 1000
    learning_rate: float = 3e-3
    warmup_ratio: float = 0.05
    weight_decay: float = 0.1
    bf16: bool = False
    gradient_checkpointing: bool = False
    pack: bool = True
    save_dtype: str = "float32"
    seed: int = 0
    logging_steps: int = 10
    max_minutes: float | None = None


class _TimeLimit(TrainerCallback):
    """Stops training (the model is still saved) once ``minutes`` of wall-clock time have passed."""

    def __init__(self, minutes: float) -> None:
        import time

        self._clock = time.monotonic
        self.deadline = self._clock() + 60 * minutes

    def on_step_end(self, args, state, control, **kwargs):
        if self._clock() > self.deadline:
            control.should_training_stop = True
        return control


def build_model(settings: TrainSettings, tokenizer) -> PreTrainedModel:
    if settings.arch not in ARCHITECTURES:
        raise ValueError(f"unknown --arch {settings.arch!r}: choose one of {sorted(ARCHITECTURES)}")
    arch = ARCHITECTURES[settings.arch]
    specials = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None}
    config = arch.config_class(**{"vocab_size": len(tokenizer), **specials, **settings.config})
    torch.manual_seed(settings.seed)
    return arch.causal_lm_class(config)


def train(settings: TrainSettings) -> Path:
    """Train, then write the model, tokenizer, ``loss_curve.png`` and ``train_log.json`` to ``settings.out``."""
    out = Path(settings.out)
    tokenizer = AutoTokenizer.from_pretrained(settings.tokenizer) if settings.tokenizer else byte_level_tokenizer()
    files = collect_files(settings.data, settings.pattern)
    stream, starts = tokenize_files(files, tokenizer)
    dataset = BlockDataset(stream, starts, settings.seq_len)
    model = build_model(settings, tokenizer)
    pack = settings.pack and all(getattr(b.mixer, "supports_packed_sequences", False) for b in model.model.layers)
    if settings.pack and not pack:
        print("[hf-recurrent] this architecture/config cannot run packed sequences: training on plain blocks")
    scratch = tempfile.TemporaryDirectory(prefix="hf-recurrent-train-")  # Trainer wants one; we save at the end
    args = TrainingArguments(
        output_dir=scratch.name,
        per_device_train_batch_size=settings.batch_size,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(settings.warmup_ratio * settings.max_steps),
        weight_decay=settings.weight_decay,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        bf16=settings.bf16,
        activation_checkpointing=settings.gradient_checkpointing,
        logging_steps=settings.logging_steps,
        save_strategy="no",
        report_to=[],
        seed=settings.seed,
        dataloader_drop_last=True,
        remove_unused_columns=False,
        disable_tqdm=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=packed_collator if pack else batched_collator,
        callbacks=[_TimeLimit(settings.max_minutes)] if settings.max_minutes else None,
    )
    trainer.train()
    scratch.cleanup()
    model = trainer.model.eval()
    model.config.use_cache = True
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[settings.save_dtype]
    model.to(dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    plot_loss_curve(trainer.state.log_history, out / "loss_curve.png", f"{settings.arch}: {len(files)} files")
    log = {
        "settings": {**settings.__dict__, "data": [str(d) for d in settings.data]},
        "files": len(files),
        "tokens": stream.numel(),
        "packed": pack,
        "steps": trainer.state.global_step,
        "parameters": sum(p.numel() for p in model.parameters()),
        "log_history": trainer.state.log_history,
    }
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    return out
