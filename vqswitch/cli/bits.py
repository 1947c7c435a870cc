"""``vqswitch bits``: bits per image and bpp, the paper's table by default (every number from :mod:`vqswitch.bits`,
the one place the formula lives)."""
from __future__ import annotations

import json

from vqswitch._checks import one_line
from vqswitch.cli._common import CLIError, add_size_arguments

__all__ = ["PAPER_CONFIGS", "add_parser", "run"]

# (tokenizer, T, ((K, M), ...)) of the paper's bit-budget table; the numbers are computed, never typed.
PAPER_CONFIGS = (
    ("TiTok-S", 128, ((4096, 1), (1024, 16), (256, 256))),
    ("TiTok-L", 32, ((4096, 1), (256, 256))),
    ("MaskGIT-VQGAN", 256, ((4096, 1), (1024, 16))),
    ("IBQ", 256, ((8192, 1),)),
)


def add_parser(subparsers) -> None:
    b = subparsers.add_parser("bits", help="bits per image and bpp (the paper's table by default)")
    b.add_argument("--tokens", type=int, help="T, tokens per image")
    b.add_argument("--codebook-size", type=int, help="K, codes per codebook")
    b.add_argument("--groups", type=int, default=1, help="M, codebook groups (default 1)")
    add_size_arguments(b)
    b.set_defaults(func=run)


def _row(name: str | None, t: int, k: int, m: int, h: int, w: int) -> dict:
    from vqswitch import bits

    try:
        b = bits.bits_per_image(t, k, m)
        return {"tokenizer": name, "num_tokens": t, "codebook_size": k, "num_groups": m,
                "bits_per_image": b, "height": h, "width": w, "bpp": bits.bpp(b, h, w)}
    except (TypeError, ValueError) as e:
        raise CLIError(one_line(e)) from None


def run(args) -> int:
    """The paper's table, or one (T, K, M) configuration when --tokens/--codebook-size are given."""
    h, w = args.height, args.width
    if args.tokens is None and args.codebook_size is None:
        rows = [_row(name, t, k, m, h, w) for name, t, kms in PAPER_CONFIGS for k, m in kms]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'tokenizer':<14} {'T':>4} {'K':>5} {'M':>4} {'bits/image':>10} {f'bpp@{h}x{w}':>12}")
        for r in rows:
            print(f"{r['tokenizer']:<14} {r['num_tokens']:>4} {r['codebook_size']:>5} {r['num_groups']:>4} "
                  f"{r['bits_per_image']:>10} {r['bpp']:>12.4f}")
        return 0
    if args.tokens is None or args.codebook_size is None:
        raise CLIError("give both --tokens and --codebook-size (or neither, for the paper's table)")
    r = _row(None, args.tokens, args.codebook_size, args.groups, h, w)
    del r["tokenizer"]
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"T={r['num_tokens']} K={r['codebook_size']} M={r['num_groups']}: "
              f"bits per image {r['bits_per_image']}, bpp at {h}x{w} {r['bpp']:.4f}")
    return 0
