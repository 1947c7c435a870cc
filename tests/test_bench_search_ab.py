"""benchmarks/bench_search_ab.py: the base revision's search loads beside this checkout's and agrees with it."""
import importlib.util
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_search_ab",
                                                  os.path.join(ROOT, "benchmarks", "bench_search_ab.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ab_runs_a_base_revision_beside_this_checkout():
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("needs a git checkout")
    bench = _bench()
    base = bench.load_base("HEAD", ROOT)
    assert base.__name__.startswith("base_kernels_") and base is not bench.current
    assert bench.load_base("HEAD", ROOT) is not base  # a fresh module per call
    for case in [(3, 4, 5, 16, 3, "fixed"), (2, 4, 5, 16, 1, "fixed"), (3, 4, 5, 16, 3, "nearest")]:
        r = bench.run_case(case, base, rounds=1)
        assert r["same_indices"] and r["base_ms"] > 0 and r["this_ms"] > 0
    with pytest.raises(SystemExit, match="cannot read"):
        bench.load_base("no-such-revision-xyz", ROOT)
