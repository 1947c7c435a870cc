"""``vqswitch push``: publish a fine-tuned swapped model (weights, configs, entropy model and a model card) on the
Hugging Face Hub, or only prepare the folder that would be uploaded (``--dry-run OUT_DIR``).

    vqswitch push RUN_DIR --repo-id ORG/NAME [--revision BRANCH] [--private] [--token T] [--message M]
                  [--create-pr] [--dry-run OUT_DIR] [--json]

``RUN_DIR`` is a ``vqswitch finetune`` run, a ``vqswitch demo`` output or a swapped-model folder; what is published
and how is :mod:`vqswitch.publish`'s (:func:`~vqswitch.publish.prepare_upload`, :func:`~vqswitch.publish.push`).
Errors print one ``vqswitch push: error: ...`` line and exit 2.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from vqswitch import formats
from vqswitch._checks import one_line

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("push", help="publish a fine-tuned model (weights, entropy model, model card) to the "
                              "Hub; see `vqswitch push --help`",
                              description="Publish a fine-tuned swapped model (weights, configs, entropy model and a "
                              "model card) on the Hugging Face Hub.")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a vqswitch finetune run, a vqswitch demo output or a swapped-model folder")
    p.add_argument("--repo-id", metavar="ORG/NAME", help="the Hub model repository (required unless --dry-run)")
    p.add_argument("--revision", metavar="BRANCH", help="commit to this branch (created if missing)")
    p.add_argument("--private", action="store_true", default=None, help="create the repository private")
    p.add_argument("--token", help="Hugging Face token (default: the logged-in one or HF_TOKEN)")
    p.add_argument("--message", metavar="M", help="commit message")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--dry-run", metavar="OUT_DIR", help="only write the folder that would be uploaded")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Prepare (``--dry-run``) or push ``RUN_DIR``: 0 on success; 2 after one ``vqswitch push: error: ...`` line."""
    from vqswitch import publish

    try:
        if args.dry_run is not None:
            out = Path(publish.prepare_upload(args.run_dir, args.dry_run, repo_id=args.repo_id))
            files = sorted(p.name for p in out.iterdir())
            result = {"run_dir": args.run_dir, "prepared": str(out), "files": files}
            text = f"prepared {out} ({', '.join(files)}); model card: {out / formats.CARD_FILE}"
        else:
            if args.repo_id is None:
                raise ValueError("--repo-id ORG/NAME is required (or --dry-run OUT_DIR to only prepare the folder)")
            url = publish.push(args.run_dir, args.repo_id, revision=args.revision, private=args.private,
                               token=args.token, commit_message=args.message, create_pr=args.create_pr)
            result = {"run_dir": args.run_dir, "repo_id": args.repo_id, "url": str(url)}
            text = f"pushed {args.run_dir} to {args.repo_id}: {url}"
    except (TypeError, ValueError, OSError) as err:
        print(f"vqswitch push: error: {one_line(err, limit=400)}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else text)
    return 0
