"""Rate-distortion on procedural faces: a global-codebook VQ baseline against STSCQ at matched bits.

    python benchmarks/bench_rate_distortion.py [--quick] [--seed 0] [--json-out PATH] [--plot PATH | --no-plot]
        [--baseline-k 16,32,64,128] [--stscq-m 1,4,16] [--stscq-k 16,32,64] [--shared-m M,...]
        [--baseline-stage1 matched|same] [--upstream-steps 2000] [--seed-repeats 2] [--no-progress]

Protocol (every setting starts from the same upstream model, so only the quantizer and the decoder's adaptation
to it differ):

1. Draw procedural faces (:class:`vqswitch.data.ProceduralFaces`): training faces and held-out test faces (the
   images after the training ones); every row is evaluated on the same test faces.
2. Train ONE upstream tokenizer, a small MaskGIT-VQGAN with a global codebook of K0 codes, as ``vqswitch demo``
   does (:func:`vqswitch.experiments.faces.train_baseline`, 2000 steps; ``--upstream-steps``): after 300 steps the
   autoencoder itself is the bottleneck and every quantizer lands within a few tenths of a dB of every other.
   Its encoder is frozen from here on.
3. For every setting, copy the upstream model and swap in a quantizer started from a k-means of the (same)
   training latents (``swap_quantizer(..., init="latents")``), then fine-tune with
   :class:`vqswitch.train.finetune.Finetuner`:

   * baseline at K codes: M = 1, one token-shared (global) codebook; stage 1 (the codebook) then stage 3 (the
     decoder). There is no stage 2: a global codebook has no token-specific stage. With
     ``--baseline-stage1 matched`` (default) its stage 1 runs as many steps as STSCQ's stages 1 and 2 together, so
     it gets the same quantizer-training budget; ``same`` gives it STSCQ's stage-1 steps only.
   * STSCQ (M, K): M groups; stages 1, 2 (token-specific codebooks) and 3. M = 1 is token-specific codebooks alone
     (no switching); M > 1 adds the switch. ``--shared-m`` adds switchable-only rows (M groups of token-shared
     codebooks, stages 1 and 3, the stage-1 budget as the baseline's).
   * every setting gets the SAME stage-3 decoder steps, learning rate and batches (same seed), so decoder
     adaptation is no advantage of either method.

4. Evaluate: bits/image = T*ceil(log2 K) + ceil(log2 M), bpp = bits / (H*W), PSNR (mean of per-image PSNRs),
   SSIM, codebook utilisation on the test faces. Reconstructions are clamped to [0, 1] first. The bits count the
   indices only; the codebooks belong to the decoder, and their size (``codebook_params`` = M * T' * K * D, T' = T
   for token-specific codebooks, else 1) is reported beside them because it differs by orders of magnitude.

The verdict is computed from the rows, nothing typed in. Each STSCQ point is compared with

* the baseline curve at the same bpp: PSNR linearly interpolated in bpp between the two baseline points around
  it (points outside the baseline's bpp range are "out of range": no extrapolation); the paired standard error
  comes from the per-image PSNR differences on the shared test faces (test-sample noise only: one training
  seed, so seed-to-seed variation is not in it);
* the cheapest baseline spending at least as many bits (a stricter test: that baseline has more bits);
* the baseline with the same K (fewer bits by ceil(log2 M)).

Two references bound what the numbers can say: the "ceiling" (the upstream decoder on unquantized encoder tokens)
and the fine-tuning seed noise (the middle baseline fine-tuned again with seeds seed + 1, seed + 2, ...,
``--seed-repeats``): a margin smaller than the largest such change is not evidence either way. Re-running the same
command reproduces the rows up to the float non-determinism of threaded CPU kernels, which training can amplify to a
few hundredths of a dB.

Outcome per point: "beats" (delta > 2 SE), "beats (within noise)" (0 < delta <= 2 SE), "loses (within noise)",
"loses" (delta < -2 SE) or "out of range". The ablation lines compare token-specific codebooks alone (M = 1) with
the switchable ones (M > 1) at each K, on the same images.

Writes JSON (``--json-out``, atomically; default ``benchmarks/results/rate_distortion.json``, or
``rate_distortion_quick.json`` with ``--quick``) and, when matplotlib can be imported, a bpp-vs-PSNR PNG (``--plot``;
skipped with a message otherwise). ``--quick`` is a tiny run (seconds) whose numbers mean nothing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from vqswitch._checks import check_choice, check_int
from vqswitch.experiments.faces import DemoConfig, format_number
from vqswitch.experiments.rate_distortion import (OUTCOMES, Setting, baseline_curve, compute_verdict,  # noqa: F401
                                                  finetune_setting, machine_info)

__all__ = ["Setting", "RDConfig", "FULL", "QUICK", "settings_for", "run_benchmark", "finetune_setting",
           "baseline_curve", "compute_verdict", "format_table", "format_verdict", "write_plot", "main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BASELINE_STAGE1 = ("matched", "same")


# ------------------------------------------------------------------------------------------------ settings


def _int_tuple(name: str, values, minimum: int = 1) -> tuple:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of ints, got {type(values).__name__}")
    out = tuple(check_int(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(values))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated values: {out}")
    return out


@dataclass(frozen=True)
class RDConfig:
    """The benchmark's sizes and settings.

    tokenizer: a :class:`vqswitch.experiments.faces.DemoConfig` (image size, data sizes, the upstream model, its
        training, the stage steps and learning rates; its num_groups / codebook_size fields are unused here).
    baseline_k: K of the global-codebook baselines; stscq_m x stscq_k: the token-specific STSCQ grid;
    shared_m: M of switchable-only rows (token-shared codebooks) at every stscq_k (the ablation; may be empty);
    baseline_stage1: "matched" (stage 1 of rows without stage 2 runs stage1 + stage2 steps) or "same";
    seed_repeats: how many times the middle baseline is fine-tuned again with another seed (seed + 1, ...), from
        the same upstream model: the spread of its PSNR is the fine-tuning seed noise the verdict compares with.
    """

    tokenizer: object
    baseline_k: tuple = (16, 32, 64, 128)
    stscq_m: tuple = (1, 4, 16)
    stscq_k: tuple = (16, 32, 64)
    shared_m: tuple = ()
    baseline_stage1: str = "matched"
    seed_repeats: int = 2

    def check(self) -> "RDConfig":
        """Validate (returns self). Raises TypeError/ValueError naming the field."""
        if not isinstance(self.tokenizer, DemoConfig):
            raise TypeError(f"tokenizer must be a vqswitch.experiments.faces.DemoConfig, got "
                            f"{type(self.tokenizer).__name__}")
        K0 = self.tokenizer.codebook_size0
        for name in ("baseline_k", "stscq_k"):
            ks = _int_tuple(name, getattr(self, name))
            if not ks:
                raise ValueError(f"{name} must not be empty")
            if max(ks) > K0:
                raise ValueError(f"{name} values must be <= codebook_size0 K0={K0}, got {max(ks)}")
        if len(_int_tuple("baseline_k", self.baseline_k)) < 2:
            raise ValueError("baseline_k needs at least 2 values (a curve to compare with)")
        if not _int_tuple("stscq_m", self.stscq_m):
            raise ValueError("stscq_m must not be empty")
        for m in _int_tuple("shared_m", self.shared_m):
            if m < 2:
                raise ValueError(f"shared_m values must be >= 2 (M=1 token-shared is the baseline), got {m}")
        check_int("seed_repeats", self.seed_repeats, minimum=0)
        check_choice("baseline_stage1", self.baseline_stage1, BASELINE_STAGE1)
        return self

    def stage_steps(self, setting: Setting) -> dict:
        """{stage: optimizer steps} for ``setting`` (stages it does not run are absent)."""
        c = self.tokenizer
        s1 = c.stage1_steps
        if 2 not in setting.stages and self.baseline_stage1 == "matched":
            s1 += c.stage2_steps
        steps = {1: s1, 2: c.stage2_steps, 3: c.stage3_steps}
        return {s: steps[s] for s in setting.stages}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tokenizer"] = {**asdict(self.tokenizer), "channel_mult": list(self.tokenizer.channel_mult)}
        for k in ("baseline_k", "stscq_m", "stscq_k", "shared_m"):
            d[k] = list(d[k])
        return d


def _default_configs():
    from vqswitch.experiments.faces import FULL as DEMO_FULL
    from vqswitch.experiments.faces import QUICK as DEMO_QUICK

    # the demo's tokenizer, 2000 steps (at 300 steps the autoencoder itself is the bottleneck: quantizing with K0
    # codes cost 0.05 dB and every quantizer landed within a few tenths of a dB)
    full = RDConfig(tokenizer=replace(DEMO_FULL, num_test=256, baseline_steps=2000))
    quick = RDConfig(tokenizer=replace(DEMO_QUICK, num_test=16), baseline_k=(4, 8, 16), stscq_m=(1, 4),
                     stscq_k=(4, 8), seed_repeats=1)
    return full, quick


FULL, QUICK = _default_configs()


def settings_for(config: RDConfig) -> list[Setting]:
    """Every setting of ``config``: the baselines (by K), then STSCQ token-specific (by M, then K), then the
    switchable-only rows. Raises as :meth:`RDConfig.check`."""
    config.check()
    out = [Setting("baseline", 1, k, False) for k in sorted(config.baseline_k)]
    out += [Setting("stscq", m, k, True) for m in sorted(config.stscq_m) for k in sorted(config.stscq_k)]
    out += [Setting("stscq", m, k, False) for m in sorted(config.shared_m) for k in sorted(config.stscq_k)]
    return out


# ------------------------------------------------------------------------------------------------ the run


def _encoder_state(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.encoder.parameters()]


def _row(setting: Setting | None, result: dict, per_image_psnr: torch.Tensor, *, dim: int, stages, steps, seconds,
         encoder_unchanged) -> dict:
    """One JSON row from :func:`vqswitch.experiments.faces.evaluate_swapped`'s evaluation dict; ``per_image_psnr``:
    (N,) float dB; ``dim``: D."""
    util = result.get("utilization", {}).get("overall", {})
    books = result["num_groups"] * (result["num_tokens"] if result["token_specific"] else 1)
    row = {
        "method": setting.method if setting else "upstream",
        "label": setting.label if setting else f"upstream K0={result['codebook_size']} (not fine-tuned)",
        "family": setting.family if setting else "upstream",
        "num_groups": result["num_groups"], "codebook_size": result["codebook_size"],
        "token_specific": bool(result["token_specific"]), "num_tokens": result["num_tokens"],
        "stages": list(stages), "stage_steps": {str(k): v for k, v in steps.items()},
        "codebook_params": books * result["codebook_size"] * dim,
        "bits_per_image": result["bits_per_image"], "bpp": result["bpp"], "psnr": result["psnr"],
        "ssim": result["ssim"], "utilization_mean": result["utilization_mean"],
        "utilization_min": util.get("min"), "utilization_max": util.get("max"),
        "group_counts": result.get("group_counts"), "images": result["images"],
        "psnr_per_image": [float(v) for v in per_image_psnr.tolist()],
        "seconds": round(seconds, 2), "encoder_unchanged": encoder_unchanged,
    }
    return row


def _finetune_and_evaluate(upstream, setting: Setting, config: RDConfig, train: torch.Tensor, test: torch.Tensor,
                           latents: torch.Tensor, seed: int, on_step) -> dict:
    """:func:`finetune_setting` of ``setting`` on ``train`` (N, 3, H, W) float in [0, 1], evaluated on ``test``;
    returns the row."""
    from vqswitch.eval import psnr
    from vqswitch.experiments.faces import evaluate_swapped

    cfg = config.tokenizer
    t0 = time.perf_counter()
    encoder0 = _encoder_state(upstream)
    steps = config.stage_steps(setting)
    with tempfile.TemporaryDirectory(prefix="vqswitch-rd-") as run_dir:
        model = finetune_setting(upstream, setting, steps, stage12_lr=cfg.stage12_lr, stage3_lr=cfg.stage3_lr,
                                 batch_size=cfg.stage_batch_size, images=train, latents=latents, seed=seed,
                                 run_dir=run_dir, on_step=on_step)
    result, recon = evaluate_swapped(model, test)
    same = all(torch.equal(a, b) for a, b in zip(encoder0, _encoder_state(model)))
    return _row(setting, result, psnr(test, recon, 1.0, reduction="none"), dim=cfg.z_channels,
                stages=setting.stages, steps=steps,
                seconds=time.perf_counter() - t0, encoder_unchanged=same)


def run_benchmark(config: RDConfig | None = None, *, quick: bool = False, seed: int = 0,
                  progress: bool = True) -> dict:
    """Run the protocol of the module docstring and return the result (what the JSON holds).

    Args:
        config: sizes and settings (default :data:`FULL`, or :data:`QUICK` with ``quick=True``).
        quick: use :data:`QUICK` when ``config`` is None (recorded in the result).
        seed: int >= 0; seeds the data, the upstream model, every quantizer start and the batch order (the same
            batches for every setting).
        progress: tqdm bars (upstream training, then one bar over all fine-tuning steps).
    Returns:
        ``{"benchmark", "config", "seed", "quick", "data", "machine", "upstream", "unquantized", "rows",
        "repeats", "verdict", "wall_seconds"}``; ``rows`` holds one dict per setting (method, label, family,
        num_groups, codebook_size, token_specific, stages, stage_steps, bits_per_image, bpp, psnr, ssim,
        utilization_mean/min/max, group_counts, psnr_per_image (float dB per test face), seconds,
        encoder_unchanged); ``upstream`` is the same for the upstream model as trained; ``unquantized`` is
        {psnr, ssim} of its decoder on unquantized encoder tokens (the ceiling); ``repeats`` are rows of the middle
        baseline fine-tuned with seeds seed+1.. (with ``repeat_of`` and ``finetune_seed``); ``verdict`` is
        :func:`compute_verdict` of rows and repeats.
    Raises:
        TypeError/ValueError for bad arguments; FloatingPointError when training diverges.
    """
    from tqdm.auto import tqdm

    from vqswitch.adapters import adapter_for, encode_latents
    from vqswitch.eval import psnr, ssim
    from vqswitch.experiments.faces import build_tokenizer, evaluate_baseline, pick_config, split_faces, train_baseline

    seed = check_int("seed", seed, minimum=0)
    config = pick_config(quick, config, RDConfig, QUICK, FULL)
    settings = settings_for(config)
    cfg = config.tokenizer
    start = time.perf_counter()
    torch.manual_seed(seed)

    # 1. data: the test faces are the images after the training ones, shared by every row
    train, test = split_faces(cfg.num_train, cfg.num_test, cfg.image_size, seed)

    # 2. the upstream tokenizer (global codebook of K0 codes), trained once
    t0 = time.perf_counter()
    upstream = build_tokenizer(cfg)
    train_baseline(upstream, train, cfg, seed=seed, progress=progress)
    up_result, up_recon = evaluate_baseline(upstream, test, cfg)
    upstream_row = _row(None, up_result, psnr(test, up_recon, 1.0, reduction="none"), dim=cfg.z_channels,
                        stages=[], steps={},
                        seconds=time.perf_counter() - t0, encoder_unchanged=True)
    with torch.no_grad():
        latents = encode_latents(upstream, train)  # the frozen encoder's tokens: every quantizer starts from them
        # the ceiling: the upstream decoder on the encoder's tokens, not quantized at all
        adapter = adapter_for(upstream)
        raw = adapter.decode_tokens(upstream, encode_latents(upstream, test)).clamp(0.0, 1.0)
    unquantized = {"psnr": float(psnr(test, raw, 1.0)), "ssim": float(ssim(test, raw, 1.0))}

    # 3. every setting from a copy of the upstream model; then the repeats (another fine-tuning seed)
    repeat_setting = Setting("baseline", 1, sorted(config.baseline_k)[(len(config.baseline_k) - 1) // 2], False)
    jobs = [(s, seed) for s in settings] + [(repeat_setting, seed + i) for i in range(1, config.seed_repeats + 1)]
    total = sum(sum(config.stage_steps(s).values()) for s, _ in jobs)
    bar = tqdm(total=total, desc="fine-tuning", disable=not progress)
    rows, repeats = [], []
    for setting, ft_seed in jobs:
        bar.set_postfix_str(setting.label + (f" (seed {ft_seed})" if ft_seed != seed else ""))
        row = _finetune_and_evaluate(upstream, setting, config, train, test, latents, ft_seed,
                                     lambda *a: bar.update(1))
        if ft_seed == seed:
            rows.append(row)
        else:
            repeats.append({**row, "repeat_of": setting.label, "finetune_seed": ft_seed})
    bar.close()

    return {
        "benchmark": "rate_distortion",
        "config": config.to_dict(), "seed": seed, "quick": quick,
        "data": f"ProceduralFaces seed {seed}: {cfg.num_train} training faces, test = held-out faces "
                f"{cfg.num_train}..{cfg.num_train + cfg.num_test - 1} ({cfg.num_test} images of "
                f"{cfg.image_size}x{cfg.image_size})",
        "machine": machine_info(),
        "upstream": upstream_row,
        "unquantized": unquantized,
        "rows": rows,
        "repeats": repeats,
        "verdict": compute_verdict(rows, repeats),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


# ------------------------------------------------------------------------------------------------ verdict


# ------------------------------------------------------------------------------------------------ output


def format_table(result: dict) -> str:
    """The rows of a :func:`run_benchmark` result (upstream first, seed repeats last) as aligned plain text, with
    each STSCQ row's PSNR difference to the baseline curve at the same bpp, and the unquantized ceiling."""
    by_label = {p["label"]: p for p in result["verdict"]["points"]}
    header = ("setting", "M", "K", "codebooks", "params", "stages", "bits/img", "bpp", "PSNR dB", "SSIM",
              "code use", "vs curve dB", "outcome")
    table = [header]
    repeats = [{**r, "label": f"{r['label']} (seed {r['finetune_seed']})"} for r in result.get("repeats", [])]
    for r in [result["upstream"]] + result["rows"] + repeats:
        p = by_label.get(r["label"]) if r["method"] == "stscq" else None
        c = p["curve"] if p else None
        vs = f"{c['delta_db']:+.2f}+/-{c['se_db']:.2f}" if c else ""
        util = r["utilization_mean"]
        table.append((r["label"], str(r["num_groups"]), str(r["codebook_size"]),
                      "per token" if r["token_specific"] else "shared", str(r["codebook_params"]),
                      ",".join(map(str, r["stages"])) or "-", str(r["bits_per_image"]), format_number(r["bpp"], ".4f"),
                      format_number(r["psnr"], ".2f"), format_number(r["ssim"], ".4f"),
                      format_number(None if util is None else 100 * util, ".1f") + "%", vs, p["outcome"] if p else ""))
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i in (0, 3, 12) else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths)))
             .rstrip() for t in table]
    lines.insert(1, "-" * len(lines[0]))
    ceiling = result.get("unquantized")
    if ceiling:
        lines.append(f"ceiling: the upstream encoder -> decoder without quantization: PSNR {ceiling['psnr']:.2f} dB, "
                     f"SSIM {ceiling['ssim']:.4f}")
    return "\n".join(lines)


def format_verdict(verdict: dict) -> str:
    """The verdict's lines (from :func:`compute_verdict`) under a heading, as plain text."""
    return "\n".join(["Verdict (computed from the rows; +/- = paired SE over the test faces):"] +
                     [f"  {line}" for line in verdict["lines"]])


def write_plot(result: dict, path) -> Path | None:
    """Draw bpp (x) against PSNR (y), one line per family, to a PNG at ``path`` (written atomically).

    Returns the path, or None when matplotlib cannot be imported (nothing is written).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    from vqswitch._io import atomic_path

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    families: dict = {}
    for r in result["rows"]:
        if r["psnr"] is not None:
            families.setdefault(r["family"], []).append(r)
    for name, rs in families.items():
        rs = sorted(rs, key=lambda r: r["bpp"])
        style = dict(color="black", linewidth=2, marker="s") if name.startswith("baseline") else dict(marker="o")
        ax.plot([r["bpp"] for r in rs], [r["psnr"] for r in rs], label=name, **style)
    up = result["upstream"]
    if up["psnr"] is not None:
        ax.plot([up["bpp"]], [up["psnr"]], marker="*", markersize=12, linestyle="none", color="grey",
                label=up["label"])
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB), held-out faces")
    ax.set_title("rate-distortion: global codebook vs STSCQ")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def main(argv=None) -> int:
    """Command line (see the module docstring) -> exit code: 0 done, 2 bad arguments."""
    from vqswitch.cli._common import int_list_arg, parse_args, seed_arg

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds); numbers are not meaningful")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed, int >= 0 (default: %(default)s)")
    p.add_argument("--json-out", default=None, help="JSON path (default: benchmarks/results/rate_distortion.json, "
                   "or rate_distortion_quick.json with --quick)")
    p.add_argument("--plot", default=None, help="PNG path (default: beside the JSON, .png); needs matplotlib")
    p.add_argument("--no-plot", action="store_true", help="do not draw the plot")
    ints = int_list_arg(empty=True)
    p.add_argument("--baseline-k", type=ints, default=None, help="K of the baselines, e.g. 16,32,64,128")
    p.add_argument("--stscq-m", type=ints, default=None, help="M of token-specific STSCQ, e.g. 1,4,16")
    p.add_argument("--stscq-k", type=ints, default=None, help="K of STSCQ, e.g. 16,32,64")
    p.add_argument("--shared-m", type=ints, default=None,
                   help="M of switchable-only rows (token-shared codebooks), e.g. 4 (default: none)")
    p.add_argument("--baseline-stage1", choices=BASELINE_STAGE1, default=None,
                   help="stage-1 steps of rows without stage 2: matched = stage1+stage2 (default), same = stage1")
    p.add_argument("--upstream-steps", type=int, default=None,
                   help="training steps of the upstream tokenizer (default: 2000; the demo uses 300)")
    p.add_argument("--seed-repeats", type=int, default=None,
                   help="re-runs of the middle baseline with other fine-tuning seeds (default: 2; 0 = none)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    args = parse_args(p, argv)
    if isinstance(args, int):  # argparse printed usage and the error (or the help)
        return args
    config = QUICK if args.quick else FULL
    overrides = {k: getattr(args, k) for k in ("baseline_k", "stscq_m", "stscq_k", "shared_m", "baseline_stage1",
                                             "seed_repeats")
                 if getattr(args, k) is not None}
    try:
        if args.upstream_steps is not None:
            if args.upstream_steps < 1:
                raise ValueError(f"--upstream-steps must be >= 1, got {args.upstream_steps}")
            overrides["tokenizer"] = replace(config.tokenizer, baseline_steps=args.upstream_steps)
        config = replace(config, **overrides).check()
    except (TypeError, ValueError) as err:
        print(f"bench_rate_distortion: error: {err}", file=sys.stderr)
        return 2
    json_out = Path(args.json_out) if args.json_out else RESULTS_DIR / (
        "rate_distortion_quick.json" if args.quick else "rate_distortion.json")
    plot_out = Path(args.plot) if args.plot else json_out.with_suffix(".png")

    result = run_benchmark(config, quick=args.quick, seed=args.seed, progress=args.progress)
    result["command"] = "python benchmarks/bench_rate_distortion.py" + (" " + " ".join(argv if argv is not None
                                                                                        else sys.argv[1:])).rstrip()
    from vqswitch._io import atomic_write_json

    atomic_write_json(json_out, result)
    m = result["machine"]
    print(format_table(result))
    print()
    print(format_verdict(result["verdict"]))
    print()
    print(f"({result['data']}; seed {result['seed']}; {result['wall_seconds']} s on {m['cpus']} CPUs, "
          f"{m['torch_threads']} torch threads, torch {m['torch']}; JSON: {json_out})")
    if not args.no_plot:
        written = write_plot(result, plot_out)
        print(f"plot: {written}" if written else "plot skipped: matplotlib is not installed (pip install matplotlib)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
