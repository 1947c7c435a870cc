"""`vqswitch push` (vqswitch/publish/, its command line vqswitch/cli/push.py): the publish-format folder, its model
card, the Hub calls (a fake HfApi that fills an offline cache) and a round trip back through load_swapped; bad input;
the command line."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubcache import make_cached_repo
from vqswitch import publish
from vqswitch.adapters import decode_codes, encode_codes, encode_latents, load_swapped, save_swapped, swap_quantizer
from vqswitch.bits import bits_per_image, bpp
from vqswitch._checks import check_repo_id
from vqswitch.cli import main as cli_main
from vqswitch.publish import PUBLISH_FILES, build_model_card, prepare_upload, push

SIZE = 16  # 16x16 images, 64 tokens (downsampling factor 2)
M, K, T = 4, 8, 64


def tiny_model(seed: int = 0):
    """A small random MaskGIT-VQGAN with STSCQ swapped in (M=4, K=8, token-specific), usage recorded."""
    from vqswitch.adapters.models.maskgit_vqgan import MaskGitVQGAN

    torch.manual_seed(seed)
    model = MaskGitVQGAN(resolution=SIZE, hidden_channels=32, channel_mult=(1, 1), num_res_blocks=1,
                         attn_resolutions=(), z_channels=4, num_embeddings=16, quantized_embed_dim=4)
    swap_quantizer(model, num_groups=M, codebook_size=K, token_specific=True, seed=seed)
    q = model.quantize.quantizer
    with torch.no_grad():
        q.train()
        q(encode_latents(model, images(6, seed=seed + 1)))
    return model.eval()


def images(n: int, seed: int = 7) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def evaluation_of(model, x) -> dict:
    """What `vqswitch eval --out` writes for ``x``."""
    from vqswitch.metrics import evaluate

    q = model.quantize.quantizer
    recon = decode_codes(model, encode_codes(model, x)).clamp(0, 1)
    out = evaluate(x, recon, data_range=1.0, bits_per_image=q.bits_per_image, util=q.utilization())
    out.update(images=x.shape[0], skipped_images=[])
    return out


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


RUN_INFO = {
    "format": "vqswitch-run", "adapter": "maskgit-vqgan", "base_model": "org-base/tiny-vqgan",
    "base_revision": "abc123",
    "data": {"description": "image folder faces-train", "path": "/data/faces-train", "num_images": 321},
    "num_groups": M, "codebook_size": K, "license": "apache-2.0",
    "finetune": {"stages": [1, 2, 3], "seed": 5,
                 "stage1": {"steps": 11, "lr": 0.001, "batch_size": 4},
                 "stage2": {"steps": 12, "lr": 0.0005, "batch_size": 8},
                 "stage3": {"steps": 13, "lr": 0.0003, "batch_size": 2, "l2_weight": 1.0, "perceptual_weight": 0.5,
                            "identity_weight": 0.25}},
}
LOG = [{"stage": 1, "step": 11, "loss": 0.5}, {"stage": 2, "step": 12, "loss": 0.25},
       {"stage": 3, "step": 13, "loss": 0.125}]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finetune run folder: final/ (with an entropy model), run.json, metrics.jsonl, eval.json."""
    from vqswitch.entropy import EntropyModel

    root = tmp_path_factory.mktemp("run")
    model = tiny_model()
    save_swapped(model, root / "final")
    EntropyModel.from_quantizer(model.quantize.quantizer).save(root / "final" / "entropy_model.safetensors")
    write_json(root / "run.json", RUN_INFO)
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in LOG) + '{"stage": 3, "st', "utf-8")
    write_json(root / "eval.json", evaluation_of(model, images(4)))
    return SimpleNamespace(dir=root, model=model)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A real (tiny) `vqswitch demo` output folder."""
    from vqswitch.experiments.demo import run_demo
    from vqswitch.experiments.faces import DemoConfig

    cfg = DemoConfig(image_size=SIZE, num_train=4, num_test=2, hidden_channels=32, channel_mult=(1, 1),
                     num_res_blocks=1, z_channels=4, codebook_size0=8, baseline_steps=1, baseline_batch_size=4,
                     dead_code_every=0, num_groups=2, codebook_size=4, stage1_steps=1, stage2_steps=1,
                     stage3_steps=1, stage_batch_size=2, grid_images=2)
    out = tmp_path_factory.mktemp("demo")
    with contextlib.redirect_stdout(io.StringIO()):
        run_demo(out, config=cfg, progress=False)
    return out


BASELINE_TUNED = "baseline + stage 3 (same codes, decoder fine-tuned as in stage 3)"


def table_value(card: str, key: str) -> str:
    """The value cell of the card's two-column row ``| key | value |``."""
    match = re.search(rf"^\| {re.escape(key)} \| (.*) \|$", card, re.M)
    assert match, key
    return match.group(1)


def assert_same_outputs(model, other, x) -> None:
    a, b = encode_codes(model, x), encode_codes(other, x)
    assert torch.equal(a.groups, b.groups) and torch.equal(a.indices, b.indices)
    assert torch.equal(decode_codes(model, a), decode_codes(other, b))


# ------------------------------------------------------------------------------------------ the Hub, faked
class FakeHub:
    """Stands in for huggingface_hub.HfApi: records every call; create_commit copies the added files into the offline
    cache (as a download would leave it), with refs/<revision> pointing at a fresh commit."""

    def __init__(self, cache: Path | None = None, fail: dict | None = None):
        self.cache, self.fail, self.calls, self.instances = cache, fail or {}, [], 0
        self.commits = 0

    def api(self, token=None):
        hub = self
        hub.instances += 1
        hub.calls.append(("HfApi", (), {"token": token}))

        class Api:
            def __getattr__(self, name):
                def call(*args, **kwargs):
                    hub.calls.append((name, args, kwargs))
                    if name in hub.fail:
                        raise hub.fail[name]
                    return getattr(hub, name)(*args, **kwargs)
                return call
        return Api()

    def create_repo(self, repo_id, **kwargs):
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        return None

    def list_repo_files(self, repo_id, revision=None):
        refs = None if self.cache is None else self.cache / ("models--" + repo_id.replace("/", "--")) / "refs"
        ref = None if refs is None else refs / (revision or "main")
        if ref is None or not ref.is_file():
            return [".gitattributes"]  # a new repository
        return [".gitattributes"] + sorted(os.listdir(refs.parent / "snapshots" / ref.read_text()))

    def create_commit(self, *, repo_id, operations, revision=None, create_pr=False, **kwargs):
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        self.commits += 1
        commit = f"{self.commits:040x}"
        adds = [op for op in operations if isinstance(op, CommitOperationAdd)]
        self.uploaded = sorted(op.path_in_repo for op in adds)
        self.deleted = sorted(op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete))
        self.upload_dir = Path(adds[0].path_or_fileobj).parent
        if self.cache is not None:
            snap = make_cached_repo(self.cache, repo_id, self.upload_dir, commit=commit, files=self.uploaded)
            (snap.parent.parent / "refs" / (revision or "main")).write_text(commit)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{commit}", oid=commit,
                               pr_url=f"https://huggingface.co/{repo_id}/discussions/1" if create_pr else None)

    def names(self):
        return [c[0] for c in self.calls]


@pytest.fixture
def hub(monkeypatch, offline_cache):
    fake = FakeHub(offline_cache)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", fake.api)
    return fake


# ------------------------------------------------------------------------------------------ the folder and card
def test_dry_run_folder_has_every_file_and_a_matching_card(run, tmp_path):
    out = prepare_upload(run.dir, tmp_path / "up", repo_id="org/name")
    assert out == tmp_path / "up"
    assert sorted(os.listdir(out)) == sorted(PUBLISH_FILES)
    for name in ("config.json", "model.safetensors", "entropy_model.safetensors"):
        assert (out / name).read_bytes() == (run.dir / "final" / name).read_bytes(), name
    for name in ("eval.json", "metrics.jsonl"):
        assert (out / name).read_bytes() == (run.dir / name).read_bytes(), name
    published = json.loads((out / "run.json").read_text())  # all of run.json but the data folder's local path
    assert published == {**RUN_INFO, "data": {**RUN_INFO["data"], "path": "faces-train"}}
    assert not [p for p in tmp_path.iterdir() if p.name != "up"]  # no temporary folder left behind

    card = (out / "README.md").read_text()
    meta = ModelCard(card).data.to_dict()
    assert meta["library_name"] == "vqswitch"
    assert meta["tags"] == ["vqswitch", "image-tokenizer", "vector-quantization", "image-compression"]
    assert meta["base_model"] == "org-base/tiny-vqgan" and meta["license"] == "apache-2.0"

    q = run.model.quantize.quantizer
    bits = bits_per_image(T, K, M)
    assert (q.num_groups, q.codebook_size, q.num_tokens, q.bits_per_image) == (M, K, T, bits) == (4, 8, 64, 194)
    assert table_value(card, "codebook groups M") == str(M)
    assert table_value(card, "codes per codebook K") == str(K)
    assert table_value(card, "tokens per image T") == str(T)
    assert table_value(card, "bits per image").endswith(f"= {T}*3 + 2 = {bits}")
    assert table_value(card, "bits per pixel").endswith(f"= {bpp(bits, SIZE, SIZE):.4f}")
    assert table_value(card, "image size") == f"{SIZE}x{SIZE}"
    assert table_value(card, "codebooks").startswith("token-specific")
    assert "`org-base/tiny-vqgan`" in table_value(card, "base weights") and "`abc123`" in card
    assert table_value(card, "base tokenizer family") == "`maskgit-vqgan` (MaskGitVQGAN)"
    assert "code counts of 6 images" in table_value(card, "entropy model")

    ev = json.loads((run.dir / "eval.json").read_text())
    row = table_value(card, "STSCQ (this model)").split(" | ")
    assert row == [str(M), str(K), str(T), str(bits), f"{ev['bpp']:.4f}", f"{ev['psnr']:.2f}", f"{ev['ssim']:.4f}",
                   f"{100 * ev['utilization']['overall']['mean']:.1f}%", f"4 at {SIZE}x{SIZE}"]
    assert "Not evaluated" not in card
    for s, (steps, lr, batch, loss) in enumerate([(11, "0.001", 4, "0.5"), (12, "0.0005", 8, "0.25"),
                                                  (13, "0.0003", 2, "0.125")], start=1):
        assert re.search(rf"^\| {s} \| [^|]+ \| {steps} \| {lr} \| {batch} \| {loss} \|$", card, re.M), s
    assert "Data: image folder faces-train; 321 images." in card
    assert "l2 1, perceptual 0.5, identity 0.25" in card and "Seed: 5." in card
    assert 'load_swapped("org/name")' in card and "vqswitch compress IMAGES --model org/name -o out.vqs" in card
    assert "vqswitch decompress out.vqs -o DIR --model org/name" in card  # decompress needs --model
    assert re.search(r"^\| 3 \| decoder only, on images \(L2 \+ perceptual \+ identity losses\) \|", card, re.M)
    for phrase in ("skin tones", "ages, genders", "surveillance", "consent", "legal", "Not for biometric "
                   "identification", "Usage note", "Intended use", "lossy"):
        assert phrase.lower() in card.lower(), phrase


def test_card_of_a_bare_model_says_what_is_unknown(run, tmp_path):
    save_swapped(run.model, tmp_path / "bare")
    (tmp_path / "bare" / "entropy_model.safetensors").unlink(missing_ok=True)
    card = build_model_card(tmp_path / "bare")
    meta = ModelCard(card).data.to_dict()
    assert "base_model" not in meta and "license" not in meta
    assert "Not evaluated" in card and "Stages: not recorded" in card and "Data: not recorded." in card
    assert table_value(card, "base weights").startswith("not recorded")
    assert table_value(card, "entropy model").startswith("none")
    assert 'load_swapped("ORG/NAME")' in card
    # a local base checkpoint is neither linked, nor put in the front matter, nor named
    card = build_model_card(tmp_path / "bare", run_info={"base_model": str(tmp_path)})
    assert "base_model" not in ModelCard(card).data.to_dict()
    assert table_value(card, "base weights") == "a local checkpoint, not on the Hub"
    assert str(tmp_path) not in card and tmp_path.name not in card


def test_published_run_json_holds_no_local_path(run, tmp_path, offline_cache, monkeypatch):
    """run.json is published with the model: local paths (base model, data folder, loss backbones) are replaced by
    what may be shared -- a Hub id and revision, a folder's name, or nothing."""
    from hubcache import COMMIT, make_cached_repo

    root = _copy_run(run, tmp_path)
    base, backbone = tmp_path / "secret-place" / "vqgan", tmp_path / "secret-place" / "dino"
    base.mkdir(parents=True)
    backbone.mkdir()
    monkeypatch.chdir(tmp_path)
    ev = json.loads((root / "eval.json").read_text())
    write_json(root / "eval.json", {**ev, "skipped_images": [str(base / "broken.png"), "C:\\secret-place\\empty.jpg"]})
    for base_model, expected in ((str(base), (None, None)), ("secret-place/vqgan", (None, None)),
                                 (str(make_cached_repo(offline_cache, "org/base-vq", run.dir / "final")),
                                  ("org/base-vq", COMMIT))):
        write_json(root / "run.json", {**RUN_INFO, "base_model": base_model, "base_revision": None,
                                       "losses": {"perceptual": str(backbone), "identity": "org/face-net"}})
        out = prepare_upload(root, tmp_path / "up", repo_id="org/name")
        text = (out / "run.json").read_text() + (out / "README.md").read_text()
        assert "secret-place" not in text and str(tmp_path) not in text and "/data/" not in text, base_model
        info = json.loads((out / "run.json").read_text())
        assert (info["base_model"], info["base_revision"]) == expected
        assert info["losses"] == {"perceptual": None, "identity": "org/face-net"}
        assert info["data"]["path"] == "faces-train" and info["finetune"] == RUN_INFO["finetune"]
        assert json.loads((out / "eval.json").read_text())["skipped_images"] == ["broken.png", "empty.jpg"]
        card = (out / "README.md").read_text()
        if expected[0] is None:
            assert info["base_description"] == "a local checkpoint, not on the Hub"
            assert table_value(card, "base weights") == "a local checkpoint, not on the Hub"
            assert "base_model" not in ModelCard(card).data.to_dict()
        else:
            assert ModelCard(card).data.to_dict()["base_model"] == "org/base-vq" and f"`{COMMIT}`" in card


def test_demo_output_is_published_with_its_baseline(demo_dir, tmp_path):
    out = prepare_upload(demo_dir, tmp_path / "up", repo_id="org/demo")
    entropy = {"entropy_model.safetensors"} & set(os.listdir(demo_dir / "checkpoint"))
    assert sorted(os.listdir(out)) == sorted(set(PUBLISH_FILES) - {"entropy_model.safetensors"} | entropy)
    assert (out / "eval.json").read_bytes() == (demo_dir / "metrics.json").read_bytes()
    assert (out / "metrics.jsonl").read_bytes() == (demo_dir / "run" / "metrics.jsonl").read_bytes()
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    card = (out / "README.md").read_text()
    assert "base_model" not in ModelCard(card).data.to_dict()
    assert table_value(card, "base weights").startswith("a small MaskGitVQGAN trained from scratch")
    for label, key in (("baseline VQ (before the swap)", "baseline"), (BASELINE_TUNED, "baseline_decoder_tuned"),
                       ("STSCQ (this model)", "stscq")):
        m = metrics[key]
        row = table_value(card, label).split(" | ")
        assert row[:6] == [str(m["num_groups"]), str(m["codebook_size"]), str(m["num_tokens"]),
                           str(m["bits_per_image"]), f"{m['bpp']:.4f}", f"{m['psnr']:.2f}"], label
        assert row[7] == f"{100 * m['utilization_mean']:.1f}%"
    assert "held-out indices 4..5" in card
    # every row of the demo's table, in its order, and the fair comparison spelled out from the numbers
    rows = [line.split(" | ")[0][2:] for line in card.splitlines() if line.startswith("| ") and " | " in line]
    assert rows[rows.index("model"):][1:4] == ["baseline VQ (before the swap)", BASELINE_TUNED, "STSCQ (this model)"]
    ours, fair = metrics["stscq"], metrics["baseline_decoder_tuned"]
    saved = fair["bits_per_image"] - ours["bits_per_image"]
    assert (f"fair comparison is with {BASELINE_TUNED!r}" in card and
            f"Against it, this model uses {saved} fewer bits per image ({100 * saved / fair['bits_per_image']:.1f}%), "
            f"at PSNR {ours['psnr'] - fair['psnr']:+.2f} dB and SSIM {ours['ssim'] - fair['ssim']:+.4f}.") in card
    # stage 3 trained with the L2 loss alone (the demo's perceptual and identity weights are 0)
    assert re.search(r"^\| 3 \| decoder only, on images \(L2 loss\) \|", card, re.M)
    assert "perceptual" not in card.split("## Training")[1].split("## How to use")[0].replace("perceptual 0", "")
    # a prepared folder is itself a valid source, and re-preparing it gives the same card
    again = prepare_upload(out, tmp_path / "again", repo_id="org/demo")
    assert (again / "README.md").read_text() == card


@pytest.mark.parametrize("weights, what", [
    ({"l2_weight": 1.0, "perceptual_weight": 0.0, "identity_weight": 0.0}, "L2 loss"),
    ({"l2_weight": 1.0, "perceptual_weight": 0.1, "identity_weight": 0.0}, "L2 + perceptual losses"),
    ({"l2_weight": 0.0, "perceptual_weight": 0.0, "identity_weight": 2.0}, "identity loss"),
    ({"l2_weight": 1.0, "perceptual_weight": 0.5, "identity_weight": 0.25}, "L2 + perceptual + identity losses"),
    ({}, "losses not recorded"),
])
def test_card_names_the_stage3_losses_actually_used(run, weights, what):
    info = json.loads(json.dumps(RUN_INFO))
    info["finetune"]["stage3"] = {"steps": 13, "lr": 0.0003, "batch_size": 2, **weights}
    card = build_model_card(run.dir / "final", run_info=info)
    assert re.search(rf"^\| 3 \| decoder only, on images \({re.escape(what)}\) \| 13 \|", card, re.M), what


def test_card_shows_every_row_of_an_evaluation(run):
    """Rows beyond the known ones are shown too (under their key), never dropped."""
    ev = evaluation_of(run.model, images(2))
    other = {**ev, "num_groups": 1, "codebook_size": 256, "num_tokens": T, "bits_per_image": 512, "psnr": 30.0}
    card = build_model_card(run.dir / "final", evaluation={"stscq": ev, "baseline": other, "another_reference": other})
    row = table_value(card, "another_reference").split(" | ")
    assert row[:4] == ["1", "256", str(T), "512"] and row[5] == "30.00"
    assert table_value(card, "STSCQ (this model)").split(" | ")[3] == str(bits_per_image(T, K, M))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text("abc-_. ", min_size=1, max_size=5), min_size=1, max_size=4), st.sampled_from(["/", "~/", "./"]))
def test_shareable_run_info_never_keeps_a_local_path(parts, prefix):
    path = prefix + "/".join(parts)
    shared = publish.shareable_run_info({"base_model": path, "data": {"path": path},
                                         "losses": {"perceptual": path, "identity": None}})
    assert shared["base_model"] is None and shared["losses"] == {"perceptual": None, "identity": None}
    assert "/" not in (shared["data"]["path"] or "")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(
    st.sampled_from(["adapter", "base_model", "base_revision", "base_description", "data", "finetune", "license",
                     "losses", "num_groups"]),
    st.recursive(st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                     st.sampled_from(["description", "num_images", "stages", "stage1", "stage3", "steps", "lr",
                                      "batch_size", "seed", "perceptual", "l2_weight"]), inner, max_size=4),
                 max_leaves=8)))
def test_any_run_info_gives_a_card_with_the_models_numbers(run, run_info):
    """Every run.json field is optional and may hold anything: the card still states the checkpoint's numbers."""
    card = build_model_card(run.dir / "final", run_info=run_info)
    ModelCard(card)  # the front matter parses
    assert table_value(card, "codebook groups M") == str(M) and table_value(card, "tokens per image T") == str(T)
    assert table_value(card, "bits per image").endswith(f"= {bits_per_image(T, K, M)}")


# ------------------------------------------------------------------------------------------ push and load back
def test_push_then_load_swapped_reproduces_codes_and_reconstructions(run, hub):
    url = push(run.dir, "org/name", revision="v1", private=True, token="tok")
    assert hub.names() == ["HfApi", "create_repo", "create_branch", "list_repo_files", "create_commit"]
    assert hub.calls[0][2] == {"token": "tok"}
    assert hub.calls[1][1:] == (("org/name",), {"exist_ok": True, "private": True})
    assert hub.calls[2][2]["branch"] == "v1"
    assert hub.calls[3][1:] == (("org/name",), {"revision": "v1"})
    upload = hub.calls[4][2]
    assert upload["repo_id"] == "org/name" and upload["revision"] == "v1" and upload["create_pr"] is False
    assert upload["commit_message"] == f"Upload vqswitch swapped model (M={M}, K={K}, T={T}, 194 bits per image)"
    assert hub.deleted == []  # a new repository: nothing to remove
    assert hub.uploaded == sorted(PUBLISH_FILES)  # every file, in one commit
    assert url == f"https://huggingface.co/org/name/commit/{1:040x}"
    assert not hub.upload_dir.exists()  # the temporary folder is gone

    loaded = load_swapped("org/name", revision="v1")
    assert_same_outputs(run.model, loaded, images(4, seed=3))
    state, other = run.model.state_dict(), loaded.state_dict()
    assert state.keys() == other.keys() and all(torch.equal(state[k], other[k]) for k in state)


def test_push_bare_folder_removes_stale_optional_files_and_opens_a_pr(run, hub, tmp_path):
    push(run.dir, "org/bare")  # an earlier push with every optional file
    assert hub.commits == 1 and hub.deleted == []
    save_swapped(run.model, tmp_path / "bare")
    (tmp_path / "bare" / "entropy_model.safetensors").unlink(missing_ok=True)
    url = push(tmp_path / "bare", "org/bare", create_pr=True, commit_message="mine")
    assert hub.names()[-3:] == ["create_repo", "list_repo_files", "create_commit"]  # no branch for a PR
    upload = hub.calls[-1][2]
    assert upload["create_pr"] is True and upload["revision"] is None and upload["commit_message"] == "mine"
    # the optional files the earlier push left and this folder lacks go in the same commit
    assert hub.deleted == sorted(["entropy_model.safetensors", "run.json", "eval.json", "metrics.jsonl"])
    assert hub.uploaded == ["README.md", "config.json", "model.safetensors"]
    assert url == "https://huggingface.co/org/bare/discussions/1"
    assert_same_outputs(run.model, load_swapped("org/bare"), images(4, seed=4))


@pytest.mark.parametrize("error", [ConnectionError("network is unreachable"), RuntimeError("server said no")])
@pytest.mark.parametrize("step", ["create_repo", "list_repo_files", "create_commit"])
def test_hub_failures_are_one_clear_oserror(run, monkeypatch, offline_cache, error, step):
    import huggingface_hub

    fake = FakeHub(offline_cache, fail={step: error})
    monkeypatch.setattr(huggingface_hub, "HfApi", fake.api)
    with pytest.raises(OSError, match=r"'org/name' failed while .*" + str(error)) as info:
        push(run.dir, "org/name")
    assert "no files were committed" in str(info.value) and info.value.__cause__ is error
    assert fake.names()[-1] == step and fake.commits == 0 and list(offline_cache.iterdir()) == []


# ------------------------------------------------------------------------------------------ bad input
BAD_IDS = ["name", "org/", "/name", "org/name/x", "org//name", "-org/name", "org/name-", "org/na me", "org/na--me",
           "org/na..me", "org/" + "n" * 100, "ürg/name", ""]


@pytest.mark.parametrize("repo_id", BAD_IDS)
def test_bad_repo_ids_are_refused_before_any_hub_call(run, hub, repo_id):
    with pytest.raises(ValueError, match="repo_id"):
        push(run.dir, repo_id)
    assert hub.instances == 0


_CHUNK = st.text("abcXYZ019_", min_size=1, max_size=6)
HUB_NAMES = st.builds(lambda first, rest: first + "".join(sep + chunk for sep, chunk in rest), _CHUNK,
                      st.lists(st.tuples(st.sampled_from("-._"), _CHUNK), max_size=3))


@settings(max_examples=40, deadline=None)
@given(HUB_NAMES, HUB_NAMES, st.sampled_from(" /:@#?*\\\nü"), st.integers(0, 60))
def test_repo_id_check_accepts_hub_ids_and_refuses_any_bad_character(org, name, bad, pos):
    assert check_repo_id("repo_id", f"{org}/{name}") == f"{org}/{name}"
    text = f"{org}/{name}"
    pos = min(pos, len(text))
    with pytest.raises(ValueError):
        check_repo_id("repo_id", text[:pos] + bad + text[pos:])


def test_wrong_argument_types(run, hub):
    with pytest.raises(TypeError, match="repo_id"):
        push(run.dir, 123)
    with pytest.raises(TypeError, match="private"):
        push(run.dir, "org/name", private="yes")
    with pytest.raises(ValueError, match="revision"):
        push(run.dir, "org/name", revision=" ")
    with pytest.raises(TypeError, match="run_dir"):
        push(None, "org/name")
    assert hub.instances == 0


def _bad_run_dirs(root: Path) -> dict[str, tuple[Path, str]]:
    from vqswitch import SwitchableTokenQuantizer

    (root / "empty").mkdir()
    (root / "file.txt").write_text("x")
    (root / "nofinal" / "final").mkdir(parents=True)
    SwitchableTokenQuantizer(num_tokens=4, codebook_size=8, dim=3).save_pretrained(root / "quantizer")
    return {"missing": (root / "missing", "is not a folder"), "empty": (root / "empty", "neither config.json"),
            "file": (root / "file.txt", "is not a folder"),
            "final without config": (root / "nofinal", "no config.json"),
            "quantizer only": (root / "quantizer", "not a vqswitch swapped-model config")}


def test_bad_run_dirs_are_refused_naming_the_path(run, hub, tmp_path):
    for what, (path, message) in _bad_run_dirs(tmp_path).items():
        with pytest.raises(ValueError, match=re.escape(message)) as info:
            push(path, "org/name")
        assert str(path.name) in str(info.value) and "expected" in str(info.value), what
        assert hub.instances == 0, what


def _copy_run(run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run.dir, dst)
    return dst


@pytest.mark.parametrize("breakage, message", [
    ("truncated weights", "does not load"),
    ("weights of another save", "does not load"),
    ("missing weights", "does not load"),
    ("entropy model of another K", "belongs to another model"),
    ("evaluation of another model", "belongs to another model"),
    ("run.json not JSON", "not valid JSON"),
    ("run.json of another format", "format"),
])
def test_broken_runs_are_never_uploaded(run, hub, tmp_path, breakage, message):
    from vqswitch.entropy import EntropyModel

    root = _copy_run(run, tmp_path)
    final = root / "final"
    if breakage == "truncated weights":
        data = (final / "model.safetensors").read_bytes()
        (final / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif breakage == "weights of another save":
        save_swapped(run.model, tmp_path / "other")
        shutil.copyfile(tmp_path / "other" / "model.safetensors", final / "model.safetensors")
    elif breakage == "missing weights":
        (final / "model.safetensors").unlink()
    elif breakage == "entropy model of another K":
        EntropyModel(torch.zeros(M, T, K + 1, dtype=torch.long), torch.zeros(M, dtype=torch.long),
                     num_tokens=T).save(final / "entropy_model.safetensors")
    elif breakage == "evaluation of another model":
        ev = json.loads((root / "eval.json").read_text())
        write_json(root / "eval.json", {**ev, "bits_per_image": 193})
    elif breakage == "run.json not JSON":
        (root / "run.json").write_text("{not json")
    else:
        write_json(root / "run.json", {**RUN_INFO, "format": "something-else"})
    with pytest.raises(ValueError, match=message):
        push(root, "org/name")
    assert hub.instances == 0 and list(hub.cache.iterdir()) == []
    out = tmp_path / "dry"
    with pytest.raises(ValueError, match=message):
        prepare_upload(root, out)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_out_dir_is_replaced_only_when_safe(run, tmp_path):
    out = prepare_upload(run.dir, tmp_path / "up")
    first = (out / "README.md").read_text()
    assert 'load_swapped("ORG/NAME")' in first
    prepare_upload(run.dir, out, repo_id="org/name")  # a folder prepare_upload wrote is replaced as a whole
    assert 'load_swapped("org/name")' in (out / "README.md").read_text()
    assert sorted(os.listdir(out)) == sorted(PUBLISH_FILES)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="already exists"):
        prepare_upload(run.dir, tmp_path / "busy")
    assert os.listdir(tmp_path / "busy") == ["notes.txt"]
    with pytest.raises(ValueError, match="is or contains"):
        prepare_upload(run.dir, run.dir / "final")
    with pytest.raises(ValueError, match="is or contains"):
        prepare_upload(out, out)
    assert sorted(os.listdir(out)) == sorted(PUBLISH_FILES)


# ------------------------------------------------------------------------------------------ command line
def _main(argv):
    """``vqswitch push ARGV`` in-process -> (exit code, stdout, stderr); argparse's usage errors exit (SystemExit)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(["push", *(str(a) for a in argv)])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_cli_dry_run(run, tmp_path):
    code, out, err = _main([run.dir, "--repo-id", "org/name", "--dry-run", tmp_path / "up"])
    assert (code, err) == (0, "") and str(tmp_path / "up") in out
    assert sorted(os.listdir(tmp_path / "up")) == sorted(PUBLISH_FILES)
    assert 'load_swapped("org/name")' in (tmp_path / "up" / "README.md").read_text()


def test_cli_push(run, hub):
    code, out, err = _main([run.dir, "--repo-id", "org/name", "--revision", "dev", "--message", "hello"])
    assert (code, err) == (0, "") and f"commit/{1:040x}" in out
    assert hub.calls[-1][2]["revision"] == "dev" and hub.calls[-1][2]["commit_message"] == "hello"
    assert hub.calls[1][2]["private"] is None  # without --private the Hub's default visibility is kept
    assert_same_outputs(run.model, load_swapped("org/name", revision="dev"), images(4, seed=5))


@pytest.mark.parametrize("argv, message", [
    (["{missing}", "--repo-id", "org/name"], "is not a folder"),
    (["{run}"], "--repo-id ORG/NAME is required"),
    (["{run}", "--repo-id", "bad id"], "repo_id must be"),
])
def test_cli_errors_are_one_line_and_exit_2(run, hub, tmp_path, argv, message):
    argv = [a.format(missing=tmp_path / "missing", run=run.dir) for a in argv]
    code, out, err = _main(argv)
    assert code == 2 and out == "" and hub.instances == 0
    assert err.count("\n") == 1 and err.startswith("vqswitch push: error: ") and message in err


def test_cli_usage_errors_exit_2(run):
    code, _, err = _main([])
    assert code == 2 and "RUN_DIR" in err
