"""Published checkpoints -> hf_recurrent's format: ``convert(format, src, dst)``, ``hf-recurrent convert``.

Every format (see :mod:`.registry`) reads its source into our config and parameter names; the rest is shared:

1. refuse an existing ``dst`` (unless ``overwrite``) before reading anything;
2. build our model on the meta device and check the weights against it: missing keys, unexpected keys, shape
   mismatches (all reported at once, each with the key, the shape expected and the shape found), NaN/inf;
3. load them strictly into the model (one floating dtype: the one most of the weights have);
4. write ``save_pretrained`` (safetensors, config, generation config) and the source's tokenizer files into a
   temporary folder next to ``dst``, renamed to ``dst`` at the very end.

:func:`build_model` runs steps 2-3 alone, which works on meta tensors too: the tests map every recorded published
config without reading or materialising a weight.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from transformers import PreTrainedModel

from ..modeling.registry import ARCHITECTURES
from . import fla_gla  # noqa: F401  (registers the format)
from . import hf_mamba, mamba_ssm  # noqa: F401  (register hf-mamba, mamba-ssm)
from . import fla_retnet, gateloop  # noqa: F401  (register fla-retnet, gateloop)
from . import mamba2  # noqa: F401  (registers hf-mamba2; mamba-ssm dispatches to it)
from . import hf_rwkv, rwkv4, rwkv7  # noqa: F401  (register hf-rwkv, rwkv4, rwkv7)
from . import mingru, torch_rnn  # noqa: F401  (register mingru, torch-lstm, torch-gru)
from .checks import check_finite, check_state_dict
from .errors import ConversionError
from .output import refuse_existing, save_tokenizer, staged_output_dir
from .registry import FORMATS, ConvertedCheckpoint, SourceFormat, get_format, register_format

__all__ = [
    "FORMATS",
    "ConversionError",
    "ConvertedCheckpoint",
    "SourceFormat",
    "build_model",
    "convert",
    "empty_model",
    "register_format",
]


def empty_model(config) -> PreTrainedModel:
    """Our causal LM for ``config``, built on the meta device (no memory, no initialisation cost)."""
    for arch in ARCHITECTURES.values():
        if type(config) is arch.config_class:
            with torch.device("meta"):
                return arch.causal_lm_class(config)
    raise ConversionError(f"no registered architecture uses config class {type(config).__name__}")


def _dominant_dtype(state_dict: dict[str, torch.Tensor]) -> torch.dtype:
    counts = Counter()
    for tensor in state_dict.values():
        if tensor.is_floating_point():
            counts[tensor.dtype] += tensor.numel()
    return counts.most_common(1)[0][0] if counts else torch.float32


def build_model(checkpoint: ConvertedCheckpoint) -> PreTrainedModel:
    """Our model holding ``checkpoint``'s weights, after checking keys, shapes and finiteness.

    With meta tensors in ``checkpoint`` the result stays on the meta device: the checks alone are exercised.
    """
    model = empty_model(checkpoint.config)
    state_dict = checkpoint.state_dict
    check_state_dict(model, state_dict)
    check_finite(state_dict)
    dtype = _dominant_dtype(state_dict)
    keep_fp32 = set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())  # e.g. Mamba's A_log
    state_dict = {
        key: t.to(torch.float32 if keep_fp32 & set(key.split(".")) else dtype) if t.is_floating_point() else t
        for key, t in state_dict.items()
    }
    for target, source in model.all_tied_weights_keys.items():
        state_dict.setdefault(target, state_dict[source])
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()
    model.config.dtype = dtype
    return model.eval()


def convert(format: str, src: str | Path, dst: str | Path, overwrite: bool = False) -> Path:
    """Convert the ``format`` checkpoint at ``src`` into a ``save_pretrained`` folder ``dst``; return ``dst``.

    Raises :class:`ConversionError` (a ``ValueError``) for bad input; ``dst`` is then left as it was.
    """
    fmt = get_format(format)
    src, dst = Path(src), Path(dst)
    if dst.absolute() == src.absolute():
        raise ConversionError(f"output {dst} is the source checkpoint itself; choose another folder")
    refuse_existing(dst, overwrite)
    checkpoint = fmt.load(src)
    model = build_model(checkpoint)
    with staged_output_dir(dst, overwrite) as out:
        model.save_pretrained(out)
        save_tokenizer(checkpoint.tokenizer, out)
    return dst
