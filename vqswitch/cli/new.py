"""``vqswitch new``: save a fresh, randomly initialised (seeded) quantizer; re-running the same command is a no-op,
and a different checkpoint already in DIR is never overwritten without ``--force``."""
from __future__ import annotations

import os

from vqswitch import formats
from vqswitch._checks import one_line
from vqswitch.cli._common import CLIError, CLIFailure, load_quantizer

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    n = subparsers.add_parser("new", help="save a fresh, randomly initialised quantizer")
    n.add_argument("dir", metavar="DIR", help="the folder to write (config.json, model.safetensors)")
    n.add_argument("--tokens", type=int, required=True, help="T, tokens per image")
    n.add_argument("--codebook-size", type=int, required=True, help="K, codes per codebook")
    n.add_argument("--dim", type=int, required=True, help="D, token dimension")
    n.add_argument("--groups", type=int, default=1, help="M, codebook groups (default 1)")
    n.add_argument("--shared", action="store_true", help="one codebook per group shared by all tokens")
    n.add_argument("--metric", choices=("l2", "cosine", "dot"), default="l2",
                   help="code search: squared L2 distance (default), cosine similarity or dot product")
    n.add_argument("--seed", type=int, default=0, help="torch.manual_seed for the random codebooks")
    n.add_argument("--force", action="store_true", help="overwrite a different checkpoint already in DIR")
    n.set_defaults(func=run)


def run(args) -> int:
    """Save a fresh, randomly initialised quantizer (seeded) to DIR."""
    import torch

    from vqswitch.quantizer import SwitchableTokenQuantizer

    try:
        with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's RNG
            torch.manual_seed(args.seed)
            q = SwitchableTokenQuantizer(num_tokens=args.tokens, codebook_size=args.codebook_size, dim=args.dim,
                                         num_groups=args.groups, token_specific=not args.shared, metric=args.metric)
    except (TypeError, ValueError) as e:
        raise CLIError(one_line(e)) from None
    except (RuntimeError, MemoryError) as e:  # the allocator refused
        raise CLIFailure(f"cannot allocate the quantizer (T={args.tokens}, K={args.codebook_size}, D={args.dim}, "
                         f"M={args.groups}): {one_line(e)}") from None
    kept = False
    if os.path.exists(os.path.join(args.dir, formats.CONFIG_FILE)) and not args.force:
        # Re-running the same command is a no-op; anything else would destroy a different checkpoint.
        try:
            old = load_quantizer(args.dir, None, None)
            same = old.get_config() == q.get_config() and all(
                torch.equal(a, b) for a, b in zip(old.state_dict().values(), q.state_dict().values()))
        except CLIError:
            same = False
        if not same:
            raise CLIError(f"{args.dir} already holds a different checkpoint; pass --force to overwrite it")
        kept = True
    else:
        try:
            q.save_pretrained(args.dir)
        except OSError as e:
            raise CLIFailure(f"cannot save to {args.dir}: {one_line(e)}") from None
    kind = "token-shared" if args.shared else "token-specific"
    desc = (f"SwitchableTokenQuantizer (T={q.num_tokens}, K={q.codebook_size}, D={q.dim}, M={q.num_groups}, "
            f"{kind}, metric {q.metric}, seed {args.seed})")
    print(f"{args.dir} already holds this {desc}; left unchanged" if kept else f"saved a new {desc} to {args.dir}")
    print(f"bits per image: {q.bits_per_image}, bpp at 256x256: {q.bpp(256, 256):.4f}")
    print(f"next: vqswitch info {args.dir}")
    return 0
