"""benchmarks/bench_faces.py: the real-faces experiment's smoke run (--quick), on face folders it has never seen.

The folders are written here from procedural faces in the one-folder-per-identity layout (the CelebA images may
not be committed); one extra evaluation set carries an LFW-format pairs.txt, another has none (pairs are drawn).
The tokenizer is the real pretrained vqvae-cifar (tests/fixtures/vqvae-cifar), built by the user-code example.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "fixtures" / "vqvae-cifar" / "vqvae.pt"
sys.path.insert(0, str(ROOT / "benchmarks"))

pytest.importorskip("dlib", reason="the faces benchmark needs the [faces] extra (dlib)")
pytest.importorskip("matplotlib", reason="the faces benchmark draws plots with matplotlib")

import bench_faces  # noqa: E402


def write_faces(root: Path, identities: int, per_identity: int, seed: int, lfw_names: bool = False) -> list[str]:
    """Procedural faces as 64x64 PNGs in root/<identity>/; returns the identity names."""
    from PIL import Image

    from vqswitch.data import ProceduralFaces

    faces = ProceduralFaces(identities * per_identity, 64, seed=seed, num_identities=identities)
    images = faces.get_batch(range(len(faces)))
    names = [f"person_{i:03d}" for i in range(identities)]
    counts = [0] * identities
    for i, ident in enumerate(faces.identities.tolist()):
        counts[ident] += 1
        folder = root / names[ident]
        folder.mkdir(parents=True, exist_ok=True)
        fname = f"{names[ident]}_{counts[ident]:04d}.png" if lfw_names else f"{100000 + i:06d}.png"
        arr = (images[i].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / fname)
    return names


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("faces")
    write_faces(base / "train", identities=16, per_identity=8, seed=3)
    (base / "train" / "broken").mkdir()
    (base / "train" / "broken" / "000001.png").write_bytes(b"not a png")  # reported and skipped
    names = write_faces(base / "lfw", identities=4, per_identity=5, seed=11, lfw_names=True)
    lines = ["2 5"]
    for s in range(2):
        for k in range(5):
            lines.append(f"{names[(s + k) % 4]} {1 + k % 5} {1 + (k + 2) % 5}")
        for k in range(5):
            lines.append(f"{names[k % 4]} {1 + k % 5} {names[(k + 1 + s) % 4]} {1 + (k + 3) % 5}")
    (base / "lfw" / "pairs.txt").write_text("\n".join(lines) + "\n")
    write_faces(base / "drawn", identities=5, per_identity=6, seed=21)
    return base


@pytest.mark.slow
def test_quick_run_on_unseen_folders(folders, tmp_path):
    if not MODEL.is_file():
        pytest.skip("tests/fixtures/vqvae-cifar/vqvae.pt is missing")
    out = tmp_path / "out"
    rc = bench_faces.main(["--data", str(folders / "train"), "--model", str(MODEL), "--out", str(out), "--quick",
                           "--no-progress", "--eval-data", str(folders / "lfw"), "--eval-data", str(folders / "drawn")])
    assert rc == 0
    result = json.loads((out / "results.json").read_text())
    for name in ("table.md", "table.txt", "psnr_vs_bpp.png", "verification_vs_bpp.png", "reconstructions.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "results.partial.json").exists()  # the finished run replaced it
    cfg = bench_faces.QUICK
    rows = result["rows"]
    # as it comes + every baseline K + every STSCQ (M, K)
    assert len(rows) == 1 + len(cfg.baseline_k) + len(cfg.stscq_m) * len(cfg.stscq_k)
    assert rows[0]["method"] == "upstream" and rows[0]["codebook_size"] == 512 and rows[0]["bits_per_image"] == 2304
    for r in rows:
        T, K, M = r["num_tokens"], r["codebook_size"], r["num_groups"]
        assert T == 256  # 64x64 faces through a downsampling factor of 4
        assert r["bits_per_image"] == T * (K - 1).bit_length() + (M - 1).bit_length()
        assert r["bpp"] == pytest.approx(r["bits_per_image"] / 64 ** 2)
        assert 0.0 <= r["verification"] <= 1.0 and -1.0 <= r["ids"] <= 1.0
        assert set(r["sets"]) == {s["name"] for s in result["sets"]}
        if r["method"] != "upstream":
            assert (out / "models" / bench_faces._slug(r["label"]) / "model.safetensors").is_file()
    # identities never cross the split; the broken file was reported, not fatal
    assert result["data"]["train_identities"] + result["data"]["test_identities"] == result["data"]["identities"]
    assert any("broken" in str(s) for s in result["data"]["skipped"])
    sets = {s["name"]: s for s in result["sets"]}
    assert sets["lfw"]["pairs_source"] != "drawn" and sets["lfw"]["pairs"] == 20
    assert sets["drawn"]["pairs_source"] == "drawn"
    assert sets["drawn"]["same_pairs"] * 2 == sets["drawn"]["pairs"]


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert bench_faces.main(["--data", str(tmp_path / "nope"), "--model", str(MODEL), "--out", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert bench_faces.main(["--data", str(tmp_path), "--model", str(tmp_path / "x.pt"), "--out", str(tmp_path)]) == 2
    assert bench_faces.main(["--data", str(tmp_path), "--model", str(MODEL), "--out", str(tmp_path),
                             "--stscq-k", "0"]) == 2


def test_builder_errors(tmp_path):
    from vqswitch.adapters import load_builder, load_model

    with pytest.raises(ValueError, match="module:function"):
        load_builder("no_colon_here")
    with pytest.raises(ValueError, match="no such file"):
        load_builder(str(tmp_path / "missing.py") + ":build")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_here'"):
        load_builder("no_such_module_here:build")
    f = tmp_path / "m.py"
    f.write_text("import torch\nx = 1\ndef not_a_model():\n    return 3\n"
                 "def unknown():\n    return torch.nn.Linear(2, 2)\n")
    with pytest.raises(ValueError, match="no function 'build'"):
        load_builder(f"{f}:build")
    with pytest.raises(TypeError, match="returned int, not a torch.nn.Module"):
        load_model(f"{f}:not_a_model")
    with pytest.raises(ValueError, match="no vqswitch adapter recognises Linear"):
        load_model(f"{f}:unknown")
    model = load_model(str(ROOT / "examples" / "vqvae_cifar.py") + ":build")  # the user-code example, by path
    assert type(model).__name__ == "VQVAE" and not model.training


def test_even_subset_spreads_over_labels():
    labels = torch.tensor([0] * 50 + [1] * 5 + [2] * 5)
    idx = bench_faces._even_subset(labels, 12, seed=0)
    assert idx.numel() == 12 and idx.unique().numel() == 12
    counts = torch.bincount(labels[idx], minlength=3)
    assert counts.tolist() == [4, 4, 4]
    assert torch.equal(bench_faces._even_subset(labels, None, seed=0), torch.arange(60))


def test_grid_shows_different_people_first():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    assert bench_faces.grid_index(labels, 3).tolist() == [0, 3, 5]  # one face of each person
    assert bench_faces.grid_index(labels, 5).tolist() == [0, 3, 5, 1, 2]  # then more of the same people
    assert bench_faces.grid_index(labels, 20).tolist() == [0, 3, 5, 1, 2, 4, 6, 7]


def test_verdict_on_made_up_rows():
    """The verification verdict follows the rows: a point well above the baseline curve 'beats', below 'loses'."""
    def row(method, label, bpp, ver, psnr):
        return {"method": method, "label": label, "bpp": bpp, "verification": ver, "verification_se": 0.005,
                "psnr": psnr, "psnr_per_image": [psnr + d for d in (-0.1, 0.0, 0.1)], "ssim": 0.8,
                "num_groups": 1, "codebook_size": 16, "token_specific": method == "stscq", "bits_per_image": 1}
    rows = [row("baseline", "b16", 0.25, 0.70, 20.0), row("baseline", "b32", 0.3125, 0.80, 21.0),
            row("stscq", "good", 0.28, 0.90, 22.0), row("stscq", "bad", 0.28, 0.60, 19.0),
            row("stscq", "far", 0.5, 0.99, 25.0)]
    v = bench_faces.verdict(rows)
    outcome = {p["label"]: p["outcome"] for p in v["verification"]["points"]}
    assert outcome == {"good": "beats", "bad": "loses", "far": "out of range"}
