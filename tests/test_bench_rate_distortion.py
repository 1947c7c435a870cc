"""benchmarks/bench_rate_distortion.py: a quick run in-process, its JSON, its bit accounting and its verdict
(recomputed here independently with numpy). The tests of the quick run are slow (it trains); the verdict's and the
settings' tests are fast."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vqswitch.bits import bpp as bits_to_bpp

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_rate_distortion.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_rate_distortion", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


rd = _load()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("rd")
    json_path, plot_path = out / "rd.json", out / "rd.png"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = rd.main(["--quick", "--seed", "3", "--no-progress", "--json-out", str(json_path),
                        "--plot", str(plot_path)])
    assert code == 0
    return json.loads(json_path.read_text()), stdout.getvalue(), plot_path


def _quick_tokens() -> int:
    cfg = rd.QUICK.tokenizer
    f = 2 ** (len(cfg.channel_mult) - 1)
    return (cfg.image_size // f) ** 2


# ------------------------------------------------------------------------------------------------ the run


@pytest.mark.slow
def test_json_structure_and_settings(quick):
    result, _, _ = quick
    for key in ("benchmark", "config", "seed", "quick", "machine", "upstream", "unquantized", "rows", "repeats",
                "verdict", "wall_seconds", "command"):
        assert key in result, key
    assert result["benchmark"] == "rate_distortion" and result["seed"] == 3 and result["quick"] is True
    cfg = rd.QUICK
    expected = {("baseline", 1, k, False) for k in cfg.baseline_k}
    expected |= {("stscq", m, k, True) for m in cfg.stscq_m for k in cfg.stscq_k}
    got = [(r["method"], r["num_groups"], r["codebook_size"], r["token_specific"]) for r in result["rows"]]
    assert len(got) == len(set(got)) and set(got) == expected
    assert result["upstream"]["codebook_size"] == cfg.tokenizer.codebook_size0
    assert result["upstream"]["num_groups"] == 1
    # the seed repeat: the middle baseline again, fine-tuned with seed + 1
    (rep,) = result["repeats"]
    middle = sorted(cfg.baseline_k)[(len(cfg.baseline_k) - 1) // 2]
    assert rep["repeat_of"] == f"baseline K={middle}" and rep["finetune_seed"] == 4
    assert rep["codebook_size"] == middle and rep["method"] == "baseline"
    ceiling = result["unquantized"]
    assert math.isfinite(ceiling["psnr"]) and -1.0 <= ceiling["ssim"] <= 1.0


@pytest.mark.slow
def test_bits_formula_and_values_per_row(quick):
    result, _, _ = quick
    T, size = _quick_tokens(), rd.QUICK.tokenizer.image_size
    n_test = rd.QUICK.tokenizer.num_test
    D = rd.QUICK.tokenizer.z_channels
    for r in [result["upstream"]] + result["rows"] + result["repeats"]:
        assert r["num_tokens"] == T
        assert r["codebook_params"] == r["num_groups"] * (T if r["token_specific"] else 1) * r["codebook_size"] * D
        K, M = r["codebook_size"], r["num_groups"]
        assert r["bits_per_image"] == T * math.ceil(math.log2(K)) + math.ceil(math.log2(M)), r["label"]
        assert r["bpp"] == pytest.approx(r["bits_per_image"] / (size * size))
        assert r["images"] == n_test and len(r["psnr_per_image"]) == n_test
        for key in ("psnr", "ssim", "utilization_mean"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (r["label"], key)
        assert all(math.isfinite(v) for v in r["psnr_per_image"])
        assert r["psnr"] == pytest.approx(np.mean(r["psnr_per_image"]))
        assert 0.0 < r["psnr"] < 100.0 and -1.0 <= r["ssim"] <= 1.0 and 0.0 < r["utilization_mean"] <= 1.0
        assert r["encoder_unchanged"] is True  # the encoder stayed frozen for every setting


@pytest.mark.slow
def test_stages_and_matched_steps(quick):
    result, _, _ = quick
    c = rd.QUICK.tokenizer
    for r in result["rows"]:
        if r["token_specific"]:
            assert r["stages"] == [1, 2, 3]
            assert r["stage_steps"] == {"1": c.stage1_steps, "2": c.stage2_steps, "3": c.stage3_steps}
        else:  # the baseline: no stage 2, its quantizer budget matched, the same decoder steps
            assert r["stages"] == [1, 3]
            assert r["stage_steps"] == {"1": c.stage1_steps + c.stage2_steps, "3": c.stage3_steps}


def _reference_verdict(rows):
    """The verdict's numbers recomputed with numpy: {label: (curve delta or None, next-baseline delta or None)}."""
    base = sorted((r for r in rows if r["method"] == "baseline"), key=lambda r: r["bpp"])
    xs = np.array([r["bpp"] for r in base])
    ys = np.array([r["psnr"] for r in base])
    per = np.array([r["psnr_per_image"] for r in base])  # (baselines, images)
    out = {}
    for r in rows:
        if r["method"] != "stscq":
            continue
        curve = None
        if xs[0] <= r["bpp"] <= xs[-1]:
            base_per_image = np.array([np.interp(r["bpp"], xs, per[:, i]) for i in range(per.shape[1])])
            diff = np.array(r["psnr_per_image"]) - base_per_image
            curve = (r["psnr"] - np.interp(r["bpp"], xs, ys), diff.std(ddof=1) / math.sqrt(diff.size))
        above = [b for b in base if b["bits_per_image"] >= r["bits_per_image"]]
        nxt = (r["psnr"] - above[0]["psnr"], above[0]["label"]) if above else None
        out[r["label"]] = (curve, nxt)
    return out


@pytest.mark.slow
def test_verdict_consistent_with_rows(quick):
    result, stdout, _ = quick
    verdict = result["verdict"]
    ref = _reference_verdict(result["rows"])
    points = {p["label"]: p for p in verdict["points"]}
    assert set(points) == set(ref)
    n_above = n_next = 0
    for label, (curve, nxt) in ref.items():
        p = points[label]
        if curve is None:
            assert p["curve"] is None and p["outcome"] == "out of range"
        else:
            delta, se = curve
            assert p["curve"]["delta_db"] == pytest.approx(delta, abs=1e-9)
            assert p["curve"]["se_db"] == pytest.approx(se, rel=1e-6, abs=1e-12)
            want = ("beats" if delta > 2 * se else "beats (within noise)" if delta > 0
                    else "loses (within noise)" if delta >= -2 * se else "loses")
            assert p["outcome"] == want
            n_above += delta > 0
        if nxt is None:
            assert p["next_baseline"] is None
        else:
            assert p["next_baseline"]["label"] == nxt[1]
            assert p["next_baseline"]["delta_db"] == pytest.approx(nxt[0], abs=1e-9)
            n_next += nxt[0] > 0
    assert verdict["summary"]["beat_curve"] == n_above
    assert verdict["summary"]["beat_next_baseline"] == n_next
    assert verdict["summary"]["points"] == len(ref)
    rows = {r["label"]: r for r in result["rows"]}
    noise = max(abs(r["psnr"] - rows[r["repeat_of"]]["psnr"]) for r in result["repeats"])
    assert verdict["summary"]["seed_noise_db"] == pytest.approx(noise, abs=1e-12)
    assert verdict["summary"]["beats_beyond_seed_noise"] == sum(
        p["outcome"] == "beats" and p["curve"]["delta_db"] > noise for p in verdict["points"])
    assert sum(verdict["summary"]["outcomes"].values()) == len(ref)
    # the printed verdict is the computed one
    for line in verdict["lines"]:
        assert line in stdout
    assert "Verdict" in stdout and "baseline K=" in stdout


@pytest.mark.slow
def test_ablation_compares_switching_with_token_specific_alone(quick):
    result, _, _ = quick
    rows = {r["label"]: r for r in result["rows"]}
    entries = result["verdict"]["ablation"]
    expected = {f"STSCQ M={m} K={k}" for m in rd.QUICK.stscq_m if m > 1 for k in rd.QUICK.stscq_k}
    assert {a["label"] for a in entries} == expected
    for a in entries:
        r, ref = rows[a["label"]], rows[a["reference"]]
        assert ref["num_groups"] == 1 and ref["token_specific"] and ref["codebook_size"] == r["codebook_size"]
        assert a["delta_db"] == pytest.approx(r["psnr"] - ref["psnr"], abs=1e-9)
        assert a["extra_bits"] == math.ceil(math.log2(r["num_groups"]))


@pytest.mark.slow
def test_plot_written_only_with_matplotlib(quick):
    _, stdout, plot_path = quick
    if importlib.util.find_spec("matplotlib") is None:
        assert "plot skipped" in stdout and not plot_path.exists()
    else:
        assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------ units


def _row(method, M, K, psnrs, T=4, ts=None):
    bits = T * math.ceil(math.log2(K)) + math.ceil(math.log2(M))
    ts = (method == "stscq") if ts is None else ts
    label = f"baseline K={K}" if method == "baseline" else f"STSCQ M={M} K={K}"
    return {"method": method, "label": label, "num_groups": M, "codebook_size": K, "token_specific": ts,
            "bits_per_image": bits, "bpp": bits_to_bpp(bits, 4, 4), "psnr": float(np.mean(psnrs)), "ssim": 0.5,
            "psnr_per_image": [float(v) for v in psnrs]}


@settings(max_examples=40, deadline=None)
@given(lo=st.floats(10, 30), gain=st.floats(0.0, 10.0), offset=st.floats(-3.0, 3.0),
       noise=st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3))
def test_verdict_interpolates_the_baseline_curve(lo, gain, offset, noise):
    """A point between baselines K=4 and K=16 is compared with the straight line between them in bpp."""
    b4 = _row("baseline", 1, 4, [lo + v for v in noise])
    b16 = _row("baseline", 1, 16, [lo + gain + v for v in noise])
    s = _row("stscq", 4, 8, [lo + gain * 0.5 + offset + 0.5 * v for v in noise])
    # 4 tokens: K=4 -> 8 bits, K=16 -> 16 bits, M=4 K=8 -> 12 + 2 = 14 bits: 3/4 of the way
    v = rd.compute_verdict([b4, b16, s])
    (p,) = v["points"]
    w = (14 - 8) / (16 - 8)
    assert p["curve"]["weight"] == pytest.approx(w)
    line = b4["psnr"] + w * (b16["psnr"] - b4["psnr"])
    assert p["curve"]["baseline_psnr"] == pytest.approx(line, abs=1e-9)
    assert p["curve"]["delta_db"] == pytest.approx(s["psnr"] - line, abs=1e-9)
    assert p["next_baseline"]["label"] == "baseline K=16"
    assert v["summary"]["beat_curve"] == int(p["curve"]["delta_db"] > 0)


def test_verdict_outcomes_and_range():
    b4 = _row("baseline", 1, 4, [20.0, 20.0, 20.0])
    b8 = _row("baseline", 1, 8, [22.0, 22.0, 22.0])
    ahead = _row("stscq", 1, 8, [23.0, 23.1, 22.9])          # 12 bits, +1 dB, tiny spread: beats
    close = _row("stscq", 1, 4, [19.0, 21.0, 20.3])          # +0.1 dB, large spread: within noise
    outside = _row("stscq", 4, 8, [30.0, 30.0, 30.0])        # 14 bits > the curve's 12: out of range
    v = rd.compute_verdict([b4, b8, ahead, close, outside])
    by = {p["label"]: p for p in v["points"]}
    assert by["STSCQ M=1 K=8"]["outcome"] == "beats"
    assert by["STSCQ M=1 K=4"]["outcome"] == "beats (within noise)"
    assert by["STSCQ M=4 K=8"]["outcome"] == "out of range" and by["STSCQ M=4 K=8"]["curve"] is None
    assert by["STSCQ M=4 K=8"]["next_baseline"] is None  # no baseline spends 14 bits or more
    assert by["STSCQ M=1 K=8"]["same_k_baseline"]["delta_db"] == pytest.approx(1.0)
    assert v["summary"]["outcomes"]["out of range"] == 1
    assert [a["label"] for a in v["ablation"]] == ["STSCQ M=4 K=8"]
    assert v["ablation"][0]["delta_db"] == pytest.approx(7.0)


def test_verdict_needs_a_curve():
    with pytest.raises(ValueError, match="at least 2 baseline"):
        rd.compute_verdict([_row("baseline", 1, 4, [20.0, 21.0]), _row("stscq", 1, 4, [20.0, 21.0])])


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="method"):
        rd.Setting("vq", 1, 4, False)
    with pytest.raises(ValueError, match="baseline setting"):
        rd.Setting("baseline", 4, 16, False)
    with pytest.raises(ValueError, match="codebook_size0"):
        rd.settings_for(replace(rd.QUICK, baseline_k=(4, 1024)))
    with pytest.raises(TypeError, match="tokenizer"):
        rd.settings_for(replace(rd.QUICK, tokenizer={"image_size": 32}))
    with pytest.raises(ValueError, match="shared_m"):
        rd.settings_for(replace(rd.QUICK, shared_m=(1,)))
    with pytest.raises(TypeError, match="config"):
        rd.run_benchmark(config="full")
    assert rd.main(["--baseline-k", "4,x"]) == 2
    assert rd.main(["--quick", "--baseline-k", "4"]) == 2  # a curve needs two baselines
    assert rd.main(["--quick", "--upstream-steps", "0"]) == 2
    assert rd.main(["--quick", "--seed-repeats", "-1"]) == 2
    with pytest.raises(ValueError, match="names no row"):
        rd.compute_verdict([_row("baseline", 1, 4, [20.0]), _row("baseline", 1, 8, [21.0])],
                           [{**_row("baseline", 1, 4, [20.5]), "repeat_of": "baseline K=99"}])


def test_stage_budgets_and_settings_grid():
    c = rd.QUICK.tokenizer
    base, ts = rd.Setting("baseline", 1, 8, False), rd.Setting("stscq", 4, 8, True)
    matched, same = rd.QUICK, replace(rd.QUICK, baseline_stage1="same")
    assert matched.stage_steps(base) == {1: c.stage1_steps + c.stage2_steps, 3: c.stage3_steps}
    assert same.stage_steps(base) == {1: c.stage1_steps, 3: c.stage3_steps}
    assert matched.stage_steps(ts) == same.stage_steps(ts) == {1: c.stage1_steps, 2: c.stage2_steps,
                                                               3: c.stage3_steps}
    grid = rd.settings_for(replace(rd.QUICK, shared_m=(2,)))
    shared = [s for s in grid if s.method == "stscq" and not s.token_specific]
    assert [(s.num_groups, s.codebook_size) for s in shared] == [(2, k) for k in sorted(rd.QUICK.stscq_k)]
    assert all(s.stages == (1, 3) and s.label.endswith(" shared") for s in shared)
    assert len(grid) == len(rd.QUICK.baseline_k) + len(rd.QUICK.stscq_m) * len(rd.QUICK.stscq_k) + len(shared)
