"""``hf-recurrent push``: the calls made through huggingface_hub's HfApi, and clear errors; no network."""

from __future__ import annotations

import json

import httpx2
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError

from hf_recurrent.cli import main as cli_main
from hf_recurrent.hub import PushError, push_folder
from hf_recurrent.hub import push as push_module


@pytest.fixture
def export_dir(tmp_path):
    """The files push checks for (a real export is tested in test_export.py)."""
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "hfr_gla", "auto_map": {"AutoConfig": "a.B"}}))
    (folder / "README.md").write_text("---\nlibrary_name: transformers\n---\n# card\n")
    return folder


@pytest.fixture
def no_cached_token(tmp_path, monkeypatch):
    """No HF_TOKEN and an empty Hugging Face home: huggingface_hub finds no token anywhere."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-home" / "stored_tokens"))


class RecordingApi:
    """Stands in for HfApi: records each call; ``fail`` makes upload_folder raise it."""

    calls: list = []
    fail: Exception | None = None

    def __init__(self, token=None, **kwargs):
        RecordingApi.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        RecordingApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id, **kwargs):
        RecordingApi.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        RecordingApi.calls.append(("upload_folder", kwargs))
        if RecordingApi.fail is not None:
            raise RecordingApi.fail
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"})()


@pytest.fixture
def api(monkeypatch):
    RecordingApi.calls, RecordingApi.fail = [], None
    monkeypatch.setattr(push_module, "HfApi", RecordingApi)
    return RecordingApi


def test_push_calls_create_repo_branch_and_upload(export_dir, api):
    url = push_folder(export_dir, "me/gla-tiny", private=True, revision="v1", token="hf_arg",
                      commit_message="first upload")
    assert url == "https://huggingface.co/me/gla-tiny/commit/abc"
    assert api.calls == [
        ("init", {"token": "hf_arg"}),
        ("create_repo", {"repo_id": "me/gla-tiny", "private": True, "repo_type": "model", "exist_ok": True}),
        ("create_branch", {"repo_id": "me/gla-tiny", "branch": "v1", "repo_type": "model", "exist_ok": True}),
        ("upload_folder", {"repo_id": "me/gla-tiny", "folder_path": export_dir, "repo_type": "model",
                           "revision": "v1", "commit_message": "first upload"}),
    ]


def test_cli_push_public_main_with_token_from_environment(export_dir, api, monkeypatch, no_cached_token):
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert cli_main(["push", str(export_dir), "me/gla-tiny"]) == 0
    assert api.calls[0] == ("init", {"token": "hf_env"})
    assert api.calls[1][1]["private"] is False
    assert [c[0] for c in api.calls] == ["init", "create_repo", "upload_folder"]  # no branch for main
    assert api.calls[2][1]["revision"] is None


def test_no_token_is_a_clear_error(export_dir, api, no_cached_token, capsys):
    with pytest.raises(PushError, match="no Hugging Face token found: pass --token, set the HF_TOKEN"):
        push_folder(export_dir, "me/gla-tiny")
    assert api.calls == []
    assert cli_main(["push", str(export_dir), "me/gla-tiny"]) == 2
    assert "hf auth login" in capsys.readouterr().err


def test_folder_that_is_not_an_export_is_refused(tmp_path, export_dir, api):
    with pytest.raises(PushError, match="no config.json"):
        push_folder(tmp_path / "nothing", "me/x", token="hf_x")
    (export_dir / "config.json").write_text('{"model_type": "hfr_gla"}')
    with pytest.raises(PushError, match="not an export; run `hf-recurrent export"):
        push_folder(export_dir, "me/x", token="hf_x")
    assert api.calls == []


def test_hub_refusal_is_explained(export_dir, api):
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    api.fail = HfHubHTTPError("401 Unauthorized", response=httpx2.Response(401, request=request))
    with pytest.raises(PushError, match=r"HTTP 401\): the token is invalid or lacks write access"):
        push_folder(export_dir, "me/gla-tiny", token="hf_bad")


def test_unreachable_hub_is_explained(export_dir, api):
    api.fail = httpx2.ConnectError("[Errno 111] Connection refused")
    with pytest.raises(PushError, match="cannot reach the Hugging Face Hub.*check the network"):
        push_folder(export_dir, "me/gla-tiny", token="hf_x")


def test_offline_mode_with_the_real_client_is_explained(export_dir, monkeypatch):
    """The real HfApi in offline mode fails before any request; push turns that into advice."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PushError, match="offline mode \\(unset HF_HUB_OFFLINE\\)"):
        push_folder(export_dir, "me/gla-tiny", token="hf_x")
