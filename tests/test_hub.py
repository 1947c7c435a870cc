"""Checkpoints: save_pretrained / from_pretrained, model card, config-weight checks, atomic saves,
an offline pre-filled Hub cache, and push_to_hub wiring (never the network)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch

from hubcache import COMMIT, make_cached_repo
from vqswitch import SwitchableTokenQuantizer

CKPT_FILES = {"config.json", "model.safetensors", "README.md"}

CONFIGS = {
    "M1-shared-l2": dict(num_tokens=6, codebook_size=16, dim=4, num_groups=1, token_specific=False),
    "M4-specific-cosine": dict(num_tokens=5, codebook_size=8, dim=3, num_groups=4, metric="cosine",
                               router_hidden_dim=16),
    "M2-dot": dict(num_tokens=4, codebook_size=32, dim=6, num_groups=2, metric="dot", router_hidden_dim=8),
}


def trained(seed: int = 0, **cfg) -> SwitchableTokenQuantizer:
    """A quantizer with random codebooks and usage recorded by a few train-mode calls."""
    torch.manual_seed(seed)
    q = SwitchableTokenQuantizer(**cfg)
    q.train()
    for _ in range(2):
        q(torch.randn(7, q.num_tokens, q.dim))
    q.eval()
    return q


def assert_same(a: SwitchableTokenQuantizer, b: SwitchableTokenQuantizer) -> None:
    assert a.get_config() == b.get_config()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def load(path) -> SwitchableTokenQuantizer:
    return SwitchableTokenQuantizer.from_pretrained(str(path))


# ---------------------------------------------------------------- local round trip
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_local(tmp_path, name):
    q = trained(**CONFIGS[name])
    assert int(q.usage.sum()) > 0 and int(q.group_counts.sum()) == 14
    q.save_pretrained(tmp_path / "ckpt")
    assert set(os.listdir(tmp_path / "ckpt")) == CKPT_FILES  # no pickle, no temp files
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text()) == q.get_config()

    r = load(tmp_path / "ckpt")
    assert isinstance(r, SwitchableTokenQuantizer) and not r.training
    assert_same(q, r)
    assert torch.equal(r.usage, q.usage) and torch.equal(r.group_counts, q.group_counts)
    assert (r.router is None) == (q.num_groups == 1)

    z = torch.randn(9, q.num_tokens, q.dim)
    ca, cb = q.encode(z), r.encode(z)
    assert torch.equal(ca.groups, cb.groups) and torch.equal(ca.indices, cb.indices)
    assert torch.equal(q.decode(ca), r.decode(cb))


def test_resave_overwrites_and_keeps_other_files(tmp_path):
    d = tmp_path / "ckpt"
    trained(**CONFIGS["M1-shared-l2"]).save_pretrained(d)
    (d / "notes.txt").write_text("mine")
    q2 = trained(seed=1, **CONFIGS["M2-dot"])
    q2.save_pretrained(d)
    assert set(os.listdir(d)) == CKPT_FILES | {"notes.txt"}
    assert_same(q2, load(d))


# ---------------------------------------------------------------- model card
def test_model_card_has_bits_and_bpp(tmp_path):
    q = trained(num_tokens=32, codebook_size=256, dim=4, num_groups=256, router_hidden_dim=8)
    assert q.bits_per_image == 264  # TiTok-L at K=256, M=256 (the paper's table)
    q.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "bits per image" in card
    assert f"**{q.bits_per_image}**" in card
    assert f"256x256: **{q.bpp(256, 256):.4f}**" in card and "0.0040" in card
    assert "library_name: vqswitch" in card
    assert "Recorded codebook utilisation" in card  # usage was recorded

    fresh = SwitchableTokenQuantizer(num_tokens=128, codebook_size=1024, dim=2, num_groups=16, router_hidden_dim=4)
    fresh.save_pretrained(tmp_path / "fresh")
    card = (tmp_path / "fresh" / "README.md").read_text()
    assert "**1284**" in card and "**0.0196**" in card
    assert "Recorded codebook utilisation" not in card


# ---------------------------------------------------------------- config / weights disagreement
def _edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("changes, match", [
    (dict(codebook_size=32),
     r"does not match config\.json.*codebooks: config\.json implies \(1, 1, 32, 4\), file has \(1, 1, 16, 4\)"),
    (dict(dim=5), r"does not match config\.json.*codebooks"),
    (dict(token_specific=True), r"does not match config\.json.*codebooks"),
    (dict(num_groups=4, train_selection="router"), r"does not match config\.json: missing \['router\."),
])
def test_config_weights_mismatch_raises(tmp_path, changes, match):
    trained(**CONFIGS["M1-shared-l2"]).save_pretrained(tmp_path)
    _edit_config(tmp_path, **changes)
    with pytest.raises(ValueError, match=match):
        load(tmp_path)


def test_router_weights_without_router_in_config(tmp_path):
    trained(**CONFIGS["M2-dot"]).save_pretrained(tmp_path)
    _edit_config(tmp_path, num_groups=1, train_selection="nearest")
    with pytest.raises(ValueError, match=r"unexpected \['router\."):
        load(tmp_path)


@pytest.mark.parametrize("drop", ["group_counts", "codebooks"])
def test_safetensors_missing_key_raises(tmp_path, drop):
    trained(**CONFIGS["M1-shared-l2"]).save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    state = safetensors.torch.load_file(str(f))
    del state[drop]
    safetensors.torch.save_file(state, str(f))
    with pytest.raises(ValueError, match=rf"missing \['{drop}'\]"):
        load(tmp_path)


# ---------------------------------------------------------------- atomic saves
def _fail_writing_weights(monkeypatch):
    def broken(obj, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\x00" * 10)  # half-written file, then the disk "fills up"
        raise OSError("No space left on device (simulated)")

    # The mixin imports safetensors.torch.save_model at call time; patch save_file too in case it changes.
    monkeypatch.setattr(safetensors.torch, "save_model", broken)
    monkeypatch.setattr(safetensors.torch, "save_file", broken)


def _fail_writing_card(monkeypatch):
    def broken(self, *args, **kwargs):
        raise OSError("card failed (simulated)")

    monkeypatch.setattr(SwitchableTokenQuantizer, "generate_model_card", broken)


@pytest.mark.parametrize("fail", [_fail_writing_weights, _fail_writing_card], ids=["weights", "card"])
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, fail):
    d = tmp_path / "ckpt"
    first = trained(**CONFIGS["M1-shared-l2"])
    first.save_pretrained(d)
    before = {n: (d / n).read_bytes() for n in CKPT_FILES}

    second = trained(seed=3, **CONFIGS["M4-specific-cosine"])
    fail(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        second.save_pretrained(d)
    monkeypatch.undo()

    assert set(os.listdir(d)) == CKPT_FILES
    assert {n: (d / n).read_bytes() for n in CKPT_FILES} == before
    assert os.listdir(tmp_path) == ["ckpt"]  # no leftover .ckpt.*.tmp beside it
    assert_same(first, load(d))


def test_failed_first_save_leaves_no_temp_files(tmp_path, monkeypatch):
    _fail_writing_weights(monkeypatch)
    with pytest.raises(OSError):
        trained(**CONFIGS["M1-shared-l2"]).save_pretrained(tmp_path / "ckpt")
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() or p.name.endswith(".tmp")]
    assert leftovers == []


# ---------------------------------------------------------------- offline Hub cache
def test_offline_cache_loads(tmp_path, offline_cache):
    q = trained(**CONFIGS["M4-specific-cosine"])
    q.save_pretrained(tmp_path / "src")
    make_cached_repo(offline_cache, "org/name", tmp_path / "src")

    assert_same(q, SwitchableTokenQuantizer.from_pretrained("org/name", cache_dir=str(offline_cache)))
    assert_same(q, SwitchableTokenQuantizer.from_pretrained("org/name", cache_dir=offline_cache, revision=COMMIT))
    assert_same(q, SwitchableTokenQuantizer.from_pretrained("org/name"))  # default cache = the patched one


def test_offline_cache_wrong_commit_or_absent_repo_raises(tmp_path, offline_cache):
    trained(**CONFIGS["M1-shared-l2"]).save_pretrained(tmp_path / "src")
    make_cached_repo(offline_cache, "org/name", tmp_path / "src")
    for repo_id, revision in (("org/absent", None), ("org/name", "f" * 40)):
        with pytest.raises(Exception) as info:
            SwitchableTokenQuantizer.from_pretrained(repo_id, cache_dir=str(offline_cache), revision=revision)
        assert not isinstance(info.value, KeyError)
        assert isinstance(info.value, (OSError, ValueError)), repr(info.value)
        assert len(str(info.value)) > 20 and "cache" in str(info.value)


# ---------------------------------------------------------------- push_to_hub wiring (no network)
def test_save_pretrained_push_calls_push_to_hub(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(SwitchableTokenQuantizer, "push_to_hub",
                        lambda self, **kw: calls.append(kw) or "https://hub.example/commit/1")
    q = trained(**CONFIGS["M2-dot"])
    assert q.save_pretrained(tmp_path / "ckpt", push_to_hub=True, repo_id="x/y") == "https://hub.example/commit/1"
    assert len(calls) == 1 and calls[0]["repo_id"] == "x/y" and calls[0]["config"] == q.get_config()
    assert_same(q, load(tmp_path / "ckpt"))  # saved locally as well

    calls.clear()
    assert q.save_pretrained(tmp_path / "other") is None
    assert calls == []
    q.save_pretrained(tmp_path / "my-model", push_to_hub=True)
    assert calls[0]["repo_id"] == "my-model"  # defaults to the folder name, as the mixin does


def test_save_pretrained_push_forwards_hub_kwargs(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(SwitchableTokenQuantizer, "push_to_hub", lambda self, **kw: calls.append(kw))
    trained(**CONFIGS["M2-dot"]).save_pretrained(tmp_path, push_to_hub=True, repo_id="x/y", token="hf_secret",
                                                 private=True, commit_message="first")
    assert calls[0].get("token") == "hf_secret" and calls[0].get("private") is True
    assert calls[0].get("commit_message") == "first"


def test_failed_first_save_leaves_no_folder(tmp_path, monkeypatch):
    """Regression: a failed first save used to leave an empty target folder behind."""
    import vqswitch.quantizer as qmod

    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(qmod.PyTorchModelHubMixin, "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        trained(**CONFIGS["M2-dot"]).save_pretrained(tmp_path / "never")
    assert list(tmp_path.iterdir()) == []
