"""`vqswitch finetune` and `vqswitch eval` end to end on the tiny MaskGIT-VQGAN fixture and a folder of faces."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vqswitch.adapters import encode_codes, load_swapped
from vqswitch.cli import main
from vqswitch.data import procedural_faces

PIL = pytest.importorskip("PIL.Image")
FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "maskgit_vqgan_tiny"


@pytest.fixture
def faces(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    images = procedural_faces(12, size=32, seed=1)
    for i, img in enumerate(images):
        PIL.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


@pytest.mark.slow
def test_finetune_then_eval(tmp_path, faces, capsys):
    run = tmp_path / "run"
    argv = ["finetune", "--adapter", "maskgit", "--model", str(FIXTURE), "--data", str(faces), "--groups", "2",
            "--codebook-size", "16", "--out", str(run), "--steps", "2", "--batch-size", "4", "--lr", "1e-3",
            "--no-progress", "--json"]
    assert main(argv) == 0  # the unreadable file is reported (one warning line), not fatal
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert "vqswitch: warning: ImageFolder: skipping unreadable image" in err and "broken.png" in err
    assert summary["bits_per_image"] == 64 * 4 + 1 and summary["skipped_images"][0].endswith("broken.png")
    model = load_swapped(run / "final")
    q = model.quantize.quantizer
    assert q.token_specific and q.num_groups == 2 and q.codebook_size == 16
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["stage"] for r in lines}) == [1, 2, 3]
    info = json.loads((run / "run.json").read_text())  # what push's model card reads
    assert info["adapter"] == "maskgit-vqgan" and info["base_model"] == str(FIXTURE)
    assert info["data"]["num_images"] == 12 and info["finetune"]["stage3"]["steps"] == 2

    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(run / "final"), "--data", str(faces), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "PSNR" in table and "SSIM" in table
    result = json.loads(out.read_text())
    assert result["images"] == 12 and result["bits_per_image"] == 257
    assert result["bpp"] == pytest.approx(257 / (32 * 32)) and 0 < result["ssim"] <= 1 and result["psnr"] > 0
    from vqswitch.entropy import EntropyModel  # the entropy-coded size uses the run's saved entropy model

    entropy = EntropyModel.load(run / "final" / "entropy_model.safetensors")
    images = torch.stack([torch.from_numpy(np.asarray(PIL.open(faces / f"{i:03d}.png"), dtype=np.float32) / 255)
                          .permute(2, 0, 1) for i in range(12)])
    codes = encode_codes(model, images)
    assert result["entropy_bits_per_image"] == 8 * len(entropy.encode(codes.groups, codes.indices)) / 12
    assert result["entropy_bpp"] == pytest.approx(result["entropy_bits_per_image"] / 1024)
    x = torch.from_numpy(np.asarray(PIL.open(faces / "000.png"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    assert encode_codes(model, x).indices.shape == (1, 64)


@pytest.mark.slow
def test_errors_are_one_line(tmp_path, faces, capsys):
    base = ["finetune", "--adapter", "maskgit", "--model", str(FIXTURE), "--data", str(faces), "--groups", "2",
            "--codebook-size", "16", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(base + ["--stages", "x"]) == 2
    assert "--stages" in capsys.readouterr().err
    assert main(base + ["--stages", "3,1"]) == 2
    assert "stages must be increasing" in capsys.readouterr().err
    assert main(base[:-5] + ["--codebook-size", "999", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "exceeds" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "missing"), "--data", str(faces)]) == 2
    assert "vqswitch: error:" in capsys.readouterr().err
    assert main(base[:5] + ["--data", str(tmp_path / "nowhere")] + base[7:]) == 2
    assert "vqswitch: error:" in capsys.readouterr().err


@pytest.mark.slow
def test_stage3_feature_losses_from_local_backbones(tmp_path, faces, capsys):
    transformers = pytest.importorskip("transformers")
    backbone = tmp_path / "vit"
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32)
    transformers.ViTModel(config).save_pretrained(backbone)
    run = tmp_path / "run"
    argv = ["finetune", "--adapter", "maskgit", "--model", str(FIXTURE), "--data", str(faces), "--groups", "1",
            "--codebook-size", "16", "--out", str(run), "--steps", "2", "--batch-size", "4", "--stages", "3",
            "--perceptual", str(backbone), "--identity", str(backbone), "--identity-weight", "0.5", "--no-progress"]
    assert main(argv) == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    r = lines[-1]
    assert r["perceptual"] > 0 and r["identity"] >= 0
    assert r["loss"] == pytest.approx(r["l2"] + 1.0 * r["perceptual"] + 0.5 * r["identity"], rel=1e-5)
    info = json.loads((run / "run.json").read_text())
    assert info["finetune"]["stage3"]["identity_weight"] == 0.5 and info["losses"]["perceptual"] == str(backbone)


def test_feature_loss_weight_needs_a_model(tmp_path, faces, capsys):
    argv = ["finetune", "--adapter", "maskgit", "--model", str(FIXTURE), "--data", str(faces), "--groups", "1",
            "--codebook-size", "16", "--out", str(tmp_path / "run"), "--identity-weight", "0.5"]
    assert main(argv) == 2
    assert "--identity-weight needs --identity" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
