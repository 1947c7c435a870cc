"""The README's quickstart runs as written, and its bits table matches the code."""
import re
from pathlib import Path

import pytest

from vqswitch import bits_per_image, bpp

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_quickstart_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no python block"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert "1284 0.0196" in capsys.readouterr().out


def test_bits_table_matches_the_formula():
    rows = re.findall(r"^\| ([\w-]+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| ([\d.]+) \|$", README, flags=re.M)
    assert len(rows) == 7
    for _, T, K, M, bits, rate in rows:
        b = bits_per_image(int(T), int(K), int(M))
        assert b == int(bits) and f"{bpp(b, 256, 256):.4f}" == rate


@pytest.mark.parametrize("command", ["HF_HUB_OFFLINE=1 python -m pytest -q tests"])
def test_ci_runs_the_readme_test_command(command):
    assert command in README
    assert command in (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
