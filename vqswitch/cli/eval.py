"""``vqswitch eval``: reconstruct a folder of images through a swapped model's codes; bpp (fixed-length and
entropy-coded), PSNR, SSIM and the codebook use of those images, printed and optionally saved (``--out``) and
plotted (``--plots``)."""
from __future__ import annotations

import json
import os

from vqswitch._checks import one_line
from vqswitch.cli._common import (CLIError, CLIFailure, add_device_argument, check_output_dir, check_output_file,
                                  device, image_folder, load_codec, positive)

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    e = subparsers.add_parser("eval", help="bpp, PSNR, SSIM and codebook use of a swapped model on a folder of "
                              "images")
    e.add_argument("--model", required=True, metavar="DIR_OR_REPO", help="a swapped model (save_swapped / finetune)")
    e.add_argument("--data", required=True, metavar="DIR", help="a folder of images (others than the model's size "
                   "are resized and centre-cropped, with a warning)")
    e.add_argument("--revision", help="Hub branch, tag or commit")
    e.add_argument("--limit", type=int, help="evaluate at most this many images (>= 1)")
    e.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")
    e.add_argument("--out", metavar="FILE.json", help="write the metrics here (atomically)")
    e.add_argument("--plots", metavar="DIR", help="write utilisation and group-histogram PNGs (needs matplotlib: "
                   "pip install 'vqswitch[plots]')")
    add_device_argument(e, "the model")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=run)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError("--plots needs matplotlib: pip install 'vqswitch[plots]' (or leave --plots out)") from None


def run(args) -> int:
    """Reconstruct a folder of images through a swapped model's codes; print and save bpp, PSNR, SSIM and the
    codebook use of those images."""
    import torch
    from tqdm.auto import tqdm

    from vqswitch import eval as evaluation
    from vqswitch.adapters import adapter_for, decode_codes, encode_codes, swapped_quantizer
    from vqswitch.codebooks import add_code_counts, utilization
    from vqswitch.codes import Codes

    positive(args.limit, "--limit")
    positive(args.batch_size, "--batch-size")
    if args.out:
        check_output_file(args.out, "--out")
    if args.plots:
        check_output_dir(args.plots, "--plots")
        _require_matplotlib()
    dev = device(args)
    codec = load_codec(args.model, args.revision, dev)  # the swapped model and its entropy model
    model = codec.model
    images, folder = image_folder(model, args.data, args.limit, warn_resized=True)
    try:
        lo, hi = adapter_for(model).pixel_range
        originals, recons, codes = [], [], []
        with tqdm(total=len(images), desc="evaluating", unit="img", disable=args.no_progress) as bar, \
                torch.no_grad():
            for start in range(0, len(images), args.batch_size):
                x = images[start:start + args.batch_size] if isinstance(images, torch.Tensor) else \
                    torch.stack([images[i] for i in range(start, min(start + args.batch_size, len(images)))])
                c = encode_codes(model, x.to(dev))
                recons.append(decode_codes(model, c).clamp(lo, hi).float().cpu())
                originals.append(x)
                codes.append(c.to("cpu"))
                bar.update(x.shape[0])
        q = swapped_quantizer(model)
        every = Codes.cat(codes)
        usage = torch.zeros(q.usage.shape, dtype=torch.long)  # the evaluated images' codes, not training counts
        group_counts = torch.zeros(q.num_groups, dtype=torch.long)
        add_code_counts(usage, group_counts, every.groups, every.indices)
        util = utilization(usage, group_counts)
        result = evaluation.evaluate(torch.cat(originals), torch.cat(recons), data_range=hi - lo,
                                     bits_per_image=q.bits_per_image, util=util)
        entropy_bits = 8 * len(codec.entropy.encode(every.groups, every.indices)) / every.batch_size
    except (TypeError, ValueError) as e:
        raise CLIFailure(one_line(e)) from None
    result["entropy_bits_per_image"] = entropy_bits  # what `vqswitch compress` stores (one container)
    result["entropy_bpp"] = entropy_bits / (result["height"] * result["width"])
    result["images"] = int(every.batch_size)
    result["skipped_images"] = [str(p) for p, _ in folder.skipped]
    if args.out:  # written before the plots: a plotting failure never loses the evaluation
        from vqswitch._io import atomic_write_bytes

        try:
            atomic_write_bytes(args.out, json.dumps(result, indent=2).encode())
        except OSError as e:
            raise CLIFailure(f"cannot write --out {args.out!r}: {one_line(e)}") from None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        rows = [("images", result["images"]), ("bits/image", q.bits_per_image), ("bpp", f"{result['bpp']:.5f}"),
                ("entropy bits", f"{result['entropy_bits_per_image']:.1f}"),
                ("entropy bpp", f"{result['entropy_bpp']:.5f}"),
                ("PSNR (dB)", "exact" if result["psnr"] is None else f"{result['psnr']:.3f}"),
                ("SSIM", f"{result['ssim']:.4f}"),
                ("codebook use", f"{100 * util.mean:.1f}%" if util.mean == util.mean else "n/a")]
        for name, value in rows:
            print(f"{name:<12} {value:>12}")
        print(f"(codebook use: mean fraction of each (group, token) codebook's {q.codebook_size} codes used by these "
              f"images; groups {util.group_counts.tolist()})")
    if args.plots:
        try:
            evaluation.plot_utilization(usage, os.path.join(args.plots, "utilization.png"))
            evaluation.plot_group_histogram(group_counts, os.path.join(args.plots, "groups.png"))
        except (ImportError, OSError, ValueError) as e:
            raise CLIFailure(f"cannot write the plots to {args.plots!r}: {one_line(e)}") from None
    return 0
