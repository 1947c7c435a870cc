"""``vqswitch demo``: the main job, :func:`vqswitch.experiments.demo.run_demo` from the command line (train a small
tokenizer on procedural faces or a face folder, swap in STSCQ, run the three stages, print a before/after table)."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from vqswitch import formats
from vqswitch._checks import one_line
from vqswitch.cli._common import CLIError, seed_arg

__all__ = ["add_parser", "check_data_folder", "run"]


def add_parser(subparsers) -> None:
    d = subparsers.add_parser("demo", help="the main job: train a small tokenizer on procedural faces, swap in "
                              "STSCQ, run the three stages, print a before/after table (CPU, minutes)")
    d.add_argument("--out", default="vqswitch-demo", help="output folder (default: %(default)s)")
    d.add_argument("--quick", action="store_true", help="a tiny run of a few seconds (smoke test)")
    d.add_argument("--seed", type=seed_arg, default=0, help="random seed, int >= 0 (default: %(default)s)")
    d.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    d.add_argument("--model", metavar="SPEC", help="start from a pretrained tokenizer instead of training the "
                   "demo's own: a checkpoint load_pretrained reads (file, folder or Hub id), or module:function / "
                   "path/file.py:function that builds your own described model (e.g. "
                   "examples/vqvae_cifar.py:build); its own codebook is the baseline")
    d.add_argument("--data", metavar="DIR", help="your own faces instead of procedural ones: a folder with one "
                   "sub-folder per identity (e.g. ../shared/data/celeba-faces-64); train and test are split "
                   "by identity, images resized to the tokenizer's size")
    d.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout (the table goes to "
                   "stderr)")
    d.add_argument("--overwrite", action="store_true", help="let --quick replace a full demo's results in --out")
    d.set_defaults(func=run)


def check_data_folder(data) -> Path | None:
    """``--data``: None, or an existing folder (returned as a Path); ValueError naming it otherwise (checked before
    any training starts)."""
    if data is None:
        return None
    path = Path(data)
    if not path.is_dir():
        raise ValueError(f"--data {str(data)!r} is {'not a folder' if path.exists() else 'not found'}: give a "
                         "folder with one sub-folder of face images per identity")
    return path


def _holds_full_demo(out: Path) -> bool:
    """Whether ``out/metrics.json`` is a full (not --quick) demo's."""
    from vqswitch._io import read_json_object

    try:
        config = read_json_object(out / formats.DEMO_METRICS_FILE, "demo metrics").get("config", {})
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("quick") is False


def run(args) -> int:
    """Run :func:`vqswitch.experiments.demo.run_demo` (it prints the before/after table; to stderr with --json,
    whose stdout holds only the metrics)."""
    from vqswitch.experiments.demo import run_demo

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} exists and is not a folder")
    if args.quick and not args.overwrite and _holds_full_demo(out):
        raise CLIError(f"--out {str(out)!r} holds a full demo's results, which --quick would replace; choose another "
                       f"--out (e.g. {str(out) + '-quick'!r}) or pass --overwrite")
    try:
        data = check_data_folder(args.data)
        # --json: stdout carries only the JSON (the demo's table goes to stderr)
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            metrics = run_demo(out, quick=args.quick, seed=args.seed, progress=args.progress, data=data,
                               model=args.model)
    except (ValueError, TypeError) as e:  # an unusable --data folder or --model spec
        raise CLIError(one_line(e)) from None
    if args.json:
        print(json.dumps(metrics, indent=2))
    return 0
