"""The ``vqswitch`` console script: in-process ``main([...])`` calls, plus one real subprocess."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants

from vqswitch import SwitchableTokenQuantizer, bits_per_image
from vqswitch.cli import main

# The paper's table: (tokenizer, T, K, M, bits per image, bpp at 256x256).
PAPER = [
    ("TiTok-S", 128, 4096, 1, 1536, "0.0234"),
    ("TiTok-S", 128, 1024, 16, 1284, "0.0196"),
    ("TiTok-S", 128, 256, 256, 1032, "0.0157"),
    ("TiTok-L", 32, 4096, 1, 384, "0.0059"),
    ("TiTok-L", 32, 256, 256, 264, "0.0040"),
    ("MaskGIT-VQGAN", 256, 4096, 1, 3072, "0.0469"),
    ("MaskGIT-VQGAN", 256, 1024, 16, 2564, "0.0391"),
    ("IBQ", 256, 8192, 1, 3328, "0.0508"),
]


def run(capsys, *argv):
    """main(argv) -> (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(code, out, err, *needles, exit_code=2):
    """One ``vqswitch: error:`` line; exit code 2 for usage errors, 1 (exit_code=1) for runtime failures."""
    assert code == exit_code
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqswitch: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, err)


# ---------------------------------------------------------------- bits
def test_bits_paper_table(capsys):
    code, out, err = run(capsys, "bits")
    assert code == 0 and err == ""
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    assert len(rows) == len(PAPER)
    for name, t, k, m, b, bpp in PAPER:
        assert [name, str(t), str(k), str(m), str(b), bpp] in rows, (name, k, m)
    assert "bpp@256x256" in out.splitlines()[0]


def test_bits_paper_table_json(capsys):
    code, out, _ = run(capsys, "bits", "--json")
    assert code == 0
    rows = json.loads(out)
    got = [(r["tokenizer"], r["num_tokens"], r["codebook_size"], r["num_groups"], r["bits_per_image"],
            f"{r['bpp']:.4f}") for r in rows]
    assert got == PAPER
    assert all(r["bpp"] == r["bits_per_image"] / 65536 for r in rows)


def test_bits_one_config(capsys):
    code, out, _ = run(capsys, "bits", "--tokens", 128, "--codebook-size", 1024, "--groups", 16)
    assert code == 0 and "1284" in out and "0.0196" in out
    code, out, _ = run(capsys, "bits", "--tokens", 32, "--codebook-size", 256, "--groups", 256,
                       "--height", 512, "--width", 512, "--json")
    assert code == 0
    assert json.loads(out) == {"num_tokens": 32, "codebook_size": 256, "num_groups": 256, "bits_per_image": 264,
                               "height": 512, "width": 512, "bpp": 264 / (512 * 512)}
    code, out, _ = run(capsys, "bits", "--tokens", 7, "--codebook-size", 1000, "--groups", 3, "--json")
    assert json.loads(out)["bits_per_image"] == 7 * 10 + 2 == bits_per_image(7, 1000, 3)


@pytest.mark.parametrize("argv, needle", [
    (["--tokens", 128, "--codebook-size", 0], "codebook_size"),
    (["--tokens", 0, "--codebook-size", 16], "num_tokens"),
    (["--tokens", 8, "--codebook-size", 16, "--groups", 0], "num_groups"),
    (["--tokens", 8, "--codebook-size", 16, "--height", 0], "height"),
    (["--tokens", 8], "--codebook-size"),
])
def test_bits_bad_numbers(capsys, argv, needle):
    assert_error(*run(capsys, "bits", *argv), needle)


# ---------------------------------------------------------------- new + info
def test_new_then_info_round_trip(tmp_path, capsys):
    d = tmp_path / "ckpt"
    code, out, err = run(capsys, "new", d, "--tokens", 8, "--codebook-size", 16, "--dim", 4, "--groups", 4,
                         "--metric", "cosine", "--seed", 3)
    assert code == 0 and err == ""
    assert str(d) in out and "bits per image: 34" in out  # 8*4 + 2
    q = SwitchableTokenQuantizer.from_pretrained(str(d))
    capsys.readouterr()
    assert (q.num_tokens, q.codebook_size, q.dim, q.num_groups, q.token_specific, q.metric) == \
        (8, 16, 4, 4, True, "cosine")

    code, out, err = run(capsys, "info", d)
    assert code == 0 and err == ""
    for k, v in q.get_config().items():
        assert f"  {k}: {v}\n" in out
    assert "bits per image: 34\n" in out and f"bpp at 256x256: {34 / 65536:.4f}\n" in out
    n_books = 4 * 8 * 16 * 4  # M * T * K * D float32 values
    assert f"parameters (codebooks): {n_books} ({4 * n_books} bytes)\n" in out
    n_router = sum(p.numel() for p in q.router.parameters())
    assert n_router > 0 and f"parameters (router): {n_router} ({4 * n_router} bytes)\n" in out
    assert f"parameters (total): {n_books + n_router} ({4 * (n_books + n_router)} bytes)\n" in out
    assert "utilisation: not recorded" in out

    code, out, err = run(capsys, "info", d, "--json", "--height", 64, "--width", 32)
    info = json.loads(out)  # stdout is pure JSON (the Hub mixin's loading message is silenced)
    assert code == 0 and info["config"] == q.get_config()
    assert info["bits_per_image"] == 34 and info["bpp"] == 34 / (64 * 32)
    assert info["parameters"]["codebooks"] == {"count": n_books, "bytes": 4 * n_books}
    assert info["parameters"]["router"] == {"count": n_router, "bytes": 4 * n_router}
    assert info["parameters"]["total"]["count"] == n_books + n_router
    assert info["utilisation"] is None


def test_new_shared_is_seeded(tmp_path, capsys):
    def make(name, seed):
        code, _, _ = run(capsys, "new", tmp_path / name, "--tokens", 4, "--codebook-size", 8, "--dim", 2,
                         "--shared", "--seed", seed)
        assert code == 0
        q = SwitchableTokenQuantizer.from_pretrained(str(tmp_path / name))
        capsys.readouterr()
        return q

    a, b, c = make("a", 5), make("b", 5), make("c", 6)
    assert a.token_specific is False and a.codebooks.shape == (1, 1, 8, 2) and a.router is None
    assert torch.equal(a.codebooks, b.codebooks) and not torch.equal(a.codebooks, c.codebooks)


def test_new_rerun_is_a_no_op_but_never_overwrites_a_different_checkpoint(tmp_path, capsys):
    d = tmp_path / "ckpt"
    argv = ["new", d, "--tokens", 4, "--codebook-size", 8, "--dim", 2, "--groups", 2]
    assert run(capsys, *argv)[0] == 0
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    code, out, err = run(capsys, *argv)  # the README's main job may run twice
    assert code == 0 and err == "" and "left unchanged" in out
    assert {p.name: p.read_bytes() for p in d.iterdir()} == files

    assert_error(*run(capsys, *argv, "--seed", 1), "different checkpoint", "--force")
    assert_error(*run(capsys, "new", d, "--tokens", 4, "--codebook-size", 32, "--dim", 2), "--force")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == files
    assert run(capsys, "new", d, "--tokens", 4, "--codebook-size", 32, "--dim", 2, "--force")[0] == 0
    assert json.loads((d / "config.json").read_text())["codebook_size"] == 32


def test_new_bad_numbers(tmp_path, capsys):
    d = tmp_path / "ckpt"
    assert_error(*run(capsys, "new", d, "--tokens", 8, "--codebook-size", 0, "--dim", 4), "codebook_size", ">= 1")
    assert not d.exists()
    assert_error(*run(capsys, "new", d, "--tokens", 8, "--codebook-size", 4, "--dim", -1), "dim")


@pytest.mark.parametrize("argv", [
    ["new", "x", "--tokens", "8", "--codebook-size", "16"],  # --dim missing
    ["new", "x", "--tokens", "8", "--codebook-size", "16", "--dim", "4", "--metric", "manhattan"],
    ["bits", "--tokens", "eight", "--codebook-size", "16"],
    ["frobnicate"],
    [],
])
def test_argparse_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage: vqswitch" in capsys.readouterr().err


def test_info_shows_recorded_utilisation(tmp_path, capsys):
    torch.manual_seed(0)
    q = SwitchableTokenQuantizer(num_tokens=6, codebook_size=8, dim=3, num_groups=2, router_hidden_dim=8)
    q.train()
    q(torch.randn(20, 6, 3))
    u = q.utilization()
    assert int(q.usage.sum()) == 20 * 6 and sum(u.group_counts.tolist()) == 20
    q.save_pretrained(tmp_path)

    code, out, err = run(capsys, "info", tmp_path)
    assert code == 0 and err == ""
    assert "not recorded" not in out
    assert f"utilisation: min {u.min:.3f} max {u.max:.3f} mean {u.mean:.3f} std {u.std:.3f}\n" in out
    assert f"group histogram: {u.group_counts.tolist()}\n" in out

    info = json.loads(run(capsys, "info", tmp_path, "--json")[1])
    assert info["utilisation"]["group_counts"] == u.group_counts.tolist()
    assert info["utilisation"]["mean"] == pytest.approx(u.mean) and 0 < u.mean <= 1


# ---------------------------------------------------------------- info errors
def test_info_missing_dir(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert_error(*run(capsys, "info", missing), str(missing), "no such checkpoint directory")
    assert_error(*run(capsys, "info", "nope-not-here"), "nope-not-here")  # a bare name is a local path: no Hub wait


def test_info_not_a_checkpoint(tmp_path, capsys):
    assert_error(*run(capsys, "info", tmp_path), "no config.json")
    (tmp_path / "file.txt").write_text("x")
    assert_error(*run(capsys, "info", tmp_path / "file.txt"), "not a directory")


def test_info_config_weights_mismatch(tmp_path, capsys):
    assert run(capsys, "new", tmp_path / "c", "--tokens", 4, "--codebook-size", 16, "--dim", 2)[0] == 0
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    cfg["codebook_size"] = 32
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    assert_error(*run(capsys, "info", tmp_path / "c"), "ValueError", "does not match config.json", exit_code=1)

    (tmp_path / "c" / "config.json").write_text("{not json")
    assert_error(*run(capsys, "info", tmp_path / "c"), "cannot load", exit_code=1)


def test_info_from_offline_hub_cache(tmp_path, monkeypatch, capsys):
    commit = "89abcdef" * 5
    assert run(capsys, "new", tmp_path / "src", "--tokens", 4, "--codebook-size", 1024, "--dim", 2,
               "--groups", 16)[0] == 0
    repo = tmp_path / "cache" / "models--org--name"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tmp_path / "src" / name, repo / "snapshots" / commit / name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    for extra in ([], ["--revision", commit]):
        code, out, err = run(capsys, "info", "org/name", "--cache-dir", tmp_path / "cache", "--json", *extra)
        assert code == 0, err
        info = json.loads(out)
        assert info["config"]["codebook_size"] == 1024 and info["bits_per_image"] == 4 * 10 + 4
    assert_error(*run(capsys, "info", "org/absent", "--cache-dir", tmp_path / "cache"),
                 "'org/absent'", "Hugging Face Hub", exit_code=1)


# ---------------------------------------------------------------- the installed console script
@pytest.mark.slow
def test_console_script_subprocess():
    exe = shutil.which("vqswitch")
    if exe is None:
        pytest.skip("the vqswitch console script is not installed")
    r = subprocess.run([exe, "bits", "--tokens", "128", "--codebook-size", "1024", "--groups", "16"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1284" in r.stdout and "0.0196" in r.stdout
    r = subprocess.run([exe, "info", str(Path("/nonexistent") / "ckpt")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("vqswitch: error: ") and "Traceback" not in r.stderr


@pytest.mark.slow
def test_python_m_vqswitch_cli():
    import sys

    r = subprocess.run([sys.executable, "-m", "vqswitch.cli", "bits", "--tokens", "32", "--codebook-size", "256",
                        "--groups", "256"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "264" in r.stdout


# ---------------------------------------------------------------- the package's contract
def test_every_command_module_registers_its_subcommands():
    """Each command module's add_parser registers its subcommand(s) with func = its own run; push is one of them
    (no special case in main)."""
    import argparse

    import vqswitch.cli as cli

    names = set()
    for module in cli.COMMANDS:
        sub = argparse.ArgumentParser().add_subparsers(dest="command")
        module.add_parser(sub)
        assert sub.choices, module.__name__
        for name, parser in sub.choices.items():
            func = parser.get_default("func")
            assert func is not None and func.__module__ == module.__name__, (module.__name__, name)
            names.add(name)
    assert names == {"bits", "info", "new", "finetune", "eval", "demo", "compress", "decompress", "push"}
    args = cli.build_parser().parse_args(["push", "RUN", "--dry-run", "OUT"])
    assert args.func is cli.push.run and args.run_dir == "RUN" and args.dry_run == "OUT"
