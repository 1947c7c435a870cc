"""`vqswitch demo` (vqswitch/demo.py): a quick run end to end, its files, its numbers and its command line."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from vqswitch.bits import bits_per_image, bpp
from vqswitch.demo import QUICK, format_table, main, run_demo


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


def test_the_fair_reference_changes_only_the_decoder(quick_run):
    """The "baseline + stage 3" row: the baseline's own codes (same bits, same utilisation on the test faces),
    with the decoder fine-tuned as STSCQ's is in stage 3."""
    _, metrics, _ = quick_run
    base, tuned = metrics["baseline"], metrics["baseline_decoder_tuned"]
    assert (tuned["num_groups"], tuned["codebook_size"], tuned["token_specific"]) == (1, QUICK.codebook_size0, False)
    assert tuned["bits_per_image"] == base["bits_per_image"]
    assert tuned["utilization_mean"] == pytest.approx(base["utilization_mean"])  # identical codes
    assert tuned["psnr"] != base["psnr"]  # the decoder did train


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


def test_reconstruction_grid(quick_run):
    from PIL import Image

    out, _, _ = quick_run
    k, s, pad = min(QUICK.grid_images, QUICK.num_test), QUICK.image_size, 2
    with Image.open(out / "reconstructions.png") as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.size == (k * s + (k + 1) * pad, 3 * s + 4 * pad)  # originals, baseline, STSCQ rows
        first = torch.from_numpy(np.asarray(im.crop((pad, pad, pad + s, pad + s)), dtype=np.float32))
    original = (_test_faces()[0].permute(1, 2, 0) * 255).round()
    assert (first - original).abs().max() <= 1  # the top-left tile is the first test face


def test_checkpoint_reloads_and_reproduces_the_codes(quick_run):
    from vqswitch.adapters import decode_codes, encode_codes, load_swapped, swapped_quantizer
    from vqswitch.metrics import psnr, ssim

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


def test_run_info_describes_the_run(quick_run):
    out, metrics, _ = quick_run
    info = json.loads((out / "run.json").read_text())
    assert info["format"] == "vqswitch-run" and info["adapter"] == "maskgit-vqgan"
    assert info["data"]["num_images"] == QUICK.num_train
    assert info["finetune"]["stages"] == [1, 2, 3]
    assert [info["finetune"][f"stage{s}"]["steps"] for s in (1, 2, 3)] == [
        QUICK.stage1_steps, QUICK.stage2_steps, QUICK.stage3_steps]
    assert (info["num_groups"], info["codebook_size"]) == (QUICK.num_groups, QUICK.codebook_size)


def test_main_runs_and_is_deterministic(quick_run, tmp_path, capsys):
    _, metrics, _ = quick_run
    assert main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "STSCQ" in capsys.readouterr().out
    again = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("baseline", "stscq"):  # same seed, same numbers
        for field in ("psnr", "ssim", "utilization_mean", "bits_per_image"):
            assert again[key][field] == metrics[key][field], (key, field)


def test_vqswitch_demo_command(quick_run, tmp_path, capsys):
    """`vqswitch demo` (the README's main job) is the same run."""
    from vqswitch.cli import main as vqswitch

    _, metrics, _ = quick_run
    assert vqswitch(["demo", "--quick", "--out", str(tmp_path), "--no-progress", "--json"]) == 0
    printed = capsys.readouterr().out
    assert format_table(metrics) in printed
    assert json.loads(printed[printed.index("\n{") + 1:])["stscq"]["psnr"] == metrics["stscq"]["psnr"]
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
