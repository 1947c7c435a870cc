"""``vqswitch compress`` (image files -> one .vqs container) and ``vqswitch decompress`` (a container -> PNGs)."""
from __future__ import annotations

import json
import os

from vqswitch._checks import one_line
from vqswitch.cli._common import (CLIError, CLIFailure, add_device_argument, check_output_dir, check_output_file,
                                  device, load_codec)

__all__ = ["add_parser", "run_compress", "run_decompress"]


def add_parser(subparsers) -> None:
    c = subparsers.add_parser("compress", help="compress images into one .vqs file (entropy-coded or fixed-length "
                              "codes)")
    c.add_argument("images", nargs="+", metavar="IMAGES", help="image files at the model's image size")
    c.add_argument("--model", required=True, metavar="DIR_OR_REPO", help="a fine-tuned swapped model")
    c.add_argument("-o", "--output", required=True, metavar="OUT.vqs", help="the file to write (atomically)")
    c.add_argument("--overwrite", action="store_true", help="replace OUT.vqs if it exists")
    c.add_argument("--mode", choices=("auto", "entropy", "fixed"), default="auto",
                   help="payload coding: entropy-coded, fixed-length, or auto (default): the smaller of the two")
    c.add_argument("--revision", help="Hub branch, tag or commit of --model")
    add_device_argument(c, "the encoder")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=run_compress)

    x = subparsers.add_parser("decompress", help="decode a .vqs file into PNGs")
    x.add_argument("file", metavar="FILE.vqs", help="the container to decode")
    x.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the PNGs")
    x.add_argument("--model", metavar="DIR_OR_REPO", help="the model it was compressed with")
    x.add_argument("--trust-file-model", action="store_true", help="without --model, load the model the file "
                   "names (only for files you trust: the file decides what gets loaded)")
    x.add_argument("--revision", help="Hub branch, tag or commit of --model")
    x.add_argument("--overwrite", action="store_true", help="replace existing PNGs of the same names")
    add_device_argument(x, "the decoder")
    x.add_argument("--no-progress", action="store_true", help="no progress bar")
    x.add_argument("--json", action="store_true", help="print the written paths as JSON")
    x.set_defaults(func=run_decompress)


def run_compress(args) -> int:
    """Compress image files into one container; print both modes' bits per image and bpp."""
    from vqswitch.codec import compress_files

    for p in args.images:
        if os.path.isdir(p):
            raise CLIError(f"{p} is a folder, not an image file (give its files, e.g. {os.path.join(p, '*.png')})")
    missing = [p for p in args.images if not os.path.isfile(p)]
    if missing:
        raise CLIError(f"no such image file: {missing[0]}"
                       + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    check_output_file(args.output, "-o", overwrite=args.overwrite)
    cm = load_codec(args.model, args.revision, device(args))
    try:
        report = compress_files(args.images, cm, args.output, mode=args.mode, progress=not args.no_progress)
    except (TypeError, ValueError) as e:  # an image of the wrong size or mode: the input given
        raise CLIError(one_line(e)) from None
    except OSError as e:
        raise CLIFailure(one_line(e)) from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    r = report
    print(f"wrote {r.path}: {r.count} image(s) of {r.height}x{r.width}, {r.total_bytes} bytes, mode {r.mode}")
    print(f"{'mode':<8} {'bits/image':>11} {'bpp':>8}")
    print(f"{'fixed':<8} {r.fixed_bits_per_image:>11} {r.fixed_bpp:>8.4f}")
    change = f"{100 * r.saving:.1f}% fewer" if r.saving >= 0 else f"{-100 * r.saving:.1f}% more"
    print(f"{'entropy':<8} {r.entropy_bits_per_image:>11.1f} {r.entropy_bpp:>8.4f}   "
          f"({change} bits than fixed; ideal {r.information_bits_per_image:.1f})")
    print(f"container: {r.container_bpp:.4f} bpp with header, names and checksum")
    return 0


def run_decompress(args) -> int:
    """Decode a container into PNGs. Without --model it loads the model the file names only when
    --trust-file-model is given: a .vqs file is untrusted input, and its header names what would be loaded."""
    from vqswitch.codec import decompress_file, read_header

    if not os.path.isfile(args.file):
        raise CLIError(f"no such file: {args.file}" if not os.path.exists(args.file) else f"{args.file} is not a file")
    check_output_dir(args.output, "-o")
    dev = device(args)
    try:
        with open(args.file, "rb") as f:
            header = read_header(f.read())
    except (ValueError, OSError) as e:
        raise CLIFailure(one_line(e)) from None
    if args.model is None and not args.trust_file_model:
        named = f"{header.source!r}" + (f" at revision {header.revision}" if header.revision else "") \
            if header.source else "no model"
        raise CLIError(f"{args.file} names {named} (identity {header.identity_hex[:12]}) as its model; pass --model "
                       "DIR_OR_REPO, or --trust-file-model to load the model the file names (only for files you "
                       "trust: it decides what gets loaded)")
    if args.model is not None:
        model = load_codec(args.model, args.revision, dev)
    elif header.source is not None:  # --trust-file-model: the recorded model, on --device
        model = load_codec(header.source, args.revision if args.revision is not None else header.revision, dev)
    else:
        model = None  # decompress_file says the file names no model
    try:
        files = decompress_file(args.file, args.output, model=model, progress=not args.no_progress,
                                overwrite=args.overwrite)
    except FileExistsError as e:
        raise CLIError(one_line(e).replace("pass overwrite=True", "pass --overwrite")) from None
    except (TypeError, ValueError, OSError) as e:
        raise CLIFailure(one_line(e)) from None
    if args.json:
        print(json.dumps([str(f) for f in files], indent=2))
    else:
        print(f"wrote {len(files)} image(s) to {args.output}")
    return 0
