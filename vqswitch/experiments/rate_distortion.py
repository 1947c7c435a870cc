"""The rate-distortion comparison both face benchmarks run (``benchmarks/bench_rate_distortion.py`` on procedural
faces, ``benchmarks/bench_faces.py`` on real ones): the settings compared, fine-tuning one setting from a shared
upstream model, and the verdict computed from the measured rows.

* :class:`Setting`: one point, a global-codebook baseline (M = 1, token-shared) or STSCQ (M groups of K codes);
* :func:`finetune_setting`: copy the upstream model, swap in the setting's quantizer (k-means of training latents)
  and run its stages with :class:`vqswitch.train.Finetuner`;
* :func:`compute_verdict`: each STSCQ point against

  - the baseline curve at the same bpp: PSNR linearly interpolated in bpp between the two baseline points around
    it (points outside the baseline's bpp range are "out of range": no extrapolation); the paired standard error
    comes from the per-image PSNR differences on the shared test faces (test-sample noise only);
  - the cheapest baseline spending at least as many bits (a stricter test: that baseline has more bits);
  - the baseline with the same K (fewer bits by ceil(log2 M));

  plus the ablation lines (token-specific codebooks alone, M = 1, against the switchable ones, M > 1, at each K)
  and the fine-tuning seed noise of repeated rows. Outcome per point (:func:`outcome`): "beats" (delta > 2 SE),
  "beats (within noise)" (0 < delta <= 2 SE), "loses (within noise)", "loses" (delta < -2 SE) or "out of range";
* :func:`machine_info`: what a result records about the machine it ran on.
"""
from __future__ import annotations

import copy
import math
import os
import platform
from dataclasses import dataclass

import torch

from vqswitch._checks import check_bool, check_choice, check_int

__all__ = ["Setting", "OUTCOMES", "finetune_setting", "baseline_curve", "outcome", "compute_verdict",
           "machine_info"]

#: outcome labels, from best to worst for STSCQ
OUTCOMES = ("beats", "beats (within noise)", "loses (within noise)", "loses", "out of range")


@dataclass(frozen=True)
class Setting:
    """One point of the benchmark.

    method: "baseline" (M = 1, token-shared global codebook) or "stscq"; num_groups: M; codebook_size: K;
    token_specific: whether stage 2 makes the codebooks token-specific.
    """

    method: str
    num_groups: int
    codebook_size: int
    token_specific: bool

    def __post_init__(self):
        check_choice("method", self.method, ("baseline", "stscq"))
        for name in ("num_groups", "codebook_size"):
            check_int(name, getattr(self, name), minimum=1)
        check_bool("token_specific", self.token_specific)
        if self.method == "baseline" and (self.num_groups != 1 or self.token_specific):
            raise ValueError("a baseline setting has num_groups=1 and token_specific=False")

    @property
    def stages(self) -> tuple:
        """The fine-tuning stages run: (1, 2, 3) for token-specific codebooks, else (1, 3)."""
        return (1, 2, 3) if self.token_specific else (1, 3)

    @property
    def label(self) -> str:
        if self.method == "baseline":
            return f"baseline K={self.codebook_size}"
        kind = "" if self.token_specific else " shared"
        return f"STSCQ M={self.num_groups} K={self.codebook_size}{kind}"

    @property
    def family(self) -> str:
        """The curve this point belongs to in the plot (same method, M and codebook kind)."""
        if self.method == "baseline":
            return "baseline (global codebook)"
        return f"STSCQ M={self.num_groups} {'token-specific' if self.token_specific else 'token-shared'}"


def finetune_setting(upstream, setting: Setting, steps: dict, *, stage12_lr: float, stage3_lr: float,
                     batch_size: int, images: torch.Tensor, latents: torch.Tensor, seed: int, run_dir, on_step):
    """Copy ``upstream``, swap in ``setting``'s quantizer (token-shared, k-means of ``latents`` (N, T, D) float) and
    run ``setting.stages`` with ``steps`` ({stage: steps}) on ``images`` (N, C, H, W, the model's pixel range) in
    ``run_dir``; ``on_step()`` is called after every step. Returns the fine-tuned model."""
    from vqswitch.adapters import swap_quantizer
    from vqswitch.train import Finetuner, FinetuneConfig, StageConfig

    torch.manual_seed(seed)
    model = copy.deepcopy(upstream)
    swap_quantizer(model, num_groups=setting.num_groups, codebook_size=setting.codebook_size, token_specific=False,
                   init="latents", latents=latents, seed=seed)
    stage = {s: StageConfig(steps=steps.get(s, 0), lr=stage3_lr if s == 3 else stage12_lr, batch_size=batch_size,
                            l2_weight=1.0) for s in (1, 2, 3)}
    ft = FinetuneConfig(stages=setting.stages, seed=seed, progress=False, log_every=0,
                        stage1=stage[1], stage2=stage[2], stage3=stage[3])
    return Finetuner(model, images, run_dir, ft, callback=lambda *a: on_step()).run()


def machine_info() -> dict:
    """Python and torch versions, processor, usable CPUs, torch threads and the load average (None where the
    platform has none)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"python": platform.python_version(), "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(), "cpus": cpus,
            "torch_threads": torch.get_num_threads(),
            "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def _mean(v) -> float:
    return sum(v) / len(v)


def _se(v) -> float:
    """Standard error of the mean of ``v`` (sample std / sqrt(n)); 0.0 for a single value."""
    if len(v) < 2:
        return 0.0
    m = _mean(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v))


def baseline_curve(rows: list[dict]) -> list[dict]:
    """The baseline rows sorted by bpp, one per bpp (the best PSNR where two K spend the same bits).

    rows: result rows (dicts with method, bpp, psnr, psnr_per_image). Rows whose psnr is None are left out.
    Raises ValueError when fewer than 2 usable baseline rows remain.
    """
    best: dict = {}
    for r in rows:
        if r["method"] == "baseline" and r["psnr"] is not None:
            if r["bpp"] not in best or r["psnr"] > best[r["bpp"]]["psnr"]:
                best[r["bpp"]] = r
    if len(best) < 2:
        raise ValueError(f"the baseline curve needs at least 2 baseline rows with a PSNR, got {len(best)}")
    return [best[b] for b in sorted(best)]


def outcome(delta: float, se: float) -> str:
    """The outcome label (:data:`OUTCOMES`) of a difference ``delta`` with standard error ``se``."""
    if delta > 2 * se:
        return "beats"
    if delta > 0:
        return "beats (within noise)"
    if delta >= -2 * se:
        return "loses (within noise)"
    return "loses"


def _paired(row: dict, weights: list[tuple[dict, float]]) -> tuple[float, float]:
    """Mean and SE over test faces of row's PSNR minus sum(w * baseline PSNR), per image."""
    diffs = [p - sum(w * b["psnr_per_image"][i] for b, w in weights) for i, p in enumerate(row["psnr_per_image"])]
    return _mean(diffs), _se(diffs)


def compute_verdict(rows: list[dict], repeats: list[dict] = ()) -> dict:
    """Compare every STSCQ row with the baseline rows (the module docstring says how).

    rows: result rows as the benchmarks' ``run_benchmark`` make them (method, label, num_groups, codebook_size,
        token_specific, bits_per_image, bpp, psnr, ssim, psnr_per_image: list of float over the same test faces).
    repeats: rows of settings fine-tuned again with another seed (each with ``repeat_of``, the label of its row):
        the largest PSNR change among them is ``summary["seed_noise_db"]`` (None without repeats), and
        ``summary["beats_beyond_seed_noise"]`` counts "beats" points whose margin exceeds it.
    Returns ``{"points": [...], "ablation": [...], "summary": {...}, "lines": [str, ...]}``; each point has
        label, bits_per_image, bpp, psnr, curve (baseline_psnr, baseline_ssim, delta_db, se_db, delta_ssim, between,
        weight; or None when out of range), outcome, next_baseline (label, bits_per_image, delta_db, se_db, beats;
        or None), same_k_baseline (label, bits_per_image, delta_db, se_db; or None).
    Raises ValueError when the baseline curve has fewer than 2 points, per-image PSNR lists differ in length, or
    a repeat names no row.
    """
    curve = baseline_curve(rows)
    by_label = {r["label"]: r for r in rows}
    noise = []
    for rep in repeats:
        if rep.get("repeat_of") not in by_label:
            raise ValueError(f"repeat {rep.get('label')!r} names no row (repeat_of={rep.get('repeat_of')!r})")
        ref = by_label[rep["repeat_of"]]
        if rep["psnr"] is not None and ref["psnr"] is not None:
            noise.append({"label": ref["label"], "finetune_seed": rep.get("finetune_seed"),
                          "delta_db": rep["psnr"] - ref["psnr"], "delta_ssim": rep["ssim"] - ref["ssim"]})
    seed_noise = max((abs(n["delta_db"]) for n in noise), default=None)
    n = len(curve[0]["psnr_per_image"])
    if any(len(r["psnr_per_image"]) != n for r in rows):
        raise ValueError("every row needs psnr_per_image over the same test faces (lengths differ)")
    base_by_k = {r["codebook_size"]: r for r in rows if r["method"] == "baseline" and r["psnr"] is not None}
    points, lines = [], []
    for r in rows:
        if r["method"] != "stscq":
            continue
        p = {"label": r["label"], "bits_per_image": r["bits_per_image"], "bpp": r["bpp"], "psnr": r["psnr"],
             "curve": None, "outcome": "out of range", "next_baseline": None, "same_k_baseline": None}
        if r["psnr"] is None:
            points.append(p)
            continue
        x = r["bpp"]
        for lo, hi in zip(curve, curve[1:]):
            if lo["bpp"] <= x <= hi["bpp"]:
                w = (x - lo["bpp"]) / (hi["bpp"] - lo["bpp"])
                delta, se = _paired(r, [(lo, 1.0 - w), (hi, w)])
                base_ssim = (1.0 - w) * lo["ssim"] + w * hi["ssim"]
                p["curve"] = {"baseline_psnr": (1.0 - w) * lo["psnr"] + w * hi["psnr"], "baseline_ssim": base_ssim,
                              "delta_db": delta, "se_db": se, "delta_ssim": r["ssim"] - base_ssim,
                              "between": [lo["label"], hi["label"]], "weight": w}
                p["outcome"] = outcome(delta, se)
                break
        above = [b for b in curve if b["bits_per_image"] >= r["bits_per_image"]]
        if above:
            b = above[0]
            delta, se = _paired(r, [(b, 1.0)])
            p["next_baseline"] = {"label": b["label"], "bits_per_image": b["bits_per_image"], "delta_db": delta,
                                  "se_db": se, "beats": delta > 0}
        if r["codebook_size"] in base_by_k:
            b = base_by_k[r["codebook_size"]]
            delta, se = _paired(r, [(b, 1.0)])
            p["same_k_baseline"] = {"label": b["label"], "bits_per_image": b["bits_per_image"], "delta_db": delta,
                                    "se_db": se}
        points.append(p)

    # the ablation: token-specific alone (M = 1) against switchable (M > 1) at the same K
    ablation = []
    ts1 = {r["codebook_size"]: r for r in rows
           if r["method"] == "stscq" and r["token_specific"] and r["num_groups"] == 1 and r["psnr"] is not None}
    for r in rows:
        if r["method"] == "stscq" and r["num_groups"] > 1 and r["psnr"] is not None and r["codebook_size"] in ts1:
            ref = ts1[r["codebook_size"]]
            delta, se = _paired(r, [(ref, 1.0)])
            ablation.append({"label": r["label"], "reference": ref["label"],
                             "extra_bits": r["bits_per_image"] - ref["bits_per_image"], "delta_db": delta,
                             "se_db": se})

    counts = {o: sum(p["outcome"] == o for p in points) for o in OUTCOMES}
    in_range = [p for p in points if p["curve"] is not None]
    summary = {"points": len(points), "outcomes": counts,
               "beat_curve": sum(p["curve"]["delta_db"] > 0 for p in in_range),
               "beat_next_baseline": sum(bool(p["next_baseline"] and p["next_baseline"]["beats"]) for p in points),
               "seed_noise_db": seed_noise, "seed_repeats": noise,
               "beats_beyond_seed_noise": None if seed_noise is None else sum(
                   p["outcome"] == "beats" and p["curve"]["delta_db"] > seed_noise for p in points),
               "best": None, "worst": None}
    if in_range:
        best = max(in_range, key=lambda p: p["curve"]["delta_db"])
        worst = min(in_range, key=lambda p: p["curve"]["delta_db"])
        summary["best"] = {"label": best["label"], "delta_db": best["curve"]["delta_db"]}
        summary["worst"] = {"label": worst["label"], "delta_db": worst["curve"]["delta_db"]}

    lines.append(f"{summary['beat_curve']} of {len(points)} STSCQ points lie above the baseline curve at the same "
                 f"bpp ({counts['beats']} by more than 2 SE); {counts['out of range']} out of the baseline's bpp "
                 f"range; {summary['beat_next_baseline']} beat even the cheapest baseline with at least as many bits.")
    for n in noise:
        lines.append(f"fine-tuning seed noise: {n['label']} fine-tuned again with seed {n['finetune_seed']} moved "
                     f"PSNR by {n['delta_db']:+.2f} dB (SSIM {n['delta_ssim']:+.4f}); the paired SE below does not "
                     f"include this")
    if seed_noise is not None:
        lines.append(f"{summary['beats_beyond_seed_noise']} of the {counts['beats']} 'beats' points win by more than "
                     f"that seed noise ({seed_noise:.2f} dB)")
    if in_range:
        lines.append(f"best: {summary['best']['label']} {summary['best']['delta_db']:+.2f} dB; worst: "
                     f"{summary['worst']['label']} {summary['worst']['delta_db']:+.2f} dB (vs the curve)")
    for p in points:
        c, nb = p["curve"], p["next_baseline"]
        head = f"{p['label']} ({p['bits_per_image']} bits, {p['bpp']:.4f} bpp): "
        if p["psnr"] is None:
            lines.append(head + "PSNR undefined (an exact reconstruction); not compared")
            continue
        if c is None:
            text = head + f"{p['psnr']:.2f} dB, outside the baseline's bpp range: not compared with the curve"
        else:
            text = (head + f"{p['psnr']:.2f} dB vs baseline curve {c['baseline_psnr']:.2f} dB -> "
                    f"{c['delta_db']:+.2f} +/- {c['se_db']:.2f} dB, SSIM {c['delta_ssim']:+.4f}: {p['outcome']}")
        if nb is not None:
            text += f"; vs {nb['label']} ({nb['bits_per_image']} bits) {nb['delta_db']:+.2f} dB"
        lines.append(text)
    for a in ablation:
        lines.append(f"ablation: {a['label']} vs {a['reference']} (token-specific alone, {a['extra_bits']} fewer "
                     f"bits): {a['delta_db']:+.2f} +/- {a['se_db']:.2f} dB from switching")
    for p in points:
        s = p["same_k_baseline"]
        if s is not None and p["label"].startswith("STSCQ M=1 ") and not p["label"].endswith("shared"):
            lines.append(f"ablation: {p['label']} vs {s['label']} (same bits): {s['delta_db']:+.2f} +/- "
                         f"{s['se_db']:.2f} dB from token-specific codebooks alone")
    return {"points": points, "ablation": ablation, "summary": summary, "lines": lines}
