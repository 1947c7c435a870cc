"""`vqswitch compress`, `vqswitch decompress` and `vqswitch push` as a user runs them."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqswitch.adapters import decode_codes, encode_codes
from vqswitch.bits import bits_per_image
from swapped import save_counted_swapped
from vqswitch.cli import main
from vqswitch.data import procedural_faces

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "maskgit_vqgan_tiny"  # 32x32 images, T = 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_counted_swapped(tmp_path_factory.mktemp("cli_codec") / "model")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faces")
    for i, img in enumerate(procedural_faces(5, size=32, seed=3)):
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"f{i}.png")
    return sorted(folder.glob("*.png"))


def _read(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255).permute(2, 0, 1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["entropy", "fixed", "auto"])
def test_compress_then_decompress(model_dir, faces, tmp_path, capsys, mode):
    out = tmp_path / "faces.vqs"
    assert main(["compress", *map(str, faces), "--model", str(model_dir), "-o", str(out), "--mode", mode,
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    fixed = bits_per_image(64, 16, 2)
    assert f"mode {'entropy' if mode == 'auto' else mode}" in printed
    assert re.search(rf"^fixed +{fixed} +{fixed / 1024:.4f}$", printed, flags=re.M)  # both modes' costs
    assert re.search(r"^entropy +[\d.]+ +[\d.]+ +\([\d.]+% fewer bits than fixed", printed, flags=re.M)
    assert main(["compress", *map(str, faces), "--model", str(model_dir), "-o", str(out), "--mode", mode,
                 "--no-progress", "--json", "--overwrite"]) == 0  # an existing file is replaced only when asked
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 5 and report["fixed_bits_per_image"] == fixed
    assert report["mode"] == ("entropy" if mode == "auto" else mode)  # auto: entropy coding is the smaller here
    assert report["total_bytes"] == out.stat().st_size
    assert report["entropy_bits_per_image"] < fixed  # skewed statistics: entropy coding saves bits
    assert main(["decompress", str(out), "-o", str(tmp_path / "png"), "--no-progress", "--model", str(model_dir)]) == 0
    written = sorted((tmp_path / "png").glob("*.png"))
    assert [p.name for p in written] == [p.name for p in faces]
    from vqswitch.adapters import load_swapped

    model = load_swapped(model_dir)
    x = torch.stack([_read(p) for p in faces])
    expected = (decode_codes(model, encode_codes(model, x)).clamp(0, 1) * 255).round()
    got = torch.stack([_read(p) for p in written]) * 255
    assert torch.equal(got.round(), expected)  # the PNGs are the model's reconstructions of the originals


def test_errors_are_one_line_and_leave_nothing(model_dir, faces, tmp_path, capsys):
    out = tmp_path / "x.vqs"
    assert main(["compress", str(tmp_path / "missing.png"), "--model", str(model_dir), "-o", str(out)]) == 2
    assert "no such image file" in capsys.readouterr().err
    big = tmp_path / "big.png"
    Image.new("RGB", (48, 48)).save(big)
    assert main(["compress", str(faces[0]), str(big), "--model", str(model_dir), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vqswitch: error:") and "big.png" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["compress", str(faces[0]), "--model", str(tmp_path / "nomodel"), "-o", str(out)]) == 2
    assert "vqswitch: error:" in capsys.readouterr().err and not out.exists()

    good = tmp_path / "good.vqs"
    assert main(["compress", str(faces[0]), "--model", str(model_dir), "-o", str(good), "--no-progress"]) == 0
    capsys.readouterr()
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "bad.vqs"
    bad.write_bytes(bytes(data))
    assert main(["decompress", str(bad), "-o", str(tmp_path / "o"), "--no-progress"]) == 1  # a runtime failure
    assert "vqswitch: error:" in capsys.readouterr().err and not (tmp_path / "o").exists()
    model = ["--model", str(model_dir)]
    assert main(["decompress", str(good), "-o", str(tmp_path / "o"), "--no-progress", *model]) == 0
    assert main(["decompress", str(good), "-o", str(tmp_path / "o"), "--no-progress", *model]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["decompress", str(good), "-o", str(tmp_path / "o"), "--no-progress", "--overwrite", *model]) == 0
    assert main(["decompress", str(tmp_path / "nothing.vqs"), "-o", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_push_is_dispatched_to_publish(model_dir, tmp_path, capsys):
    assert main(["push", str(model_dir), "--dry-run", str(tmp_path / "upload")]) == 0
    assert {"config.json", "model.safetensors", "entropy_model.safetensors", "README.md"} <= {
        p.name for p in (tmp_path / "upload").iterdir()}
    assert main(["push", str(model_dir), "--repo-id", "not a repo"]) == 2
    assert "error" in capsys.readouterr().err


def _cached_repo(model_dir, cache, repo_id="org/cli-codec"):
    """The model as a Hub repo in the offline cache (what a file can name: never a local folder)."""
    from hubcache import make_cached_repo

    return make_cached_repo(cache, repo_id, model_dir, files=["config.json", "model.safetensors",
                                                             "entropy_model.safetensors"])


def _lying_model(model_dir, cache, tmp_path, faces, k: int, m: int):
    """A Hub repo (in the offline cache) of the model whose config.json asks for K codes in M groups (its weights
    unchanged), and a .vqs file compressed with the honest version that names it."""
    folder = _cached_repo(model_dir, cache, "org/lying")
    vqs = tmp_path / "x.vqs"
    assert main(["compress", str(faces[0]), "--model", "org/lying", "-o", str(vqs), "--no-progress"]) == 0
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantizer"].update(codebook_size=k, num_groups=m)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder, vqs


def test_decompress_loads_the_model_a_file_names_only_when_trusted(model_dir, faces, tmp_path, capsys,
                                                                   offline_cache):
    _cached_repo(model_dir, offline_cache)
    vqs = tmp_path / "x.vqs"
    assert main(["compress", str(faces[0]), "--model", "org/cli-codec", "-o", str(vqs), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["decompress", str(vqs), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--trust-file-model" in err and "--model" in err and "'org/cli-codec'" in err
    assert not (tmp_path / "o").exists()
    assert main(["decompress", str(vqs), "-o", str(tmp_path / "o"), "--no-progress", "--trust-file-model"]) == 0


def test_a_file_made_from_a_local_folder_names_no_path(model_dir, faces, tmp_path, capsys, monkeypatch):
    """A relative --model works, the file records no local path, and decoding it (from another folder) needs
    --model, which the error says."""
    monkeypatch.chdir(model_dir.parent)
    vqs = tmp_path / "x.vqs"
    assert main(["compress", str(faces[0]), "--model", model_dir.name, "-o", str(vqs), "--no-progress"]) == 0
    assert str(model_dir.parent).encode() not in vqs.read_bytes() and model_dir.name.encode() not in vqs.read_bytes()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["decompress", str(vqs), "-o", "o", "--no-progress", "--trust-file-model"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("vqswitch: error:") and "--model" in err and "codec_model=" not in err
    assert main(["decompress", str(vqs), "-o", "o", "--no-progress", "--model", str(model_dir)]) == 0


def test_a_config_asking_for_more_than_its_weights_hold_fails_before_building(model_dir, faces, tmp_path, capsys,
                                                                            offline_cache):
    import resource
    import time

    folder, vqs = _lying_model(model_dir, offline_cache, tmp_path, faces, k=65536, m=8)  # 4.3 GB, if built
    capsys.readouterr()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    assert main(["decompress", str(vqs), "-o", str(tmp_path / "o"), "--no-progress", "--trust-file-model"]) == 1
    seconds = time.perf_counter() - t0
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # ru_maxrss is KiB on Linux
    err = capsys.readouterr().err
    assert err.startswith("vqswitch: error:") and "codebooks" in err and "does not match" in err
    assert grown_mib < 200 and seconds < 10, (grown_mib, seconds)
    assert main(["decompress", str(vqs), "-o", str(tmp_path / "o"), "--no-progress", "--model", str(folder)]) == 1
    assert "does not match" in capsys.readouterr().err
