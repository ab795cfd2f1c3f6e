"""The training recipe behind ``hf-recurrent train`` (transformers' Trainer, packed sequences, loss curve)."""

from .recipe import TrainSettings, train

__all__ = ["TrainSettings", "train"]
