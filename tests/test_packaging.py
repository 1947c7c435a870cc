"""The package installs as designed: a built wheel carries vqswitch.adapters and vqswitch.kernels,
and never top-level `adapters` / `kernels` packages. `import vqswitch` stays light."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        str(ROOT)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("vqswitch-*.whl")
    return whl


@pytest.mark.slow  # builds a wheel
def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"vqswitch"}, tops
    for needed in ("vqswitch/__init__.py", "vqswitch/quantizer.py", "vqswitch/adapters/__init__.py",
                   "vqswitch/kernels/__init__.py", "vqswitch/kernels/torch_search.py"):
        assert needed in names
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "vqswitch = vqswitch.cli:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()


@pytest.mark.slow  # builds and installs a wheel
def test_installed_wheel_imports_subpackages(wheel, tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    code = (
        "import importlib.util, sys, vqswitch, vqswitch.adapters, vqswitch.kernels\n"
        f"assert vqswitch.__file__.startswith({str(site)!r}), vqswitch.__file__\n"
        f"assert vqswitch.kernels.__file__.startswith({str(site)!r})\n"
        "assert importlib.util.find_spec('adapters') is None and importlib.util.find_spec('kernels') is None\n"
        "import torch; q = vqswitch.SwitchableTokenQuantizer(num_tokens=2, codebook_size=4, dim=3)\n"
        "print(q(torch.randn(1, 2, 3)).indices.shape)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "torch.Size([1, 2])" in r.stdout


@pytest.mark.slow  # a fresh interpreter importing torch
def test_import_vqswitch_does_not_pull_optional_dependencies(tmp_path):
    code = ("import sys, vqswitch, vqswitch.adapters, vqswitch.kernels\n"
            "heavy = [m for m in ('diffusers', 'transformers', 'triton') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
