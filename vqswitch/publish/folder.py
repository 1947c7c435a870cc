"""The publish-format folder of a run: which layouts a run folder may have, and :func:`prepare_upload`, which
assembles, checks and installs the folder that :func:`vqswitch.publish.push` uploads."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from vqswitch._checks import check_path, check_repo_id
from vqswitch._io import atomic_replace_directory, read_json_object
from vqswitch.formats import (CARD_FILE, CONFIG_FILE, DEMO_CHECKPOINT_DIR, DEMO_METRICS_FILE, DEMO_RUN_DIR,
                              ENTROPY_FILE, EVALUATION_FILE, FINAL_DIR, RUN_INFO_FILE, SWAPPED_FORMAT, TRAIN_LOG_FILE,
                              WEIGHTS_FILE)

from .card import build_model_card
from .shareable import shareable_evaluation, shareable_run_info

__all__ = ["prepare_upload", "PUBLISH_FILES", "OPTIONAL_FILES"]

PUBLISH_FILES = (CONFIG_FILE, WEIGHTS_FILE, ENTROPY_FILE, CARD_FILE, RUN_INFO_FILE, EVALUATION_FILE, TRAIN_LOG_FILE)
OPTIONAL_FILES = (ENTROPY_FILE, RUN_INFO_FILE, EVALUATION_FILE, TRAIN_LOG_FILE)
_EXPECTED = ("a vqswitch finetune run folder (with final/), a vqswitch demo output folder (with checkpoint/) "
             "or a swapped-model folder (config.json with \"format\": \"vqswitch-swapped\", from save_swapped)")


def _locate(run_dir) -> tuple[str, Path, dict[str, Path]]:
    """(kind, model folder, {published name: source file}) of a run folder; kind is "finetune", "demo" or "model".

    Raises TypeError for a non-path; ValueError naming the path for anything that is not one of the three layouts.
    """
    root = check_path("run_dir", run_dir)
    if not root.is_dir():
        raise ValueError(f"run_dir {str(root)!r} is not a folder: expected {_EXPECTED}")
    if (root / CONFIG_FILE).is_file():
        kind, model_dir = "model", root
        extras = {RUN_INFO_FILE: root / RUN_INFO_FILE, EVALUATION_FILE: root / EVALUATION_FILE,
                  TRAIN_LOG_FILE: root / TRAIN_LOG_FILE}
    elif (root / FINAL_DIR).is_dir():
        kind, model_dir = "finetune", root / FINAL_DIR
        extras = {RUN_INFO_FILE: root / RUN_INFO_FILE, EVALUATION_FILE: root / EVALUATION_FILE,
                  TRAIN_LOG_FILE: root / TRAIN_LOG_FILE}
    elif (root / DEMO_CHECKPOINT_DIR).is_dir():
        kind, model_dir = "demo", root / DEMO_CHECKPOINT_DIR
        extras = {RUN_INFO_FILE: root / RUN_INFO_FILE, EVALUATION_FILE: root / DEMO_METRICS_FILE,
                  TRAIN_LOG_FILE: root / DEMO_RUN_DIR / TRAIN_LOG_FILE}
    else:
        raise ValueError(f"run_dir {str(root)!r} has neither {CONFIG_FILE}, {FINAL_DIR}/ nor {DEMO_CHECKPOINT_DIR}/: "
                         f"expected {_EXPECTED}")
    if not (model_dir / CONFIG_FILE).is_file():
        raise ValueError(f"{str(model_dir)!r} has no {CONFIG_FILE}: expected a swapped-model folder written by "
                         "vqswitch.adapters.save_swapped")
    config = read_json_object(model_dir / CONFIG_FILE, "config")
    if config.get("format") != SWAPPED_FORMAT:
        raise ValueError(f"{str(model_dir / CONFIG_FILE)!r} is not a vqswitch swapped-model config (format "
                         f"{config.get('format')!r}, expected {SWAPPED_FORMAT!r}): expected {_EXPECTED}")
    return kind, model_dir, {name: path for name, path in extras.items() if path.is_file()}


def _is_prepared_folder(folder: Path) -> bool:
    """Whether ``folder`` looks like a previous :func:`prepare_upload` output (then it may be replaced)."""
    names = {p.name for p in folder.iterdir()}
    if not names:
        return True
    if not names <= set(PUBLISH_FILES) or CARD_FILE not in names or CONFIG_FILE not in names or \
            any(not (folder / n).is_file() for n in names):
        return False
    try:
        return read_json_object(folder / CONFIG_FILE, "config").get("format") == SWAPPED_FORMAT
    except ValueError:
        return False


def prepare_upload(run_dir, out_dir, *, repo_id: str | None = None) -> Path:
    """Assemble the publish-format folder of a run in ``out_dir`` (see :mod:`vqswitch.publish`); returns ``out_dir``.

    The files are copied into a temporary folder beside ``out_dir``, the model card is built from those copies
    (loading the model validates them), and the folder replaces ``out_dir`` only when complete
    (:func:`vqswitch._io.atomic_replace_directory`): a failure leaves ``out_dir`` as it was.

    Args:
        run_dir: a finetune run folder, a demo output folder or a swapped-model folder.
        out_dir: a new or empty folder, or one a previous prepare_upload wrote (it is replaced).
        repo_id: the Hub id ``"org/name"`` named in the model card (None: a placeholder).
    Raises:
        TypeError: run_dir/out_dir not paths, repo_id not a str.
        ValueError: run_dir is none of the three layouts (the message names it and what was expected); a model
            folder that does not load or whose entropy model or evaluation belongs to another model; out_dir
            is the source, contains it, or holds other files.
        OSError: files that cannot be read or written.
    """
    kind, model_dir, extras = _locate(run_dir)
    if repo_id is not None:
        check_repo_id("repo_id", repo_id)
    out = check_path("out_dir", out_dir)
    resolved = out.resolve()
    for source in {Path(run_dir).resolve(), model_dir.resolve()}:
        if source == resolved or resolved in source.parents:
            raise ValueError(f"out_dir {str(out)!r} is or contains the {kind} folder being published; "
                             "give another folder")
    if out.exists() and (not out.is_dir() or not _is_prepared_folder(out)):
        raise ValueError(f"out_dir {str(out)!r} already exists and is not an empty folder or a folder prepared "
                         "by vqswitch push; give a new folder")
    with atomic_replace_directory(out) as tmp:
        for name in (CONFIG_FILE, WEIGHTS_FILE, ENTROPY_FILE):
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, tmp / name)
        for name, path in extras.items():
            shutil.copyfile(path, tmp / name)
        for name, what, shareable in ((RUN_INFO_FILE, "run info", shareable_run_info),
                                      (EVALUATION_FILE, "evaluation", shareable_evaluation)):
            if name in extras:  # published without local paths (byte for byte when they hold none)
                value = read_json_object(tmp / name, what)
                shared = shareable(value)
                if shared != value:
                    (tmp / name).write_text(json.dumps(shared, indent=2) + "\n", encoding="utf-8")
        card = build_model_card(tmp, repo_id=repo_id)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
    return out
