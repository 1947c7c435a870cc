"""The codec on the demo's held-out procedural faces: entropy-coded against fixed-length, at identical reconstructions.

    python benchmarks/bench_codec.py [--checkpoint DIR] [--quick] [--seed 0] [--demo-out DIR] [--json-out PATH]
        [--no-refit] [--no-progress]

Protocol:

1. The model: ``--checkpoint DIR``, a swapped-model folder (e.g. ``vqswitch-demo/checkpoint`` from ``vqswitch demo``),
   or else a fresh :func:`vqswitch.experiments.demo.run_demo` (the full configuration; ``--quick`` for a smoke run
   whose numbers mean nothing) written to ``--demo-out`` (default: a temporary folder). It is loaded with
   :func:`vqswitch.codec.load_codec_model`, so its saved entropy model is the one measured.
2. The test faces: the demo's held-out split, ``ProceduralFaces(num_train + num_test, image_size, seed)`` images
   ``num_train ..``. The split comes from the ``metrics.json`` next to the checkpoint (what the demo wrote); without
   one, from the demo configuration (``--quick``/full) and ``--seed``.
3. Compress them in both modes, as one container for all faces and as one container per face (the header, names
   and the entropy coder's flush cost more per image there). Decode every container and check that the codes equal
   ``encode_codes`` of the faces and that the reconstructions of both modes are bit-identical -- the saving is at
   identical reconstructions; the benchmark fails otherwise. Containers are made without a recorded model source
   (a source adds its length in bytes to every container), so their sizes do not depend on where the checkpoint is.
4. With the refit row (default; ``--no-refit`` skips it), an entropy model fitted on the codes of the demo's
   TRAINING faces (``EntropyModel.fit``) is measured too: how much the usage counts recorded during fine-tuning
   leave on the table. It is a different codec model (another identity), listed separately -- unless it equals the
   saved one (the fine-tuner recounts usage on the training set at its end), which the JSON records.

Prints a table (mode, packing, bytes, payload bits/image and bpp, container bpp, the saving over fixed-length in
payload bits and in container bytes) and writes
JSON atomically (``--json-out``; default ``benchmarks/results/codec.json``, or ``codec_quick.json`` with ``--quick``).
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from vqswitch import formats

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def demo_split(checkpoint: Path, quick: bool, seed: int) -> dict:
    """num_train, num_test, image_size and seed of the demo run that made ``checkpoint``."""
    from dataclasses import asdict

    from vqswitch._io import read_json_object
    from vqswitch.experiments.faces import FULL, QUICK

    metrics = checkpoint.parent / formats.DEMO_METRICS_FILE
    if metrics.is_file():
        cfg = read_json_object(metrics, "demo metrics")["config"]
        origin = str(metrics)
    else:
        cfg = {**asdict(QUICK if quick else FULL), "seed": seed}
        origin = f"the {'quick' if quick else 'full'} demo configuration (no metrics.json beside the checkpoint)"
    return {"num_train": int(cfg["num_train"]), "num_test": int(cfg["num_test"]), "image_size": int(cfg["image_size"]),
            "seed": int(cfg["seed"]), "from": origin}


def faces(split: dict, which: str) -> torch.Tensor:
    """The demo's training or held-out test faces, (N, 3, H, W) float in [0, 1]."""
    from vqswitch.experiments.faces import split_faces

    train, test = split_faces(split["num_train"], split["num_test"], split["image_size"], split["seed"])
    return train if which == "train" else test


def measure(cm, test: torch.Tensor, label: str) -> tuple[list[dict], dict]:
    """Rows for one codec model (both modes, both packings) and the checks; raises AssertionError on a mismatch."""
    from vqswitch import codec
    from vqswitch.adapters import encode_codes

    n, (h, w) = test.shape[0], cm.image_size
    want = encode_codes(cm.model, test)
    rows, decoded = [], {}
    for mode in codec.MODES:
        start = time.perf_counter()
        data = codec.compress(cm, test, mode=mode)
        seconds = time.perf_counter() - start
        out = codec.decompress(data, cm)
        assert out.codes == want, f"{label} {mode}: decoded codes differ from the encoder's"
        decoded[mode] = out.images
        singles = [codec.compress_codes(cm, want[i], mode=mode) for i in range(n)]
        for i, blob in enumerate(singles):
            assert codec.decompress_codes(blob, cm)[1] == want[i], f"{label} {mode}: image {i} decodes differently"
        for packing, total, payload_bits in (
                ("one container", len(data), codec.read_header(data).payload_bits),
                ("one per image", sum(map(len, singles)), sum(codec.read_header(b).payload_bits for b in singles))):
            rows.append({"model": label, "mode": mode, "packing": packing, "images": n, "bytes": total,
                         "bits_per_image": payload_bits / n, "bpp": payload_bits / (n * h * w),
                         "container_bits_per_image": 8 * total / n, "container_bpp": 8 * total / (n * h * w),
                         "compress_seconds": round(seconds, 3) if packing == "one container" else None})
    identical = torch.equal(decoded["fixed"], decoded["entropy"])
    assert identical, f"{label}: the two modes reconstruct differently"
    for row in rows:  # saving of each row over the fixed-length row with the same packing
        fixed = next(r for r in rows if r["mode"] == "fixed" and r["packing"] == row["packing"])
        row["saving_payload_pct"] = 100 * (1 - row["bits_per_image"] / fixed["bits_per_image"])
        row["saving_container_pct"] = 100 * (1 - row["bytes"] / fixed["bytes"])
    info = cm.entropy.information_bits(want.groups, want.indices)
    checks = {"codes_identical": True, "reconstructions_identical": identical,
              "information_bits_per_image": float(info.mean()), "fixed_bits_per_image": cm.bits_per_image,
              "identity": cm.identity.hex(), "groups_used": sorted(set(want.groups.tolist()))}
    return rows, checks


def format_table(rows: list[dict]) -> str:
    header = ("model", "mode", "packing", "bytes", "bits/image", "bpp", "container bpp", "saving %",
              "container saving %")
    lines = [header] + [(r["model"], r["mode"], r["packing"], str(r["bytes"]), f"{r['bits_per_image']:.1f}",
                         f"{r['bpp']:.4f}", f"{r['container_bpp']:.4f}", f"{r['saving_payload_pct']:.1f}",
                         f"{r['saving_container_pct']:.1f}") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
           for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def run(args) -> dict:
    """Make or take the checkpoint, measure it, print the table and write the JSON; returns the JSON's dict."""
    if args.checkpoint:
        return measure_checkpoint(Path(args.checkpoint), args, str(args.checkpoint))
    from vqswitch.experiments.demo import run_demo

    if args.demo_out:
        run_demo(args.demo_out, quick=args.quick, seed=args.seed, progress=args.progress)
        checkpoint = Path(args.demo_out) / formats.DEMO_CHECKPOINT_DIR
        return measure_checkpoint(checkpoint, args, str(checkpoint))
    with tempfile.TemporaryDirectory(prefix="bench-codec-") as tmp:
        run_demo(tmp, quick=args.quick, seed=args.seed, progress=args.progress)
        return measure_checkpoint(Path(tmp) / formats.DEMO_CHECKPOINT_DIR, args, "(a temporary demo run)")


def measure_checkpoint(checkpoint: Path, args, checkpoint_label: str) -> dict:
    from vqswitch import codec
    from vqswitch.adapters import encode_latents, swapped_quantizer
    from vqswitch._io import atomic_write_json
    from vqswitch.entropy import EntropyModel

    split = demo_split(checkpoint, args.quick, args.seed)
    loaded = codec.load_codec_model(checkpoint)
    cm = codec.CodecModel(loaded.model, loaded.entropy)  # no recorded source: sizes do not depend on the path
    test = faces(split, "test")
    print(f"\n{test.shape[0]} held-out {split['image_size']}x{split['image_size']} faces (split from {split['from']}); "
          f"model {cm!r}")
    rows, checks = measure(cm, test, "saved")
    results = {"saved": checks}
    refit_equals_saved = None
    if args.refit:
        with torch.no_grad():
            latents = encode_latents(cm.model, faces(split, "train"))
        refit = EntropyModel.fit(swapped_quantizer(cm.model), latents, smoothing=cm.entropy.smoothing)
        refit_equals_saved = refit == cm.entropy
        if refit_equals_saved:
            print("the saved entropy model equals one refit on the training faces' codes (no separate rows)")
        else:
            label = "refit on train codes"
            more, results[label] = measure(codec.CodecModel(cm.model, refit), test, label)
            rows += [r for r in more if r["mode"] == "entropy"]
    print(format_table(rows))
    for label, c in results.items():
        print(f"{label}: ideal {c['information_bits_per_image']:.1f} bits/image (entropy model), fixed "
              f"{c['fixed_bits_per_image']}; codes and reconstructions identical in both modes: "
              f"{c['codes_identical'] and c['reconstructions_identical']}")
    report = {
        "benchmark": "codec", "quick": args.quick, "checkpoint": checkpoint_label, "split": split,
        "model": {"T": cm.num_tokens, "K": cm.codebook_size, "M": cm.num_groups, "image_size": list(cm.image_size),
                  "entropy_smoothing": cm.entropy.smoothing},
        "rows": rows, "checks": results, "refit_equals_saved": refit_equals_saved,
        "machine": {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
                    "threads": torch.get_num_threads()},
    }
    default = RESULTS_DIR / ("codec_quick.json" if args.quick else "codec.json")
    json_out = Path(args.json_out) if args.json_out else default
    atomic_write_json(json_out, report)
    print(f"wrote {json_out}")
    return report


def main(argv=None) -> int:
    """Command line (see the module docstring) -> 0 (argparse exits 2 on bad arguments)."""
    from vqswitch.cli._common import seed_arg

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a swapped-model folder (default: run the demo to make one)")
    p.add_argument("--quick", action="store_true", help="tiny demo run / quick split (a smoke test)")
    p.add_argument("--seed", type=seed_arg, default=0, help="demo seed, int >= 0 (default: %(default)s)")
    p.add_argument("--demo-out", help="where the demo run goes (default: a temporary folder)")
    p.add_argument("--json-out", help="JSON output (default: results/codec.json, codec_quick.json with --quick)")
    p.add_argument("--no-refit", dest="refit", action="store_false", help="skip the entropy model refit on train codes")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
