"""`vqswitch demo` (vqswitch/experiments/demo.py, the command in vqswitch/cli/demo.py): a quick run end to end, its
files, its numbers and its command line.

Every test that runs the demo is marked slow; the argument and data errors fail before any training and stay fast."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
import json

import numpy as np
import pytest
import torch

from vqswitch.bits import bits_per_image, bpp
from vqswitch.cli import main as vqswitch
from vqswitch.experiments.demo import run_demo
from vqswitch.experiments.faces import QUICK, format_table


def main(argv) -> int:
    """``vqswitch demo ARGV`` in-process -> exit code (argparse's SystemExit becomes its code)."""
    try:
        return vqswitch(["demo", *argv])
    except SystemExit as e:
        return e.code


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        metrics = run_demo(out, quick=True, progress=False)
    return out, metrics, stdout.getvalue()


def _test_faces():
    from vqswitch.data import ProceduralFaces

    n = QUICK.num_train + QUICK.num_test
    return ProceduralFaces(n, QUICK.image_size, seed=0).get_batch(range(QUICK.num_train, n))


@pytest.mark.slow
def test_metrics_json_has_both_models(quick_run):
    out, metrics, _ = quick_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))  # the file holds what run_demo returned
    for key in ("baseline", "stscq"):
        m = saved[key]
        for field in ("bits_per_image", "bpp", "psnr", "ssim", "utilization_mean"):
            assert field in m, (key, field)
        assert m["images"] == QUICK.num_test
        assert isinstance(m["psnr"], float) and 0.0 < m["psnr"] < 100.0
        assert -1.0 <= m["ssim"] <= 1.0
        assert 0.0 < m["utilization_mean"] <= 1.0
    assert saved["baseline"]["num_groups"] == 1 and saved["baseline"]["codebook_size"] == QUICK.codebook_size0
    assert saved["stscq"]["num_groups"] == QUICK.num_groups and saved["stscq"]["codebook_size"] == QUICK.codebook_size
    assert saved["stscq"]["token_specific"] is True  # stage 2 made the codebooks token-specific
    assert sum(saved["stscq"]["group_counts"]) == QUICK.num_test


@pytest.mark.slow
def test_the_fair_reference_changes_only_the_decoder(quick_run):
    """The "baseline + stage 3" row: the baseline's own codes (same bits, same utilisation on the test faces),
    with the decoder fine-tuned as STSCQ's is in stage 3."""
    _, metrics, _ = quick_run
    base, tuned = metrics["baseline"], metrics["baseline_decoder_tuned"]
    assert (tuned["num_groups"], tuned["codebook_size"], tuned["token_specific"]) == (1, QUICK.codebook_size0, False)
    assert tuned["bits_per_image"] == base["bits_per_image"]
    assert tuned["utilization_mean"] == pytest.approx(base["utilization_mean"])  # identical codes
    assert tuned["psnr"] != base["psnr"]  # the decoder did train


@pytest.mark.slow
def test_bits_follow_the_formula_and_drop(quick_run):
    _, metrics, _ = quick_run
    f = 2 ** (len(QUICK.channel_mult) - 1)
    T = (QUICK.image_size // f) ** 2
    base, ours = metrics["baseline"], metrics["stscq"]
    assert base["num_tokens"] == ours["num_tokens"] == T
    assert base["bits_per_image"] == bits_per_image(T, QUICK.codebook_size0, 1)
    assert ours["bits_per_image"] == bits_per_image(T, QUICK.codebook_size, QUICK.num_groups)
    assert ours["bits_per_image"] < base["bits_per_image"]
    for m in (base, ours):
        assert m["bpp"] == pytest.approx(bpp(m["bits_per_image"], QUICK.image_size, QUICK.image_size))


@pytest.mark.slow
def test_reconstruction_grid_is_labelled_and_enlarged(quick_run):
    """reconstructions.png: a text band above each of the 4 rows (original, baseline VQ, baseline + stage 3, STSCQ),
    every pixel a grid_scale x grid_scale block, the first tile the first test face."""
    from PIL import Image

    from vqswitch.data import label_band_height

    out, _, _ = quick_run
    k, s = min(QUICK.grid_images, QUICK.num_test), QUICK.image_size * QUICK.grid_scale
    pad, band = 2, label_band_height()
    with Image.open(out / "reconstructions.png") as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.size == (k * s + (k + 1) * pad, 4 * (band + s + pad) + pad)
        pixels = torch.from_numpy(np.asarray(im, dtype=np.float32))
    for r in range(4):  # each band holds drawn text (white pixels) and nothing else but black
        top = pad + r * (band + s + pad)
        strip = pixels[top:top + band]
        assert (strip.amax(dim=2) > 128).sum() > 20, r
        below = pixels[top + band:top + band + s, pad:pad + s]
        assert below.std() > 0, r  # an image follows its band
    tile = pixels[pad + band:pad + band + s, pad:pad + s]  # original, enlarged by nearest neighbour
    original = (_test_faces()[0].permute(1, 2, 0) * 255).round()
    up = original.repeat_interleave(QUICK.grid_scale, 0).repeat_interleave(QUICK.grid_scale, 1)
    assert (tile - up).abs().max() <= 1


@pytest.mark.slow
def test_grid_rows_label_bits_and_psnr(quick_run):
    from vqswitch.experiments.faces import grid_rows

    _, metrics, _ = quick_run
    x = _test_faces()[:2]
    rows = grid_rows(x, metrics, {"baseline": x, "baseline_decoder_tuned": x, "stscq": x})
    assert [label.split(":")[0] for label, _ in rows] == ["original", "baseline VQ", "baseline + stage 3", "STSCQ"]
    for (label, _), key in zip(rows[1:], ("baseline", "baseline_decoder_tuned", "stscq")):
        assert f"{metrics[key]['bits_per_image']} bits/image" in label
        assert f"{metrics[key]['psnr']:.2f} dB" in label


def test_save_labelled_grid_sizes_and_errors(tmp_path):
    from PIL import Image

    from vqswitch.data import label_band_height, save_labelled_grid

    a, b = torch.rand(3, 3, 5, 7), torch.rand(2, 1, 5, 7)
    path = save_labelled_grid([("a", a), ("b", b)], tmp_path / "g.png", scale=3, padding=1)
    with Image.open(path) as im:
        assert im.size == (3 * 7 * 3 + 4, 2 * (label_band_height() + 5 * 3 + 1) + 1)
    with pytest.raises(ValueError, match="rows"):
        save_labelled_grid([], tmp_path / "g.png")
    with pytest.raises(ValueError, match="rows\\[1\\]"):
        save_labelled_grid([("a", a), ("b", torch.rand(1, 3, 4, 4))], tmp_path / "g.png")
    with pytest.raises(TypeError, match="rows\\[0\\]"):
        save_labelled_grid([(1, a)], tmp_path / "g.png")
    with pytest.raises(ValueError, match="scale"):
        save_labelled_grid([("a", a)], tmp_path / "g.png", scale=0)
    with pytest.raises(ValueError, match="path"):
        save_labelled_grid([("a", a)], tmp_path / "g.txt")


@pytest.mark.slow
def test_checkpoint_reloads_and_reproduces_the_codes(quick_run):
    from vqswitch.adapters import decode_codes, encode_codes, load_swapped, swapped_quantizer
    from vqswitch.eval import psnr, ssim

    out, metrics, _ = quick_run
    assert (out / "checkpoint" / "config.json").is_file()
    assert (out / "checkpoint" / "model.safetensors").is_file()
    model = load_swapped(out / "checkpoint").eval()
    q = swapped_quantizer(model)
    assert (q.num_groups, q.codebook_size) == (QUICK.num_groups, QUICK.codebook_size)
    assert q.bits_per_image == metrics["stscq"]["bits_per_image"]
    x = _test_faces()
    codes = encode_codes(model, x)
    assert torch.equal(codes.indices, encode_codes(model, x).indices)
    # the reloaded model gives the very codes and images the run measured
    assert torch.bincount(codes.groups, minlength=q.num_groups).tolist() == metrics["stscq"]["group_counts"]
    recon = decode_codes(model, codes).clamp(0, 1)
    assert float(psnr(x, recon, 1.0)) == pytest.approx(metrics["stscq"]["psnr"], abs=1e-6)
    assert float(ssim(x, recon, 1.0)) == pytest.approx(metrics["stscq"]["ssim"], abs=1e-6)


@pytest.mark.slow
def test_printed_table(quick_run):
    _, metrics, printed = quick_run
    table = format_table(metrics)
    assert table in printed
    lines = table.splitlines()
    assert len(lines) == 5 and len({len(line) for line in lines}) == 1  # header, rule, three aligned rows
    base = next(line for line in lines if line.startswith("baseline VQ"))
    tuned = next(line for line in lines if line.startswith("baseline + stage 3"))
    assert str(metrics["baseline"]["bits_per_image"]) in tuned.split()  # the same bits, only the decoder tuned
    assert f"{metrics['baseline_decoder_tuned']['psnr']:.2f}" in tuned.split()
    ours = next(line for line in lines if line.startswith("STSCQ"))
    assert str(metrics["baseline"]["bits_per_image"]) in base.split()
    assert str(metrics["stscq"]["bits_per_image"]) in ours.split()
    assert f"{metrics['stscq']['psnr']:.2f}" in ours.split()


@pytest.mark.slow
def test_run_info_describes_the_run(quick_run):
    out, metrics, _ = quick_run
    info = json.loads((out / "run.json").read_text())
    assert info["format"] == "vqswitch-run" and info["adapter"] == "maskgit-vqgan"
    assert info["data"]["num_images"] == QUICK.num_train
    assert info["finetune"]["stages"] == [1, 2, 3]
    assert [info["finetune"][f"stage{s}"]["steps"] for s in (1, 2, 3)] == [
        QUICK.stage1_steps, QUICK.stage2_steps, QUICK.stage3_steps]
    assert (info["num_groups"], info["codebook_size"]) == (QUICK.num_groups, QUICK.codebook_size)


@pytest.mark.slow
def test_main_runs_and_is_deterministic(quick_run, tmp_path, capsys):
    _, metrics, _ = quick_run
    assert main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "STSCQ" in capsys.readouterr().out
    again = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("baseline", "stscq"):  # same seed, same numbers
        for field in ("psnr", "ssim", "utilization_mean", "bits_per_image"):
            assert again[key][field] == metrics[key][field], (key, field)


@pytest.mark.slow
def test_vqswitch_demo_command(quick_run, tmp_path, capsys):
    """`vqswitch demo` (the README's main job) is the same run."""
    _, metrics, _ = quick_run
    assert vqswitch(["demo", "--quick", "--out", str(tmp_path), "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    assert format_table(metrics) in captured.err  # with --json, stdout holds only the JSON
    assert json.loads(captured.out)["stscq"]["psnr"] == metrics["stscq"]["psnr"]
    (tmp_path / "file").write_text("x")
    assert vqswitch(["demo", "--quick", "--out", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err
    again = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("baseline", "stscq"):  # same seed, same numbers
        for field in ("psnr", "ssim", "utilization_mean", "bits_per_image"):
            assert again[key][field] == metrics[key][field], (key, field)


@pytest.mark.parametrize("argv", [["--seed", "-1"], ["--seed", "x"], ["--bogus"], ["--quick", "extra"]])
def test_main_rejects_bad_arguments(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_main_rejects_a_file_as_out(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["--quick", "--out", str(f), "--no-progress"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_run_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="seed"):
        run_demo(tmp_path, quick=True, seed=-1, progress=False)
    with pytest.raises(TypeError, match="quick"):
        run_demo(tmp_path, quick="yes", progress=False)


# ------------------------------------------------------------------------------------------------ --data


def _face_folder(root, identities: int, per_identity: int, size: int = 40):
    """A tiny one-folder-per-identity tree of PNG faces (procedural, written with Pillow)."""
    from PIL import Image

    from vqswitch.data import ProceduralFaces

    faces = ProceduralFaces(identities * per_identity, size, seed=3, num_identities=identities)
    for i in range(identities * per_identity):
        folder = root / f"person{i % identities:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (faces[i].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


@pytest.mark.slow
def test_demo_on_a_face_folder_splits_by_identity(tmp_path, capsys):
    from vqswitch.data import split_identities

    root = _face_folder(tmp_path / "faces", identities=5, per_identity=4)
    out = tmp_path / "out"
    assert main(["--quick", "--out", str(out), "--no-progress", "--data", str(root)]) == 0
    assert "STSCQ" in capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    info = saved["config"]["data_info"]
    train_ids, test_ids = split_identities([f"person{i:02d}" for i in range(5)], 0.2, seed=0)
    assert (info["train_identities"], info["test_identities"]) == (len(train_ids), len(test_ids)) == (4, 1)
    assert (info["train_images"], info["test_images"]) == (16, 4)  # whole people on each side
    assert saved["baseline"]["images"] == saved["stscq"]["images"] == 4
    run = json.loads((out / "run.json").read_text())
    assert run["data"]["path"] == str(root) and run["data"]["num_images"] == 16
    assert (out / "reconstructions.png").is_file()


def test_folder_faces_keeps_people_apart(tmp_path):
    from vqswitch.experiments.faces import folder_faces

    root = _face_folder(tmp_path / "faces", identities=4, per_identity=3)
    train, test, info = folder_faces(root, 16, seed=1, test_fraction=0.5)
    assert train.shape == (6, 3, 16, 16) and test.shape == (6, 3, 16, 16)
    assert train.min() >= 0 and train.max() <= 1
    # no test image equals a training image: each person's pictures are on one side only
    assert torch.cdist(train.flatten(1), test.flatten(1)).min() > 0
    small = folder_faces(root, 16, seed=1, test_fraction=0.5, max_train=2, max_test=1)
    assert small[0].shape[0] == 2 and small[1].shape[0] == 1


@pytest.mark.parametrize("case", ["missing", "file", "empty", "one-identity"])
def test_demo_data_errors(case, tmp_path, capsys):
    target = tmp_path / "data"
    if case == "file":
        target.write_text("x")
    elif case == "empty":
        target.mkdir()
    elif case == "one-identity":
        _face_folder(target, identities=1, per_identity=3)
    expected = {"missing": "not found", "file": "not a folder", "empty": "no identity folder",
                "one-identity": "2 identity"}[case]
    assert main(["--quick", "--out", str(tmp_path / "out"), "--no-progress", "--data", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vqswitch: error: ") and expected in err and "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.json").exists()


# ------------------------------------------------------------------------------------------------ --model

VQVAE_BUILDER = str(Path(__file__).resolve().parents[1] / "examples" / "vqvae_cifar.py") + ":build"


@pytest.mark.slow
def test_demo_from_a_pretrained_user_model_on_a_face_folder(tmp_path, capsys):
    """--model builds the user's own described model (the real vqvae-cifar, by its user-code example): its own codebook
    is the baseline (no training), faces take its 64x64 size and [-0.5, 0.5] pixels, STSCQ spends fewer bits."""
    root = _face_folder(tmp_path / "faces", identities=5, per_identity=4, size=64)
    out = tmp_path / "out"
    assert main(["--quick", "--out", str(out), "--no-progress", "--data", str(root), "--model", VQVAE_BUILDER]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["pretrained"] and saved["config"]["tokenizer"] == "VQVAE"
    assert saved["config"]["image_size"] == 64 and saved["config"]["codebook_size0"] == 512
    base, stscq = saved["baseline"], saved["stscq"]
    assert (base["num_tokens"], base["codebook_size"], base["bits_per_image"]) == (256, 512, 2304)
    assert stscq["bits_per_image"] == bits_per_image(256, QUICK.codebook_size, QUICK.num_groups) < 2304
    assert base["psnr"] > 20  # a real pretrained tokenizer, not an untrained one
    run = json.loads((out / "run.json").read_text())
    assert run["adapter"] == "generic:vqvae-cifar" and run["base_model"] is None  # a local file is never recorded


@pytest.mark.parametrize("spec, expected", [("no_such_module_xyz:build", "cannot import module"),
                                            ("missing_file.py:build", "no such file"),
                                            (VQVAE_BUILDER.replace(":build", ":nothing"), "no function 'nothing'")])
def test_demo_model_errors(spec, expected, tmp_path, capsys):
    assert main(["--quick", "--out", str(tmp_path / "out"), "--no-progress", "--model", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vqswitch: error: ") and expected in err and "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.json").exists()
