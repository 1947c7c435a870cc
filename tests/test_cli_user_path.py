"""Issue 16 (the user's path), command-line items: --device/--dtype, info on swapped models, eval's truth,
resume and reruns, fine-tuning options, one-line errors with exit codes 2 (usage) / 1 (runtime), small things.

Every test runs `vqswitch` in-process on the tiny MaskGIT-VQGAN fixture (32x32 images, T = 64)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqswitch.adapters import load_pretrained, load_swapped
from swapped import save_counted_swapped
from vqswitch.cli import PAPER_CONFIGS, build_parser, main
from vqswitch.data import procedural_faces

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "maskgit_vqgan_tiny"
README = Path(__file__).resolve().parents[1] / "README.md"


class Seen(BaseException):
    """Raised by spies to stop a command once they have seen what they look for (passes every except clause)."""


def run(capsys, *argv):
    """main(argv) -> (exit code, stdout, stderr); argparse's SystemExit becomes its code."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, out, err, expected_code, *needles):
    assert code == expected_code, (code, err)
    lines = [line for line in err.strip().splitlines() if line.startswith("vqswitch: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, err)


def _save_faces(folder: Path, n: int, size: int = 32, seed: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(procedural_faces(n, size=size, seed=seed)):
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return _save_faces(tmp_path_factory.mktemp("faces") / "faces", 12)


@pytest.fixture(scope="module")
def swapped(tmp_path_factory):
    """A swapped, token-specific model folder with usage counts from 64 faces (what fine-tuning records)."""
    return save_counted_swapped(tmp_path_factory.mktemp("swapped") / "model")


def finetune_argv(faces, out, *extra):
    return ["finetune", "--adapter", "maskgit", "--model", FIXTURE, "--data", faces, "--groups", "2",
            "--codebook-size", "16", "--out", out, "--steps", "1", "--batch-size", "4", "--no-progress", *extra]


def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ================================================================ 1. --device and --dtype
@pytest.mark.parametrize("command", ["finetune", "eval", "compress", "decompress"])
def test_cuda_asked_without_one_is_a_clear_error(command, tmp_path, faces, swapped, monkeypatch, capsys):
    no_cuda(monkeypatch)
    argv = {"finetune": finetune_argv(faces, tmp_path / "run"),
            "eval": ["eval", "--model", swapped, "--data", faces],
            "compress": ["compress", faces / "000.png", "--model", swapped, "-o", tmp_path / "x.vqs"],
            "decompress": ["decompress", tmp_path / "x.vqs", "-o", tmp_path / "dec", "--model", swapped]}[command]
    if command == "decompress":
        assert run(capsys, "compress", faces / "000.png", "--model", swapped, "-o", tmp_path / "x.vqs",
                   "--no-progress", "--device", "cpu")[0] == 0
    one_line_error(*run(capsys, *argv, "--device", "cuda"), 2, "--device", "CUDA")
    assert not (tmp_path / "run").exists() and not (tmp_path / "dec").exists()


def test_device_default_is_cuda_when_available(tmp_path, faces, monkeypatch, capsys):
    import vqswitch.adapters as adapters

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise Seen

    monkeypatch.setattr(adapters, "load_pretrained", spy)
    with pytest.raises(Seen):
        main([str(a) for a in finetune_argv(faces, tmp_path / "run")])
    assert torch.device(seen["device"]) == torch.device("cuda")


def test_load_pretrained_puts_the_model_on_the_device():
    model = load_pretrained(FIXTURE, adapter="maskgit-vqgan", device="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_load_pretrained_refuses_cuda_without_one(monkeypatch):
    no_cuda(monkeypatch)
    with pytest.raises(ValueError, match="CUDA"):
        load_pretrained(FIXTURE, adapter="maskgit-vqgan", device="cuda")


@pytest.mark.parametrize("command", ["eval", "compress", "decompress"])
def test_device_reaches_the_model(command, tmp_path, faces, swapped, monkeypatch, capsys):
    """--device meta (a CPU-only stand-in for a GPU): the model the command runs is on it, not on the CPU."""
    import vqswitch.adapters as adapters

    if command == "decompress":
        assert run(capsys, "compress", faces / "000.png", "--model", swapped, "-o", tmp_path / "x.vqs",
                   "--no-progress")[0] == 0
    seen = []

    def spy(model, *args, **kwargs):
        seen.append(next(model.parameters()).device.type)
        raise Seen

    if command == "decompress":  # the codes are moved to the decoder's device first (meta codes cannot be checked)
        from vqswitch.codes import Codes

        real_to = Codes.to

        def to(self, device):
            if torch.device(device).type == "meta":
                seen.append("meta")
                raise Seen
            return real_to(self, device)

        monkeypatch.setattr(Codes, "to", to)
    else:
        monkeypatch.setattr(adapters, "encode_codes", spy)
    argv = {"eval": ["eval", "--model", swapped, "--data", faces, "--no-progress"],
            "compress": ["compress", faces / "000.png", "--model", swapped, "-o", tmp_path / "y.vqs", "--no-progress"],
            "decompress": ["decompress", tmp_path / "x.vqs", "-o", tmp_path / "dec", "--model", swapped,
                           "--no-progress"]}[command]
    with pytest.raises(Seen):
        main([str(a) for a in argv] + ["--device", "meta"])
    assert seen == ["meta"]


@pytest.mark.slow
def test_finetune_device_reaches_the_finetuner(tmp_path, faces, monkeypatch):
    import vqswitch.train.finetune  # noqa: F401

    ft = sys.modules["vqswitch.train.finetune"]

    seen = {}

    def spy(self):
        seen["device"] = self.device
        seen["model"] = next(self.model.parameters()).device
        raise Seen

    monkeypatch.setattr(ft.Finetuner, "run", spy)
    with pytest.raises(Seen):
        main([str(a) for a in finetune_argv(faces, tmp_path / "run", "--device", "cpu")])
    assert seen == {"device": torch.device("cpu"), "model": torch.device("cpu")}


@pytest.mark.slow
def test_finetune_mixed_precision_only_in_stage3_decoder(tmp_path, faces, monkeypatch, capsys):
    """--dtype bf16: stage 3's decoder runs under autocast; the quantizer's search never does."""
    from vqswitch.quantizer import SwitchableTokenQuantizer
    from vqswitch.train.losses import ReconstructionLoss

    search_autocast, recon_dtypes = [], []
    real_encode, real_forward = SwitchableTokenQuantizer.encode, ReconstructionLoss.forward

    def encode(self, z):
        search_autocast.append(torch.is_autocast_enabled("cpu"))
        return real_encode(self, z)

    def forward(self, x, recon):
        recon_dtypes.append(recon.dtype)
        return real_forward(self, x, recon)

    monkeypatch.setattr(SwitchableTokenQuantizer, "encode", encode)
    monkeypatch.setattr(ReconstructionLoss, "forward", forward)
    code, out, err = run(capsys, *finetune_argv(faces, tmp_path / "run", "--device", "cpu", "--dtype", "bf16"))
    assert code == 0, err
    assert search_autocast and not any(search_autocast)
    assert recon_dtypes and all(d == torch.bfloat16 for d in recon_dtypes)
    assert load_swapped(tmp_path / "run" / "final").quantize.quantizer.codebooks.dtype == torch.float32


def test_fp16_needs_cuda(tmp_path, faces, capsys):
    one_line_error(*run(capsys, *finetune_argv(faces, tmp_path / "run", "--device", "cpu", "--dtype", "fp16")), 2,
                   "--dtype fp16")


# ================================================================ 3. info on swapped models
def test_info_describes_a_swapped_model(swapped, capsys):
    code, out, err = run(capsys, "info", swapped, "--height", 32, "--width", 32)
    assert code == 0, err
    for needle in ("adapter: maskgit-vqgan", "base model: MaskGitVQGAN", "T=64", "K=16", "M=2",
                   "bits per image: 257", f"bpp at 32x32: {257 / 1024:.4f}", "entropy model:", "utilisation: min"):
        assert needle in out, (needle, out)
    info = json.loads(run(capsys, "info", swapped, "--json", "--height", 32, "--width", 32)[1])
    assert info["kind"] == "swapped-model" and info["adapter"] == "maskgit-vqgan"
    assert info["quantizer"]["num_tokens"] == 64 and info["bits_per_image"] == 257
    assert info["bpp"] == 257 / 1024
    model = load_swapped(swapped)
    q = model.quantize.quantizer
    assert info["parameters"]["quantizer"]["count"] == sum(p.numel() for p in q.parameters())
    assert info["parameters"]["model"]["bytes"] == sum(p.numel() * p.element_size() for p in model.parameters())
    assert info["entropy_model"]["file"] is True and 0 < info["entropy_model"]["bits_per_image"] < 257
    assert sum(info["utilisation"]["group_counts"]) == 64


@pytest.mark.slow
def test_demo_quick_json_then_info_on_its_checkpoint(tmp_path, capsys):
    """The new user's path: `vqswitch demo --quick --json`, then `vqswitch info` on the only checkpoint they have."""
    out = tmp_path / "demo"
    code, stdout, err = run(capsys, "demo", "--quick", "--json", "--no-progress", "--out", out)
    assert code == 0, err
    metrics = json.loads(stdout)  # stdout is only the JSON
    assert metrics["config"]["quick"] is True and "PSNR" in err  # the table went to stderr
    code, stdout, err = run(capsys, "info", out / "checkpoint")
    assert code == 0, err
    assert "adapter:" in stdout and f"bits per image: {metrics['stscq']['bits_per_image']}" in stdout


def test_demo_quick_never_replaces_a_full_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    full = json.dumps({"config": {"quick": False}, "stscq": {}})
    (out / "metrics.json").write_text(full)
    one_line_error(*run(capsys, "demo", "--quick", "--out", out), 2, "full demo", "--overwrite")
    assert (out / "metrics.json").read_text() == full


# ================================================================ 4. eval tells the truth
@pytest.mark.slow
def test_eval_counts_codebook_use_on_the_evaluated_images(swapped, faces, tmp_path, capsys):
    code, out, err = run(capsys, "eval", "--model", swapped, "--data", faces, "--limit", 1, "--json", "--no-progress")
    assert code == 0, err
    result = json.loads(out)
    util = result["utilization"]
    assert result["images"] == 1 and sum(g["images"] for g in util["groups"]) == 1
    assert util["overall"]["max"] == pytest.approx(1 / 16)  # one image uses one code per (group, token)
    code, out, err = run(capsys, "eval", "--model", swapped, "--data", faces, "--no-progress")
    assert code == 0 and re.search(r"^codebook use +[\d.]+%", out, flags=re.M), out


def test_eval_warns_when_it_resizes_and_shows_progress(swapped, tmp_path, capsys):
    big = _save_faces(tmp_path / "big", 3, size=40)
    code, out, err = run(capsys, "eval", "--model", swapped, "--data", big)
    assert code == 0, err
    assert "vqswitch: warning:" in err and "resized" in err and "compress" in err
    assert "it/s" in err or "img/s" in err  # the progress bar


# ================================================================ 6. resume and reruns
@pytest.mark.slow
def test_resume_ignores_display_flags_and_names_differing_keys(tmp_path, faces, capsys):
    out = tmp_path / "run"
    argv = finetune_argv(faces, out, "--stages", "3")
    argv.remove("--no-progress")
    assert run(capsys, *argv)[0] == 0
    assert run(capsys, *argv, "--resume", "--no-progress")[0] == 0
    code, _, err = run(capsys, *argv, "--resume", "--lr", "0.5")
    one_line_error(code, "", err, 2, "stage3.lr")


@pytest.mark.slow
def test_rerun_into_an_existing_run_needs_overwrite(tmp_path, faces, capsys):
    out = tmp_path / "run"
    argv = finetune_argv(faces, out, "--stages", "3")
    assert run(capsys, *argv)[0] == 0
    before = (out / "metrics.jsonl").read_bytes()
    one_line_error(*run(capsys, *argv), 2, "--resume", "--overwrite")
    assert (out / "metrics.jsonl").read_bytes() == before
    assert run(capsys, *argv, "--overwrite")[0] == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(before.decode().splitlines())


def test_compress_refuses_an_existing_file_like_decompress(swapped, faces, tmp_path, capsys):
    out = tmp_path / "x.vqs"
    out.write_bytes(b"precious")
    one_line_error(*run(capsys, "compress", faces / "000.png", "--model", swapped, "-o", out, "--no-progress"), 2,
                   "--overwrite")
    assert out.read_bytes() == b"precious"
    assert run(capsys, "compress", faces / "000.png", "--model", swapped, "-o", out, "--no-progress",
               "--overwrite")[0] == 0
    assert out.read_bytes() != b"precious"


# ================================================================ 8. fine-tuning options
@pytest.mark.slow
def test_per_stage_steps_lr_batch_size(tmp_path, faces, capsys):
    out = tmp_path / "run"
    argv = finetune_argv(faces, out)
    i = argv.index("--steps")
    argv[i + 1] = "1,2,1"
    j = argv.index("--batch-size")
    del argv[j:j + 2]  # the single --batch-size 4
    argv += ["--lr", "1e-3,2e-3,3e-4", "--batch-size", "4,2,3"]
    assert run(capsys, *argv)[0] == 0
    cfg = json.loads((out / "run.json").read_text())["finetune"]
    assert [cfg[f"stage{s}"]["steps"] for s in (1, 2, 3)] == [1, 2, 1]
    assert [cfg[f"stage{s}"]["lr"] for s in (1, 2, 3)] == [1e-3, 2e-3, 3e-4]
    assert [cfg[f"stage{s}"]["batch_size"] for s in (1, 2, 3)] == [4, 2, 3]


def test_finetune_defaults_match_the_demo():
    from vqswitch.cli.finetune import stage_settings
    from vqswitch.experiments.faces import FULL

    args = build_parser().parse_args(["finetune", "--model", "m", "--data", "d", "--out", "o"])

    s = stage_settings(args)
    assert [s[k].lr for k in range(3)] == [FULL.stage12_lr, FULL.stage12_lr, FULL.stage3_lr]
    assert [s[k].steps for k in range(3)] == [FULL.stage1_steps, FULL.stage2_steps, FULL.stage3_steps]
    assert {s[k].batch_size for k in range(3)} == {FULL.stage_batch_size}


@pytest.mark.parametrize("bad, needle", [
    (["--steps", "0"], "--steps"), (["--steps", "1,0,1"], "--steps"), (["--steps", "1,2"], "--steps"),
    (["--lr", "-1"], "--lr"), (["--batch-size", "0"], "--batch-size"),
])
def test_bad_stage_settings_refused(bad, needle, tmp_path, faces, capsys):
    argv = finetune_argv(faces, tmp_path / "run")
    for flag in ("--steps", "--batch-size"):
        j = argv.index(flag)
        del argv[j:j + 2]
    one_line_error(*run(capsys, *argv, *bad), 2, needle)
    assert not (tmp_path / "run").exists()


def test_huge_groups_refused_fast(tmp_path, faces, capsys):
    import signal

    argv = finetune_argv(faces, tmp_path / "run")
    argv[argv.index("--groups") + 1] = "100000"

    def too_slow(*_):
        raise TimeoutError("--groups 100000 was not refused within 30 s (k-means on 100,000 groups?)")

    old = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(30)
    try:
        one_line_error(*run(capsys, *argv), 2, "--groups", "12 training images")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.slow
def test_subfolder_reaches_the_loader(tmp_path, faces, capsys):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(FIXTURE, repo / "vqvae")
    out = tmp_path / "run"
    argv = finetune_argv(faces, out, "--subfolder", "vqvae", "--stages", "3")
    argv[argv.index("--model") + 1] = repo
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert (out / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_continue_from_a_swapped_checkpoint(swapped, faces, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "finetune", "--model", swapped, "--data", faces, "--out", out, "--steps", 1,
                       "--batch-size", 4, "--no-progress")
    assert code == 0, err
    q = load_swapped(out / "final").quantize.quantizer
    assert (q.num_groups, q.codebook_size, q.token_specific) == (2, 16, True)
    assert sorted({json.loads(x)["stage"] for x in (out / "metrics.jsonl").read_text().splitlines()}) == [2, 3]
    one_line_error(*run(capsys, "finetune", "--model", swapped, "--data", faces, "--out", tmp_path / "r2",
                        "--groups", "4"), 2, "--groups")


@pytest.mark.slow
def test_ctrl_c_prints_how_to_resume(tmp_path, faces, monkeypatch, capsys):
    import shlex

    import vqswitch.train.finetune  # noqa: F401

    ft = sys.modules["vqswitch.train.finetune"]
    real = ft.Finetuner._checkpoint

    def interrupted(self, name, periodic):  # Ctrl-C right after stage 1's checkpoint
        real(self, name, periodic)
        raise KeyboardInterrupt

    monkeypatch.setattr(ft.Finetuner, "_checkpoint", interrupted)
    code, out, err = run(capsys, *finetune_argv(faces, tmp_path / "run"))
    assert code == 130 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0]
    assert str(tmp_path / "run") in lines[0]
    monkeypatch.setattr(ft.Finetuner, "_checkpoint", real)
    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[:2] == ["vqswitch", "finetune"]
    code, _, err = run(capsys, *command[1:])  # the printed command resumes the run
    assert code == 0, err
    stages = [json.loads(x)["stage"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert stages == [1, 2, 3]


def test_ctrl_c_before_any_checkpoint(tmp_path, faces, monkeypatch, capsys):
    import vqswitch.train.finetune  # noqa: F401

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["vqswitch.train.finetune"].Finetuner, "run", interrupted)
    code, out, err = run(capsys, *finetune_argv(faces, tmp_path / "run"))
    assert code == 130 and len(err.strip().splitlines()) == 1 and "--overwrite" in err and "Traceback" not in err


# ================================================================ 9. one-line errors, exit codes
def test_eval_out_is_checked_before_the_work(swapped, faces, tmp_path, monkeypatch, capsys):
    import vqswitch.codec as codec

    def never(*a, **k):
        raise AssertionError("loaded the model before checking --out")

    monkeypatch.setattr(codec, "load_codec_model", never)
    one_line_error(*run(capsys, "eval", "--model", swapped, "--data", faces, "--out", tmp_path), 2, "--out")
    one_line_error(*run(capsys, "eval", "--model", swapped, "--data", faces, "--out", tmp_path / "no" / "x.json"),
                   2, "--out")


@pytest.mark.parametrize("bad", [["--limit", "0"], ["--limit", "-1"], ["--batch-size", "0"], ["--batch-size", "-4"]])
def test_eval_bad_numbers(bad, swapped, faces, capsys):
    one_line_error(*run(capsys, "eval", "--model", swapped, "--data", faces, *bad), 2, bad[0])


def test_info_bad_height(swapped, capsys):
    one_line_error(*run(capsys, "info", swapped, "--height", "0"), 2, "--height")


def test_new_too_big_is_one_line(tmp_path, capsys):
    code, out, err = run(capsys, "new", tmp_path / "q", "--tokens", 1, "--codebook-size", 1000000, "--groups",
                         1000000, "--dim", 1)
    assert code in (1, 2)
    one_line_error(code, out, err, code)
    assert not (tmp_path / "q").exists()


def test_compress_given_a_folder(swapped, faces, tmp_path, capsys):
    one_line_error(*run(capsys, "compress", faces, "--model", swapped, "-o", tmp_path / "x.vqs"), 2,
                   "is a folder")


def test_compress_output_checked_before_the_work(swapped, faces, tmp_path, monkeypatch, capsys):
    import vqswitch.adapters as adapters

    def never(*a, **k):
        raise AssertionError("encoded before checking -o")

    monkeypatch.setattr(adapters, "encode_codes", never)
    code, out, err = run(capsys, "compress", faces / "000.png", "--model", swapped, "-o", tmp_path)
    one_line_error(code, out, err, 2, "-o", "folder")
    assert ".tmp" not in err


def test_decompress_output_a_file(swapped, faces, tmp_path, capsys):
    assert run(capsys, "compress", faces / "000.png", "--model", swapped, "-o", tmp_path / "x.vqs",
               "--no-progress")[0] == 0
    (tmp_path / "file").write_text("x")
    one_line_error(*run(capsys, "decompress", tmp_path / "x.vqs", "-o", tmp_path / "file", "--model", swapped), 2,
                   "-o", "not a folder")


@pytest.mark.slow
def test_unreadable_image_is_a_one_line_warning(tmp_path, faces, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(faces, data)
    (data / "broken.png").write_bytes(b"not a png")
    code, out, err = run(capsys, *finetune_argv(data, tmp_path / "run", "--stages", "3"))
    assert code == 0, err
    warn = [line for line in err.splitlines() if "broken.png" in line]
    assert len(warn) == 1 and warn[0].startswith("vqswitch: warning: ")
    assert "warnings.warn" not in err and ".py:" not in err


def test_runtime_failures_exit_1(tmp_path, swapped, faces, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(swapped, bad)
    (bad / "model.safetensors").write_bytes(b"garbage")
    one_line_error(*run(capsys, "eval", "--model", bad, "--data", faces), 1)
    one_line_error(*run(capsys, "info", tmp_path / "missing"), 2)  # a usage error: the path does not exist


# ================================================================ 10. small things
def test_version(capsys):
    from importlib.metadata import version

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"vqswitch {version('vqswitch')}"


def test_every_subcommand_and_option_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(helps) == set(sub.choices) and all(helps.values())
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest != "help" and action.option_strings:
                assert action.help, (name, action.option_strings)
            if not action.option_strings and action.dest != "help":
                assert action.help, (name, action.dest)


def test_eval_plots_without_matplotlib_fails_before_evaluating(swapped, faces, tmp_path, monkeypatch, capsys):
    import vqswitch.codec as codec

    monkeypatch.setitem(sys.modules, "matplotlib", None)

    def never(*a, **k):
        raise AssertionError("evaluated before checking matplotlib")

    monkeypatch.setattr(codec, "load_codec_model", never)
    one_line_error(*run(capsys, "eval", "--model", swapped, "--data", faces, "--plots", tmp_path / "p"), 2,
                   "matplotlib", "vqswitch[plots]")


def test_eval_writes_the_json_before_the_plots(swapped, faces, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    from vqswitch import eval as evaluation

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(evaluation, "plot_utilization", broken)
    code, out, err = run(capsys, "eval", "--model", swapped, "--data", faces, "--out", tmp_path / "m.json",
                         "--plots", tmp_path / "p", "--no-progress")
    one_line_error(code, out, err, 1, "plots", "disk full")
    assert json.loads((tmp_path / "m.json").read_text())["images"] == 12


def test_setup_has_a_plots_extra():
    import runpy
    from unittest import mock

    with mock.patch("setuptools.setup") as setup:
        runpy.run_path(str(README.parent / "setup.py"), run_name="__main__")
    extras = setup.call_args.kwargs["extras_require"]
    assert any(d.startswith("matplotlib") for d in extras["plots"])
    assert any(d.startswith("matplotlib") for d in extras["dev"])


def test_push_json(swapped, tmp_path, capsys):
    code, out, err = run(capsys, "push", swapped, "--dry-run", tmp_path / "up", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["prepared"] == str(tmp_path / "up") and "model.safetensors" in info["files"]


def test_readme_bits_table_has_every_row_vqswitch_bits_prints():
    rows = re.findall(r"^\| ([\w-]+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| ([\d.]+) \|$", README.read_text(),
                      flags=re.M)
    printed = [(name, t, k, m) for name, t, kms in PAPER_CONFIGS for k, m in kms]
    assert [(n, int(t), int(k), int(m)) for n, t, k, m, _, _ in rows] == printed


def test_readme_adapter_snippets_define_images():
    blocks = re.findall(r"```python adapter=(\S+)\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 4
    for name, code in blocks:
        assert re.search(r"^images = ", code, flags=re.M), name


# ================================================================ properties
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(a=st.fixed_dictionaries({"steps": st.integers(1, 5), "lr": st.sampled_from([1e-3, 3e-4]),
                                "batch_size": st.integers(1, 4)}),
       b=st.fixed_dictionaries({"steps": st.integers(1, 5), "lr": st.sampled_from([1e-3, 3e-4]),
                                "batch_size": st.integers(1, 4)}),
       stage=st.sampled_from([1, 2, 3]), progress=st.booleans(), seed=st.integers(0, 2))
def test_config_differences_name_exactly_the_changed_training_settings(a, b, stage, progress, seed):
    from vqswitch.train.finetune import FinetuneConfig, StageConfig, config_differences

    saved = FinetuneConfig(progress=True)
    now = FinetuneConfig(progress=progress, seed=seed)
    setattr(saved, f"stage{stage}", StageConfig(**a))
    setattr(now, f"stage{stage}", StageConfig(**b))
    differ = config_differences(saved.to_dict(), now.to_dict())
    expected = {f"stage{stage}.{k}" for k in a if a[k] != b[k]} | ({"seed"} if seed != 0 else set())
    assert {d.split(":")[0] for d in differ} == expected  # display settings (progress) never count
