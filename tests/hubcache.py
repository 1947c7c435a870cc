"""An offline, pre-filled Hugging Face Hub cache for tests (nothing here reaches the network).

``offline_cache`` (a pytest fixture) gives an empty cache folder with offline mode on;
``make_cached_repo`` lays a checkpoint folder out in it the way ``hf_hub_download`` /
``snapshot_download`` leave a downloaded repository, so loaders are exercised by repo id.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_cached_repo(cache: Path, repo_id: str, ckpt: Path, commit: str = COMMIT, files=None) -> Path:
    """Copy ``files`` (default: config.json + model.safetensors; a file may be in a sub-folder) from ckpt
    into cache/models--ORG--NAME/snapshots/<commit>/ with refs/main -> commit. Returns the snapshot."""
    files = ("config.json", "model.safetensors") if files is None else files
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name in files:
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(ckpt) / name, snap / name)
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty HF cache folder with offline mode on, whether or not huggingface_hub re-reads the env."""
    cache = tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # read once at import time
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache


def check_swapped_round_trip(model, images, folder: Path, cache: Path, repo_id: str, cls) -> None:
    """save_swapped -> load_swapped from ``folder`` and, by ``repo_id``, from the offline ``cache``: the same
    class, the same state dict, and the same ``model(images)[0]``, exactly."""
    import torch

    from vqswitch.adapters import load_swapped, save_swapped

    save_swapped(model, folder)
    loaded = load_swapped(folder)
    assert isinstance(loaded, cls)
    sa, sb = model.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    expected = model(images)[0]
    assert torch.equal(loaded(images)[0], expected)
    make_cached_repo(cache, repo_id, folder)
    assert torch.equal(load_swapped(repo_id)(images)[0], expected)
