"""Model cards: YAML front matter the Hub reads, a per-architecture body from ``model_cards/``, a usage section.

A template ``model_cards/<arch>.md`` is Markdown with Python ``str.format`` fields; it may use any subset of
:data:`TEMPLATE_FIELDS` (write a literal brace as ``{{`` or ``}}``). An architecture without a template gets
``model_cards/default.md`` (installed wheels carry them in ``<prefix>/share/hf_recurrent/model_cards``).
The front matter is generated from :class:`huggingface_hub.ModelCardData`
(library_name, pipeline_tag, tags, license, base_model, datasets); a "How to load and generate" section follows
the body.
"""

from __future__ import annotations

import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import ModelCardData
from transformers import DynamicCache

from .errors import ExportError

def _templates_dir() -> Path:
    """``model_cards/`` of the source tree, else where an installed wheel puts it (setup.cfg's data_files)."""
    source_tree = Path(__file__).resolve().parents[2] / "model_cards"
    return source_tree if source_tree.is_dir() else Path(sys.prefix) / "share" / "hf_recurrent" / "model_cards"


TEMPLATES_DIR = _templates_dir()
TEMPLATE_FIELDS = ("model_name", "num_parameters", "state_size", "conversion_source", "parity")


@dataclass(frozen=True)
class CardInfo:
    """What the model itself cannot tell: its name (the Hub repo id, say) and where it came from.

    ``base_model``: Hub id of the checkpoint this one was converted from; ``conversion_source``: how (format,
    source); ``parity``: the evidence that the conversion is faithful (e.g. max |logit difference| against the
    source implementation).
    """

    model_name: str | None = None
    license: str = "apache-2.0"
    base_model: str | None = None
    datasets: tuple[str, ...] = field(default_factory=tuple)
    conversion_source: str | None = None
    parity: str | None = None


@dataclass(frozen=True)
class StateSize:
    """The recurrent state one sequence carries during generation, whatever its length."""

    elements: int
    bytes: int

    def __str__(self) -> str:
        return f"{self.elements:,} elements, {_human_bytes(self.bytes)} per sequence (independent of its length)"


def _human_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [item for item in value if isinstance(item, torch.Tensor)]
    return []


@torch.no_grad()
def state_size(model: torch.nn.Module) -> StateSize:
    """Run one token through ``model`` with a fresh ``DynamicCache`` and sum every state tensor the cache holds.

    Generic over architectures (each layer's convolution tails and recurrent states, every slot), counted in the
    dtypes the model keeps them in (recurrent states float32, convolution tails in the model's dtype).
    """
    cache = DynamicCache(config=model.config)
    device = next(model.parameters()).device
    model(torch.zeros(1, 1, dtype=torch.long, device=device), cache=cache, use_cache=True)
    seen: dict[int, torch.Tensor] = {}
    for layer in cache.layers:
        for value in vars(layer).values():
            for t in _tensors(value):
                seen[id(t)] = t
    return StateSize(sum(t.numel() for t in seen.values()), sum(t.numel() * t.element_size() for t in seen.values()))


def format_parameters(n: int) -> str:
    """``1,339,871,232 (1.34B)``; small counts without the rounded part."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n:,} ({n / scale:.3g}{suffix})"
    return f"{n:,}"


def load_template(arch_name: str, templates_dir: Path = TEMPLATES_DIR) -> tuple[Path, str]:
    """``(path, text)`` of ``<arch_name>.md`` in ``templates_dir``, else of ``default.md``."""
    for path in (templates_dir / f"{arch_name}.md", templates_dir / "default.md"):
        if path.is_file():
            return path, path.read_text(encoding="utf-8")
    raise ExportError(f"no model card template {arch_name}.md nor default.md in {templates_dir}")


def _check_fields(path: Path, text: str) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as err:
        raise ExportError(f"model card template {path}: {err} (write literal braces as {{{{ and }}}})") from err
    unknown = sorted(names - set(TEMPLATE_FIELDS))
    if unknown:
        raise ExportError(
            f"model card template {path} uses unknown field(s) {unknown}; the fields are {list(TEMPLATE_FIELDS)} "
            "(write literal braces as {{ and }})"
        )


def _usage(model_name: str, has_tokenizer: bool) -> str:
    tokenizer = (
        f'tokenizer = AutoTokenizer.from_pretrained("{model_name}", trust_remote_code=True)  # reads config.json\n'
        'inputs = tokenizer("The capital of France", return_tensors="pt")\n'
        "out = model.generate(**inputs, max_new_tokens=32)\n"
        "print(tokenizer.decode(out[0]))"
        if has_tokenizer
        else "import torch\n\nout = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=32)  # no tokenizer ships"
    )
    return (
        "\n## How to load and generate\n\n"
        "The modelling code ships with this repository (`trust_remote_code=True`); it needs `torch` and "
        "`transformers`, and uses fused Triton kernels on CUDA when `triton` is installed (PyTorch otherwise).\n\n"
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("{model_name}", trust_remote_code=True)\n'
        f"{tokenizer}\n"
        "```\n\n"
        "With `hf_recurrent` installed, `import hf_recurrent` registers the architecture and "
        "`trust_remote_code` is not needed.\n"
    )


def render_model_card(
    model: torch.nn.Module,
    arch_name: str,
    info: CardInfo,
    *,
    has_tokenizer: bool = True,
    templates_dir: Path = TEMPLATES_DIR,
) -> str:
    """The README.md of an exported model: front matter, the filled template, the usage section."""
    path, template = load_template(arch_name, templates_dir)
    _check_fields(path, template)
    model_name = info.model_name or arch_name
    conversion = info.conversion_source or (
        f"converted from [{info.base_model}](https://huggingface.co/{info.base_model})" if info.base_model
        else "not converted: trained or initialised with hf_recurrent"
    )
    body = template.format(
        model_name=model_name,
        num_parameters=format_parameters(model.num_parameters()),
        state_size=str(state_size(model)),
        conversion_source=conversion,
        parity=info.parity or "no parity measurement was recorded for this checkpoint",
    )
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        license=info.license,
        tags=["hf_recurrent", arch_name, model.config.model_type, "recurrent", "custom_code"],
        base_model=info.base_model,
        datasets=list(info.datasets) or None,
    )
    return f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n{_usage(model_name, has_tokenizer)}"
