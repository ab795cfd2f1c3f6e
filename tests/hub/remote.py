"""Running exported folders in a subprocess without hf_recurrent (``load_without_package.py``), for the export tests
on the CPU and on the GPU: one place that builds the loader's spec and environment and reads its results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

LOADER = Path(__file__).with_name("load_without_package.py")
COMMIT = "0123456789abcdef" * 2 + "01234567"


def into_hub_cache(folder: Path, cache: Path, repo_id: str) -> None:
    """Lay ``folder`` out as huggingface_hub's cache holds a downloaded repo (refs/main -> snapshots/<commit>/), so
    that ``from_pretrained(repo_id)`` offline takes transformers' Hub code path: every remote-code file is fetched
    by name from the files the entry module imports, and check_imports runs on each."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(folder, repo / "snapshots" / COMMIT)


def run_loader(root: Path, cases: list[dict], hide: list[str], device: str, threads: int,
               env: dict[str, str] | None = None, timeout: int = 600) -> tuple[dict, dict]:
    """Load every case's export in one subprocess with ``hide`` unimportable; returns (report, results by name).

    Cases are laid out in ``root / "hub-cache"`` by the caller (:func:`into_hub_cache`). ``env`` adds variables
    (``HF_RECURRENT_BACKEND`` is never inherited: the remote code must choose its backend as a fresh process would).
    """
    out = root / "results"
    out.mkdir()
    spec = root / "spec.json"
    spec.write_text(json.dumps({"models": cases, "out": str(out), "threads": threads, "hide": hide, "device": device}))
    child_env = {k: v for k, v in os.environ.items() if k != "HF_RECURRENT_BACKEND"}
    # Keep PYTHONPATH entries that bring other packages (a newer transformers, say), not this checkout's root; the
    # loader's import blocker hides hf_recurrent whatever the path.
    repo = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and str(Path(p).resolve()) != repo
    )
    child_env.update(HF_MODULES_CACHE=str(root / "modules"), HF_HUB_CACHE=str(root / "hub-cache"),
                     HF_HUB_OFFLINE="1", **(env or {}))
    proc = subprocess.run([sys.executable, str(LOADER), str(spec)], cwd=root, env=child_env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    results = {case["name"]: load_file(out / f"{case['name']}.safetensors") for case in cases
               if case["name"] not in report["errors"]}
    return report, results


def export_and_run_gla(root: Path, config: dict, seq_len: int, new_tokens: int, dtypes: list[str], device: str,
                       env: dict[str, str] | None = None) -> tuple[dict, dict, dict]:
    """Export a random GLA per dtype, run it here on ``device`` and in the loader with hf_recurrent hidden (Triton
    visible, so the export's flattened Triton kernels run wherever this process runs ours).

    Inputs: a batch of 2 x ``seq_len`` tokens, the second row left-padded by 37. Returns (report, originals, remote)
    with originals/remote keyed by dtype: ``logits`` (no cache) and the greedy ``generated`` continuation.
    """
    import torch

    from hf_recurrent.hub import export_model
    from hf_recurrent.modeling.gla import HfrGLAConfig, HfrGLAForCausalLM
    from hf_recurrent.tokenization import byte_level_tokenizer

    ids = torch.randint(3, config["vocab_size"], (2, seq_len), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    ids[1, :37], mask[1, :37] = 0, 0
    cases, originals = [], {}
    for dtype in dtypes:
        torch.manual_seed(0)
        model = HfrGLAForCausalLM(HfrGLAConfig(**config)).to(getattr(torch, dtype)).eval()
        model.save_pretrained(root / f"src-{dtype}")
        byte_level_tokenizer().save_pretrained(root / f"src-{dtype}")  # the loader also loads the exported tokenizer
        export_model(root / f"src-{dtype}", root / f"hub-{dtype}", max_shard_size="5MB")
        into_hub_cache(root / f"hub-{dtype}", root / "hub-cache", f"hfr-test/gla-{dtype}")
        model = model.to(device)
        with torch.no_grad():
            originals[dtype] = {
                "logits": model(ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.cpu(),
                "generated": model.generate(ids.to(device), attention_mask=mask.to(device), max_new_tokens=new_tokens,
                                            do_sample=False, pad_token_id=0).cpu(),
            }
        cases.append({"name": f"gla-{dtype}", "dir": str(root / f"hub-{dtype}"), "hub_id": f"hfr-test/gla-{dtype}",
                      "input_ids": ids.tolist(), "attention_mask": mask.tolist(), "max_new_tokens": new_tokens,
                      "pad_token_id": 0, "text": "def main():"})
    report, results = run_loader(root, cases, ["hf_recurrent"], device, torch.get_num_threads(), env, timeout=900)
    assert report["hidden"] == {"hf_recurrent": True} and report["errors"] == {}, report["errors"]
    return report, originals, {dtype: results[f"gla-{dtype}"] for dtype in dtypes}
