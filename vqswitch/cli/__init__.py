"""The ``vqswitch`` console script (``main(argv) -> exit code``).

    vqswitch bits                                   the paper's bits/bpp table for standard tokenizers
    vqswitch bits --tokens T --codebook-size K [--groups M] [--height H --width W]
    vqswitch info DIR_OR_REPO [--revision REV] [--height H --width W]
    vqswitch new DIR --tokens T --codebook-size K --dim D [--groups M] [--shared] [--metric l2] [--seed S]
    vqswitch finetune --adapter {diffusers,maskgit,titok,ibq} --model REPO_OR_DIR --data DIR --groups M
                      --codebook-size K --out RUN_DIR [--stages 1,2,3] [--steps N] [--resume] ...
    vqswitch eval --model SWAPPED_DIR_OR_REPO --data DIR [--out FILE.json] [--plots DIR] [--limit N]
    vqswitch demo [--out DIR] [--quick] [--seed S] [--no-progress] [--data FACES_DIR]
                                                    the main job: train, swap, fine-tune, compare (CPU, minutes)
    vqswitch compress IMAGES... --model DIR_OR_REPO -o OUT.vqs [--mode auto|entropy|fixed] [--revision REV]
    vqswitch decompress FILE.vqs -o DIR (--model DIR_OR_REPO | --trust-file-model) [--revision REV] [--overwrite]
    vqswitch push RUN_DIR --repo-id ORG/NAME [--revision BRANCH] [--private] [--dry-run OUT_DIR] ...

One module per command (:mod:`~vqswitch.cli.bits`, :mod:`~vqswitch.cli.info`, :mod:`~vqswitch.cli.new`,
:mod:`~vqswitch.cli.finetune`, :mod:`~vqswitch.cli.eval`, :mod:`~vqswitch.cli.demo`, :mod:`~vqswitch.cli.compress`
(compress and decompress), :mod:`~vqswitch.cli.push`), each with ``add_parser(subparsers)``, which registers its
subcommand(s) with ``set_defaults(func=run)``, and ``run(args) -> exit code``; :mod:`vqswitch.cli._common` holds
what several share. Every command takes ``--json``. Errors print one ``vqswitch: error: ...`` line to stderr and
return 2 for usage errors, 1 for runtime failures (argparse exits 2 for malformed arguments; ``push`` prints
``vqswitch push: error: ...`` and returns 2). All bit counts come from :mod:`vqswitch.bits`, the one place the
formula lives.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from vqswitch.cli import bits, compress, demo, finetune, info, new, push
from vqswitch.cli import eval as eval_command
from vqswitch.cli._common import CLIError, show_warning
from vqswitch.cli.bits import PAPER_CONFIGS

__all__ = ["main", "build_parser", "PAPER_CONFIGS"]

COMMANDS = (bits, info, new, finetune, eval_command, demo, compress, push)  # in --help's order


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``vqswitch`` command, built from each command module's ``add_parser``."""
    from vqswitch import __version__

    p = argparse.ArgumentParser(prog="vqswitch", description="Switchable token-specific codebook quantization tools.")
    p.add_argument("--version", action="version", version=f"vqswitch {__version__}")
    sub = p.add_subparsers(dest="command", required=True,
                           metavar="{bits,info,new,finetune,eval,demo,compress,decompress,push}")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the ``vqswitch`` command line; returns the exit code (argparse exits 2 on bad syntax): 0 ok, 2 usage
    errors, 1 runtime failures, 130 an interrupted finetune."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    with warnings.catch_warnings():  # restores the caller's warning display afterwards
        warnings.showwarning = show_warning  # one line each, never a source line
        try:
            return args.func(args)
        except CLIError as e:
            print(f"vqswitch: error: {e}", file=sys.stderr)
            return e.exit_code
