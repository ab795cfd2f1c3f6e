"""``hf-recurrent export SRC DST``: a self-contained Hub repository folder for a model directory.

DST holds what ``AutoModelForCausalLM.from_pretrained(DST, trust_remote_code=True)`` needs in an environment with
transformers but without hf_recurrent:

* ``config.json`` with ``auto_map`` naming the flattened configuration and modeling modules (``model_type`` as is);
* the weights in safetensors, sharded above ``max_shard_size`` (``model.safetensors.index.json`` then);
* the flattened source (see :mod:`hf_recurrent.hub.flatten`): the architecture, the shared shell, the PyTorch
  reference kernels and the Triton ones (used on CUDA when Triton is installed);
* SRC's tokenizer, saved by its own class; a tokenizer class of hf_recurrent (RWKV's world tokenizer) is flattened
  too and named in ``tokenizer_config.json``'s ``auto_map``;
* ``generation_config.json``, and ``README.md``: the model card (:mod:`hf_recurrent.hub.model_card`).

The folder is written next to DST and renamed into place at the end: a failure leaves no half-written DST.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..conversion.output import staged_output_dir
from ..modeling.registry import ARCHITECTURES, Architecture
from .errors import ExportError
from .flatten import write_flat_modules
from .model_card import CardInfo, render_model_card


def architecture_of(model: torch.nn.Module) -> Architecture:
    """The registered architecture whose causal-LM class ``model`` is."""
    for arch in ARCHITECTURES.values():
        if type(model) is arch.causal_lm_class:
            return arch
    raise ExportError(f"{type(model).__name__} is not the causal LM class of a registered hf_recurrent architecture")


def auto_map(arch: Architecture, flat: dict[str, str]) -> dict[str, str]:
    """``auto_map`` entries of config.json: Auto class -> ``flat_module.ClassName``."""
    def ref(cls: type) -> str:
        return f"{flat[cls.__module__]}.{cls.__name__}"

    return {
        "AutoConfig": ref(arch.config_class),
        "AutoModel": ref(arch.model_class),
        "AutoModelForCausalLM": ref(arch.causal_lm_class),
    }


def _load_tokenizer(src: Path) -> PreTrainedTokenizerBase | None:
    """SRC's tokenizer (any class registered with AutoTokenizer, hf_recurrent's own included), or None."""
    if not any((src / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json")):
        return None
    try:
        return AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ExportError(f"cannot load the tokenizer in {src}: {err}") from err


def _tokenizer_auto_map(tokenizer: PreTrainedTokenizerBase, flat: dict[str, str]) -> dict[str, list[str | None]]:
    """``auto_map`` of tokenizer_config.json for a tokenizer class of hf_recurrent: ``[slow, fast]`` references."""
    cls = type(tokenizer)
    ref = f"{flat[cls.__module__]}.{cls.__name__}"
    return {"AutoTokenizer": [None, ref] if isinstance(tokenizer, PreTrainedTokenizerFast) else [ref, None]}


def _load(src: Path):
    if not (src / "config.json").is_file():
        raise ExportError(f"{src} is not a model folder: no config.json (expected save_pretrained / convert output)")
    import hf_recurrent  # noqa: F401  (registers the architectures)

    try:
        return AutoModelForCausalLM.from_pretrained(src, dtype="auto").eval()
    except (OSError, ValueError, KeyError, TypeError, StrictDataclassError) as err:
        raise ExportError(f"cannot load the model in {src}: {err}") from err


def _update_json(path: Path, **entries) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(entries)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def export_model(
    src: str | Path,
    dst: str | Path,
    *,
    max_shard_size: str | int = "2GB",
    card: CardInfo | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the repository folder for the model in ``src`` to ``dst``; returns ``dst``.

    ``card`` carries the facts the model itself does not know (name, license, base model, datasets, conversion
    source, parity evidence); by default the model name is DST's folder name.
    """
    from .. import __version__

    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise ExportError(f"the export must go to a new folder, not the source {src} itself")
    model = _load(src)
    arch = architecture_of(model)
    card = card or CardInfo()
    if card.model_name is None:
        card = replace(card, model_name=dst.absolute().name)
    tokenizer = _load_tokenizer(src)
    custom_tokenizer = tokenizer is not None and type(tokenizer).__module__.startswith("hf_recurrent.")
    roots = [arch.config_class.__module__, arch.model_class.__module__, arch.causal_lm_class.__module__]
    with staged_output_dir(dst, overwrite) as out:
        model.save_pretrained(out, max_shard_size=max_shard_size)
        flat = write_flat_modules(roots + ([type(tokenizer).__module__] if custom_tokenizer else []), out, __version__)
        _update_json(out / "config.json", auto_map=auto_map(arch, flat))
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
            if custom_tokenizer:
                _update_json(out / "tokenizer_config.json", auto_map=_tokenizer_auto_map(tokenizer, flat))
        (out / "README.md").write_text(
            render_model_card(model, arch.name, card, has_tokenizer=tokenizer is not None), encoding="utf-8"
        )
    return dst
