"""What of a run may be published: copies of ``run.json`` and of an evaluation with every local path replaced (a
local base model, data folder, loss backbone or skipped image's folder is never published; a Hub id and revision
are)."""
from __future__ import annotations

import os

__all__ = ["shareable_run_info", "shareable_evaluation", "LOCAL_BASE", "is_hub_id"]


def is_hub_id(text) -> bool:
    """Whether a run.json ``base_model`` (or a backbone, a data source) names a Hub repository rather than a local
    path (:func:`vqswitch.adapters.saving.shareable_source`)."""
    from vqswitch.adapters.saving import shareable_source

    return isinstance(text, str) and shareable_source(text)[0] == text


LOCAL_BASE = "a local checkpoint, not on the Hub"


def shareable_run_info(info: dict) -> dict:
    """What of a run's ``run.json`` may be published: a copy with every local path replaced.

    * ``base_model`` / ``base_revision``: a Hub id and revision are kept; a Hub cache snapshot folder becomes its repo
      id and commit; any other local path becomes None, with ``base_description`` :data:`LOCAL_BASE` when the run
      gave none (:func:`vqswitch.adapters.saving.shareable_source`);
    * ``data.path``: only the folder's name;
    * ``losses.perceptual`` / ``losses.identity`` (feature backbones): a Hub id is kept, a local path becomes None.
    Every other field is kept as it is. Local means an existing path (relative to the current folder), an absolute
    path, or one starting with ``.`` or ``~``: a relative path recorded elsewhere that does not exist here and
    reads like ``org/name`` cannot be told from a Hub id. Raises TypeError for a non-dict.
    """
    from vqswitch.adapters.saving import shareable_source

    if not isinstance(info, dict):
        raise TypeError(f"run info must be a dict, got {type(info).__name__}")
    out = dict(info)
    base = info.get("base_model")
    if isinstance(base, str) and base:
        rev = info.get("base_revision") if isinstance(info.get("base_revision"), str) else None
        repo, rev = shareable_source(base, rev)
        out["base_model"], out["base_revision"] = repo, rev if repo else None
        description = info.get("base_description")
        if repo is None and not (isinstance(description, str) and description.strip()):
            out["base_description"] = LOCAL_BASE
    elif base is not None:
        out["base_model"] = None
    data = info.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        out["data"] = {**data, "path": _file_name(data["path"])}
    losses = info.get("losses")
    if isinstance(losses, dict):
        out["losses"] = {k: (v if not isinstance(v, str) or is_hub_id(v) else None) for k, v in losses.items()}
    return out


def _file_name(text: str) -> str | None:
    """The last component of a path written on any system ('/' or '\\'), or None when there is none."""
    name = os.path.basename(os.path.normpath(text.replace("\\", "/")))
    return name if name not in ("", ".", "..", "~") else None


def shareable_evaluation(evaluation: dict) -> dict:
    """What of an evaluation (``vqswitch eval``'s ``eval.json``, the demo's ``metrics.json``) may be published: a
    copy whose ``skipped_images`` and ``config.data`` keep only file and folder names, not their local paths.
    Raises TypeError for a non-dict."""
    if not isinstance(evaluation, dict):
        raise TypeError(f"evaluation must be a dict, got {type(evaluation).__name__}")
    out = dict(evaluation)
    skipped = evaluation.get("skipped_images")
    if isinstance(skipped, list):
        out["skipped_images"] = [_file_name(p) if isinstance(p, str) else p for p in skipped]
    config = evaluation.get("config")
    if isinstance(config, dict) and isinstance(config.get("data"), str) and not is_hub_id(config["data"]):
        out["config"] = {**config, "data": _file_name(config["data"])}
    return out
