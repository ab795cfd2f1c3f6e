"""Run in a subprocess by the export tests: load exported folders with hf_recurrent (and maybe Triton) hidden.

``python load_without_package.py SPEC.json``; SPEC holds ``"models"``, a list of ``{"name", "dir", "hub_id",
"input_ids", "attention_mask", "max_new_tokens", "pad_token_id", "text"}`` (``text``: encoded by the exported
tokenizer); ``"out"``, a folder for the results;
``"hide"``, the top-level packages to hide; ``"device"``; ``"threads"``. Results: ``<name>.safetensors`` (logits,
the greedy generation, the logits of a ``device_map="auto"`` load and of a load by repo id from the offline Hub
cache, where ``hub_id`` is laid out) and ``report.json``.

A meta-path finder placed first refuses the hidden packages as an environment without them would; the report
records that importing them failed here, where each class came from, which flattened Triton modules ran, and what
transformers' ``check_imports`` (run on every downloaded file when loading from the Hub) says about each file.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path


class HidePackages(importlib.abc.MetaPathFinder):
    def __init__(self, hidden: list[str]) -> None:
        self.hidden = set(hidden)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
        return None


def _patch_triton_interpreter() -> None:
    """Under ``TRITON_INTERPRET=1``, the interpreter fixes the test suite uses (a file of ``tests/``, loaded by path:
    this process must not import the checkout's packages)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    path = Path(__file__).resolve().parents[1] / "triton_interpreter.py"
    module_spec = importlib.util.spec_from_file_location("hf_recurrent_test_triton_interpreter", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    module.patch_triton_interpreter()


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    sys.meta_path.insert(0, HidePackages(spec["hide"]))
    if "triton" not in spec["hide"]:
        _patch_triton_interpreter()
    report = {"hidden": {}, "errors": {}}
    for name in spec["hide"]:
        try:
            __import__(name)
            report["hidden"][name] = False
        except ModuleNotFoundError:
            report["hidden"][name] = True

    import torch

    torch.set_num_threads(spec["threads"])
    for case in spec["models"]:
        try:
            report[case["name"]] = _load_and_run(case, spec["out"], spec["device"])
        except Exception:  # noqa: BLE001  (reported by that architecture's tests)
            report["errors"][case["name"]] = traceback.format_exc(limit=-6)
    Path(spec["out"], "report.json").write_text(json.dumps(report, indent=1))


def _load_and_run(case: dict, out: str, device: str) -> dict:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.dynamic_module_utils import check_imports, get_relative_import_files

    folder = Path(case["dir"])
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).to(device).eval()
    sharded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, device_map="auto").eval()
    ids, mask = torch.tensor(case["input_ids"], device=device), torch.tensor(case["attention_mask"], device=device)
    with torch.no_grad():
        logits = model(ids, attention_mask=mask, use_cache=False).logits
        sharded_logits = sharded(ids, attention_mask=mask, use_cache=False).logits
        generated = model.generate(ids, attention_mask=mask, max_new_tokens=case["max_new_tokens"], do_sample=False,
                                   pad_token_id=case["pad_token_id"])
        # the Hub code path: repo id resolved in the (offline) Hub cache, check_imports run on every file fetched
        from_hub = AutoModelForCausalLM.from_pretrained(case["hub_id"], trust_remote_code=True).to(device).eval()
        hub_logits = from_hub(ids, attention_mask=mask, use_cache=False).logits
    results = {"logits": logits, "generated": generated, "sharded_logits": sharded_logits, "hub_logits": hub_logits}
    save_file({k: v.contiguous().cpu() for k, v in results.items()}, f"{out}/{case['name']}.safetensors")
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    # the files transformers fetches from the Hub: each auto_map entry module and what it imports, recursively
    refs = list(json.loads((folder / "config.json").read_text())["auto_map"].values())
    refs += json.loads((folder / "tokenizer_config.json").read_text()).get("auto_map", {}).get("AutoTokenizer", [])
    entries = {folder / (ref.split(".")[0] + ".py") for ref in refs if ref}
    fetched = {Path(f).name for entry in entries for f in [entry, *get_relative_import_files(entry)]}
    return {
        "class_module": type(model).__module__,
        "hub_class_module": type(from_hub).__module__,
        "tokenizer_module": type(tokenizer).__module__,
        "tokenized": tokenizer(case["text"])["input_ids"],
        "config_module": type(model.config).__module__,
        "sharded_devices": sorted({str(p.device) for p in sharded.parameters()}),
        "triton_modules_loaded": sorted(m.rsplit(".", 1)[-1] for m in sys.modules
                                        if m.startswith("transformers_modules.") and "triton" in m),
        "files_fetched_from_hub": sorted(fetched),
        # check_imports raises ImportError naming a missing package; record it instead
        "check_imports": {f.name: _check(check_imports, f) for f in sorted(folder.glob("*.py"))},
    }


def _check(check_imports, path: Path) -> str:
    try:
        check_imports(str(path))
    except ImportError as err:
        return f"ImportError: {err}"
    return "ok"


if __name__ == "__main__":
    main(sys.argv[1])
