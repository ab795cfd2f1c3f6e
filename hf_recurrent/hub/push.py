"""``hf-recurrent push DIR REPO_ID``: upload an exported folder through huggingface_hub's ``HfApi``.

``create_repo(exist_ok=True)``, ``create_branch(exist_ok=True)`` for a revision other than ``main``, then
``upload_folder`` (one commit). The token comes from the argument, else ``HF_TOKEN``, else the cached login
(``hf auth login``), as :func:`huggingface_hub.get_token` finds it. Failures of the Hub (no network, offline mode,
bad token, no permission) become a :class:`PushError` saying what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HTTPError, OfflineModeIsEnabled

from .errors import PushError

_NO_TOKEN = (
    "no Hugging Face token found: pass --token, set the HF_TOKEN environment variable, or log in once with "
    "`hf auth login` (a token with write access: https://huggingface.co/settings/tokens)"
)


def check_export_folder(folder: Path) -> None:
    """Refuse a folder that is not the output of ``hf-recurrent export`` (config.json with auto_map, README.md)."""
    config = folder / "config.json"
    if not folder.is_dir() or not config.is_file():
        raise PushError(f"{folder} is not a model folder (no config.json); run `hf-recurrent export SRC {folder}`")
    try:
        auto_map = json.loads(config.read_text(encoding="utf-8")).get("auto_map")
    except json.JSONDecodeError as err:
        raise PushError(f"{config} is not valid JSON: {err}") from err
    if not auto_map or not (folder / "README.md").is_file():
        raise PushError(
            f"{folder} has no remote code (auto_map) or no model card: it is not an export; "
            f"run `hf-recurrent export SRC DST` and push DST"
        )


def _explain(err: Exception, repo_id: str) -> str:
    if isinstance(err, OfflineModeIsEnabled):
        return f"cannot push to {repo_id}: huggingface_hub is in offline mode (unset HF_HUB_OFFLINE)"
    status = getattr(getattr(err, "response", None), "status_code", None) if isinstance(err, HfHubHTTPError) else None
    if status in (401, 403):
        return (
            f"the Hub refused the upload to {repo_id} (HTTP {status}): the token is invalid or lacks write access "
            f"to this namespace; use a write token (--token, HF_TOKEN or `hf auth login`). Hub said: {err}"
        )
    if status is not None:
        return f"the Hub answered HTTP {status} for {repo_id}: {err}"
    return f"cannot reach the Hugging Face Hub to push {repo_id} ({type(err).__name__}: {err}); check the network"


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` to it (on branch ``revision``); returns the commit URL."""
    folder = Path(folder)
    check_export_folder(folder)
    token = token or get_token()
    if not token:
        raise PushError(_NO_TOKEN)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or "Upload model exported by hf-recurrent",
        )
    except (HTTPError, OSError) as err:
        raise PushError(_explain(err, repo_id)) from err
    return str(getattr(commit, "commit_url", commit))
