"""Publishing a fine-tuned swapped model on the Hugging Face Hub: ``vqswitch push``.

    vqswitch push RUN_DIR --repo-id ORG/NAME [--revision BRANCH] [--private] [--token T] [--message M]
                  [--create-pr] [--dry-run OUT_DIR]

``RUN_DIR`` is one of:

* a ``vqswitch finetune`` run: ``final/`` (the swapped model), ``run.json``, ``metrics.jsonl`` and, when
  ``vqswitch eval --out RUN_DIR/eval.json`` was run, ``eval.json``;
* a ``vqswitch demo`` output: ``checkpoint/`` (the swapped model), ``metrics.json`` (its evaluation, with the
  baseline), ``run.json`` and ``run/metrics.jsonl``;
* a swapped-model folder (:func:`vqswitch.adapters.save_swapped`), which may hold the optional files below
  under their published names (so a folder prepared with ``--dry-run`` can be pushed as it is).

The published folder (:func:`prepare_upload`) holds exactly these files:

* ``config.json``, ``model.safetensors``: the swapped model, byte for byte as ``save_swapped`` wrote them;
* ``entropy_model.safetensors``: the entropy model (:mod:`vqswitch.entropy`), when the model folder has one;
* ``README.md``: the model card (:func:`build_model_card`), every number computed from the files: every row of
  the evaluation (for a demo: the baseline, the fair reference "baseline + stage 3" and STSCQ, with the
  difference to the fair reference spelled out) and the stage-3 losses the run's config gave a weight;
* ``run.json`` (what the run started from), ``eval.json`` (``vqswitch eval``'s output, or the demo's
  ``metrics.json``) and ``metrics.jsonl`` (the training log), when the run has them, byte for byte, except that
  ``run.json`` and ``eval.json`` lose their local paths (:func:`shareable_run_info`, :func:`shareable_evaluation`:
  a local base model, data folder, loss backbone or skipped image's folder is never published; a Hub id and
  revision are).

Nothing is uploaded unless the whole folder was assembled and the model in it loads
(:func:`vqswitch.adapters.load_swapped`) and agrees with its entropy model and evaluation. The upload is
one ``HfApi.create_commit`` with an explicit operation per file (files are uploaded first, then committed
in one commit), so a failed push leaves the repository's files as they were. ``load_swapped("ORG/NAME", revision=...)`` loads the
model back.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from vqswitch.cli import parse_args

__all__ = ["build_model_card", "prepare_upload", "push", "add_arguments", "cmd_push", "main", "shareable_run_info",
           "shareable_evaluation",
           "PUBLISH_FILES", "TAGS", "LOCAL_BASE"]

CONFIG, WEIGHTS, ENTROPY, CARD = "config.json", "model.safetensors", "entropy_model.safetensors", "README.md"
RUN_INFO, EVALUATION, TRAIN_LOG = "run.json", "eval.json", "metrics.jsonl"
PUBLISH_FILES = (CONFIG, WEIGHTS, ENTROPY, CARD, RUN_INFO, EVALUATION, TRAIN_LOG)
OPTIONAL_FILES = (ENTROPY, RUN_INFO, EVALUATION, TRAIN_LOG)
TAGS = ("vqswitch", "image-tokenizer", "vector-quantization", "image-compression")
RUN_FORMAT, SWAPPED_FORMAT = "vqswitch-run", "vqswitch-swapped"
_EXPECTED = ("a vqswitch finetune run folder (with final/), a vqswitch demo output folder (with checkpoint/) "
             "or a swapped-model folder (config.json with \"format\": \"vqswitch-swapped\", from save_swapped)")
_STAGE_WHAT = {1: "M token-shared group codebooks + router, on the frozen encoder's tokens",
               2: "token-specific codebooks (each token's started from its group's) + router",
               3: "decoder only, on images ({losses})"}
_STAGE3_LOSSES = (("l2", "L2"), ("perceptual", "perceptual"), ("identity", "identity"))
# (metrics key, card label) of the demo's table rows, in its order; other rows are shown under their key
_ROW_LABELS = (("baseline", "baseline VQ (before the swap)"),
               ("baseline_decoder_tuned", "baseline + stage 3 (same codes, decoder fine-tuned as in stage 3)"),
               ("stscq", "STSCQ (this model)"))
_FAIR_REFERENCE = "baseline_decoder_tuned"


# ------------------------------------------------------------------------------------------------ small checks
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def _check_repo_id(repo_id) -> str:
    """``repo_id`` must be a Hub model id ``"org/name"``: ASCII letters, digits, ``-``, ``_``, ``.`` (``-`` and ``.``
    neither first nor last, no ``--`` or ``..``), a name of at most 96 characters. Raises TypeError/ValueError."""
    if not isinstance(repo_id, str):
        raise TypeError(f"repo_id must be a str 'org/name', got {type(repo_id).__name__}")
    from vqswitch.adapters.saving import is_repo_id

    if not is_repo_id(repo_id):
        raise ValueError(f"repo_id must be a Hub repository id 'org/name' (letters, digits, '-', '_', '.'; "
                         f"no '--' or '..'; a name of at most 96 characters), got {repo_id!r}")
    return repo_id


def _check_optional_str(name: str, value) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise (TypeError if not isinstance(value, str) else ValueError)(
            f"{name} must be None or a non-empty str, got {value!r}")


def _is_hub_id(text) -> bool:
    """Whether a run.json ``base_model`` names a Hub repository (rather than a local path)."""
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
        if repo is None and not _text(info.get("base_description")):
            out["base_description"] = LOCAL_BASE
    elif base is not None:
        out["base_model"] = None
    data = info.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        out["data"] = {**data, "path": _file_name(data["path"])}
    losses = info.get("losses")
    if isinstance(losses, dict):
        out["losses"] = {k: (v if not isinstance(v, str) or _is_hub_id(v) else None) for k, v in losses.items()}
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
    if isinstance(config, dict) and isinstance(config.get("data"), str) and not _is_hub_id(config["data"]):
        out["config"] = {**config, "data": _file_name(config["data"])}
    return out


def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} {str(path)!r} must hold a JSON object, got {type(value).__name__}")
    return value


def _read_log(path: Path) -> list[dict]:
    """The records of a training log (JSON lines); lines that are not JSON objects (a run killed mid-write) are
    skipped."""
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def _num(value) -> float | None:
    """A finite real number as a float, else None (JSON fields are optional and may be null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value) -> str | None:
    """A user-written string on one line with table separators escaped, or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    return " ".join(value.split()).replace("|", "\\|")


def _fmt(value, spec: str, default: str = "n/a") -> str:
    v = _num(value)
    return default if v is None else format(v, spec)


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------------------------------------ the run folder
def _locate(run_dir) -> tuple[str, Path, dict[str, Path]]:
    """(kind, model folder, {published name: source file}) of a run folder; kind is "finetune", "demo" or "model".

    Raises TypeError for a non-path; ValueError naming the path for anything that is not one of the three layouts.
    """
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"run_dir must be a str or a path, got {type(run_dir).__name__}")
    root = Path(run_dir)
    if not root.is_dir():
        raise ValueError(f"run_dir {str(root)!r} is not a folder: expected {_EXPECTED}")
    if (root / CONFIG).is_file():
        kind, model_dir = "model", root
        extras = {RUN_INFO: root / RUN_INFO, EVALUATION: root / EVALUATION, TRAIN_LOG: root / TRAIN_LOG}
    elif (root / "final").is_dir():
        kind, model_dir = "finetune", root / "final"
        extras = {RUN_INFO: root / RUN_INFO, EVALUATION: root / EVALUATION, TRAIN_LOG: root / TRAIN_LOG}
    elif (root / "checkpoint").is_dir():
        kind, model_dir = "demo", root / "checkpoint"
        extras = {RUN_INFO: root / RUN_INFO, EVALUATION: root / "metrics.json", TRAIN_LOG: root / "run" / TRAIN_LOG}
    else:
        raise ValueError(f"run_dir {str(root)!r} has neither config.json, final/ nor checkpoint/: expected {_EXPECTED}")
    if not (model_dir / CONFIG).is_file():
        raise ValueError(f"{str(model_dir)!r} has no config.json: expected a swapped-model folder written by "
                         "vqswitch.adapters.save_swapped")
    config = _read_json(model_dir / CONFIG, "config")
    if config.get("format") != SWAPPED_FORMAT:
        raise ValueError(f"{str(model_dir / CONFIG)!r} is not a vqswitch swapped-model config (format "
                         f"{config.get('format')!r}, expected {SWAPPED_FORMAT!r}): expected {_EXPECTED}")
    return kind, model_dir, {name: path for name, path in extras.items() if path.is_file()}


def _model_facts(model, config: dict) -> dict:
    """The numbers the card states about the model itself, computed from the loaded model."""
    from vqswitch.adapters import adapter_for, swapped_quantizer
    from vqswitch.bits import bits_per_image, bpp, index_bits

    adapter = adapter_for(model)
    q = swapped_quantizer(model)
    H, W = adapter.image_size(model)
    M, K, T = q.num_groups, q.codebook_size, q.num_tokens
    bits = bits_per_image(T, K, M)
    return {"family": config.get("adapter", adapter.name), "class": type(model).__name__, "M": M, "K": K, "T": T,
            "D": q.dim, "token_specific": bool(q.token_specific), "metric": q.metric, "height": H, "width": W,
            "channels": adapter.image_channels(model), "pixel_range": tuple(adapter.pixel_range), "bits": bits,
            "index_bits": index_bits(K), "group_bits": index_bits(M), "bpp": bpp(bits, H, W)}


def _check_entropy_model(path: Path, facts: dict):
    """Load ``entropy_model.safetensors`` and check that it models this quantizer's (M, T, K); returns it."""
    from vqswitch.entropy import EntropyModel

    em = EntropyModel.load(path)
    got, want = (em.num_groups, em.num_tokens, em.codebook_size), (facts["M"], facts["T"], facts["K"])
    if got != want:
        raise ValueError(f"{str(path)!r} models (M, T, K) = {got}, but the model's quantizer has {want}: "
                         "it belongs to another model; build it again for this one")
    return em


def _is_row(value) -> bool:
    """Whether an evaluation entry is one model's metrics (a dict with bits per image or PSNR)."""
    return isinstance(value, dict) and ("bits_per_image" in value or "psnr" in value)


def _evaluation_rows(evaluation: dict) -> list[tuple[str, dict, bool]]:
    """(label, metrics, is this model) rows of an evaluation: ``vqswitch eval``'s dict (one row) or the demo's
    ``metrics.json`` (every model row it holds: the baseline, the baseline with stage 3, STSCQ, in the demo's order,
    then any other row under its key), so the card never leaves a reference out."""
    if isinstance(evaluation.get("stscq"), dict):  # vqswitch demo's metrics.json
        known = dict(_ROW_LABELS)
        rows = [(label, evaluation[key], key == "stscq") for key, label in _ROW_LABELS if _is_row(evaluation.get(key))
                or key == "stscq"]
        rows += [(_text(key) or "?", value, False) for key, value in evaluation.items()
                 if key not in known and _is_row(value)]
        return rows
    return [("STSCQ (this model)", evaluation, True)]


def _fair_comparison(evaluation: dict) -> list[str]:
    """One sentence comparing this model with the demo's fair reference (baseline + stage 3), from the numbers."""
    ours, fair = evaluation.get("stscq"), evaluation.get(_FAIR_REFERENCE)
    if not (_is_row(ours) and _is_row(fair)):
        return []
    b_ours, b_fair = _int(ours.get("bits_per_image")), _int(fair.get("bits_per_image"))
    bits = "the same number of bits per image"
    if b_ours is not None and b_fair and b_ours != b_fair:
        saved = b_fair - b_ours
        bits = f"{abs(saved)} {'fewer' if saved > 0 else 'more'} bits per image ({100 * abs(saved) / b_fair:.1f}%)"
    elif b_ours is None or not b_fair:
        bits = "an unrecorded number of bits per image"
    deltas = []
    for key, name, spec, unit in (("psnr", "PSNR", "+.2f", " dB"), ("ssim", "SSIM", "+.4f", ""),
                                  ("ids", "IDS", "+.4f", "")):
        a, b = _num(ours.get(key)), _num(fair.get(key))
        if a is not None and b is not None:
            deltas.append(f"{name} {format(a - b, spec)}{unit}")
    at = (", at " + (", ".join(deltas[:-1]) + " and " if len(deltas) > 1 else "") + deltas[-1]) if deltas else ""
    return [f"The fair comparison is with {dict(_ROW_LABELS)[_FAIR_REFERENCE]!r}: the same base tokenizer and codes, "
            "with the decoder fine-tuned exactly as this model's was in stage 3. Against it, this model uses "
            f"{bits}{at}.", ""]


def _check_evaluation(evaluation: dict, facts: dict) -> None:
    """ValueError when the evaluation's recorded bits or (M, K, T) are not this model's."""
    for _, row, ours in _evaluation_rows(evaluation):
        if not ours:
            continue
        recorded = {"bits_per_image": facts["bits"], "num_groups": facts["M"], "codebook_size": facts["K"],
                    "num_tokens": facts["T"]}
        wrong = {k: row[k] for k, v in recorded.items() if _int(row.get(k)) is not None and row[k] != v}
        if wrong:
            raise ValueError(f"the evaluation was measured with {wrong}, but the model has "
                             f"{ {k: recorded[k] for k in wrong} }: it belongs to another model; evaluate this one "
                             "again (vqswitch eval --out RUN_DIR/eval.json)")


# ------------------------------------------------------------------------------------------------ the model card
def _card_header(facts: dict, run_info: dict, repo_id: str | None, entropy) -> list[str]:
    base, rev = run_info.get("base_model"), _text(run_info.get("base_revision"))
    if _is_hub_id(base):
        base_line = f"[`{base}`](https://huggingface.co/{base})" + (f" at revision `{rev}`" if rev else "")
    elif _text(run_info.get("base_description")):
        base_line = _text(run_info["base_description"])
    else:
        base_line = "not recorded (no run.json with base_model next to the model)"
    M, K, T, H, W = facts["M"], facts["K"], facts["T"], facts["height"], facts["width"]
    kind = ("token-specific: one codebook per (group, token position)" if facts["token_specific"]
            else "token-shared: one codebook per group, used by every token")
    title = repo_id or "vqswitch swapped tokenizer"
    lines = [
        f"# {title}",
        "",
        f"A `{facts['family']}` image tokenizer whose vector quantizer was replaced by a Switchable Token-Specific "
        "Codebook Quantizer (STSCQ, with the `vqswitch` library) and fine-tuned. Each image picks "
        f"one of M = {M} codebook groups; each of its T = {T} tokens is then coded with a K = {K}-code codebook "
        "of that group. The encoder is the base tokenizer's, unchanged.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| base tokenizer family | `{facts['family']}` ({facts['class']}) |",
        f"| base weights | {base_line} |",
        f"| codebook groups M | {M} |",
        f"| codes per codebook K | {K} |",
        f"| tokens per image T | {T} |",
        f"| codebooks | {kind} |",
        f"| token dimension D | {facts['D']} |",
        f"| distance metric | {facts['metric']} |",
        f"| image size | {H}x{W} |",
        f"| bits per image | T*ceil(log2 K) + ceil(log2 M) = {T}*{facts['index_bits']} + {facts['group_bits']} = "
        f"{facts['bits']} |",
        f"| bits per pixel | {facts['bits']} / ({H}*{W}) = {facts['bpp']:.4f} |",
    ]
    if entropy is not None:
        images = int(entropy.group_counts.sum())
        lines.append(f"| entropy model | `{ENTROPY}`: code counts of {images} images, smoothing "
                     f"{entropy.smoothing:g}; `vqswitch compress` entropy-codes with it, so compressed sizes vary "
                     "per image |")
    else:
        lines.append("| entropy model | none (codes are stored at the fixed-length rate above) |")
    return lines


def _card_evaluation(evaluation: dict | None, facts: dict) -> list[str]:
    lines = ["", "## Evaluation", ""]
    if not evaluation:
        return lines + ["Not evaluated: the run has no evaluation (`vqswitch eval --model RUN_DIR/final --data "
                        "DIR --out RUN_DIR/eval.json` writes one). Measure bpp, PSNR and SSIM on your own images "
                        "before relying on this model."]
    rows = _evaluation_rows(evaluation)
    with_ids = any(_num(r.get("ids")) is not None for _, r, _ in rows)
    header = ["model", "M", "K", "T", "bits/image", "bpp", "PSNR (dB)", "SSIM"] + (["IDS"] if with_ids else []) + \
             ["codebook use", "images"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, r, ours in rows:
        use = _num(r.get("utilization_mean"))
        if use is None:
            use = _num(_dict(_dict(r.get("utilization")).get("overall")).get("mean"))
        mkt = [facts["M"], facts["K"], facts["T"]] if ours else \
            [_int(r.get("num_groups")), _int(r.get("codebook_size")), _int(r.get("num_tokens"))]
        psnr = _fmt(r.get("psnr"), ".2f", "inf on some images" if _int(r.get("psnr_exact_images")) else "n/a")
        size = f" at {r['height']}x{r['width']}" if _int(r.get("height")) and _int(r.get("width")) else ""
        cells = [label] + ["n/a" if v is None else str(v) for v in mkt] + [
            str(_int(r.get("bits_per_image")) if _int(r.get("bits_per_image")) is not None else "n/a"),
            _fmt(r.get("bpp"), ".4f"), psnr, _fmt(r.get("ssim"), ".4f")]
        cells += [_fmt(r.get("ids"), ".4f")] if with_ids else []
        cells += ["n/a" if use is None else f"{100 * use:.1f}%",
                  (str(r["images"]) if _int(r.get("images")) is not None else "n/a") + size]
        table.append("| " + " | ".join(cells) + " |")
    lines += table + [""]
    lines += _fair_comparison(evaluation)
    config = _dict(evaluation.get("config"))
    if _text(config.get("test_images")):
        lines.append(f"Test images: {_text(config.get('data')) or 'the run'}, {_text(config['test_images'])} "
                     "(not used for training).")
    skipped = evaluation.get("skipped_images")
    if isinstance(skipped, list) and skipped:
        lines.append(f"{len(skipped)} unreadable image(s) were skipped.")
    lines.append("bpp is the fixed-length rate; PSNR and SSIM compare clamped reconstructions with the originals; "
                 "IDS (when shown) is the cosine similarity of face embeddings of original and reconstruction; "
                 "codebook use is the mean fraction of each codebook's codes used.")
    return lines


def _stage3_losses(stage3: dict) -> str:
    """The stage-3 losses a run's config gave a weight above 0 ("L2 + perceptual losses"), or "losses not recorded"
    when it records no weight."""
    weights = [(label, _num(stage3.get(f"{name}_weight"))) for name, label in _STAGE3_LOSSES]
    if all(w is None for _, w in weights):
        return "losses not recorded"
    used = [label for label, w in weights if w]
    return " + ".join(used) + (" loss" if len(used) == 1 else " losses") if used else "no loss with a weight above 0"


def _card_training(run_info: dict, log: list[dict]) -> list[str]:
    lines = ["", "## Training", ""]
    data = _dict(run_info.get("data"))
    parts = [p for p in (_text(data.get("description")),
                         f"{data['num_images']} images" if _int(data.get("num_images")) is not None else None) if p]
    lines.append("Data: " + ("; ".join(parts) if parts else "not recorded") + ".")
    finetune = _dict(run_info.get("finetune"))
    stages = finetune.get("stages")
    last = {}
    for rec in log:
        if _int(rec.get("stage")) is not None:
            last[rec["stage"]] = rec
    if not isinstance(stages, list) or not all(_int(s) in _STAGE_WHAT for s in stages):
        stages = sorted(s for s in last if s in _STAGE_WHAT)
    if not stages:
        return lines + ["", "Stages: not recorded (no run.json with the fine-tuning configuration, no training log)."]
    lines += ["", f"Fine-tuning stages {', '.join(map(str, stages))} of the three, with the encoder frozen (AdamW):",
              "",
              "| stage | trains | steps | lr | batch size | last logged loss |", "|---|---|---|---|---|---|"]
    for s in stages:
        cfg, rec = _dict(finetune.get(f"stage{s}")), last.get(s, {})
        what = _STAGE_WHAT[s].format(losses=_stage3_losses(cfg))
        steps = _int(cfg.get("steps"))
        steps = steps if steps is not None else _int(rec.get("step"))
        loss = _fmt(rec.get("loss"), ".4g", "not logged")
        lines.append(f"| {s} | {what} | {'n/a' if steps is None else steps} | {_fmt(cfg.get('lr'), 'g')} | "
                     f"{_int(cfg.get('batch_size')) or 'n/a'} | {loss} |")
    stage3, losses = _dict(finetune.get("stage3")), _dict(run_info.get("losses"))
    if 3 in stages and stage3:
        weights = ", ".join(f"{name} {_fmt(stage3.get(f'{name}_weight'), 'g')}" for name in
                            ("l2", "perceptual", "identity"))
        backbones = ", ".join(f"{name}: `{_text(losses[name])}`" for name in ("perceptual", "identity")
                              if _text(losses.get(name)))
        lines += ["", f"Stage 3 loss weights: {weights}" + (f" (backbones {backbones})" if backbones else "") + "."]
    if _int(finetune.get("seed")) is not None:
        lines += ["", f"Seed: {finetune['seed']}."]
    return lines


def _card_usage(facts: dict, repo_id: str | None) -> list[str]:
    repo = repo_id or "ORG/NAME"
    lo, hi = facts["pixel_range"]
    C, H, W = facts["channels"], facts["height"], facts["width"]
    return [
        "", "## How to use", "",
        "```python",
        "from vqswitch.adapters import decode_codes, encode_codes, load_swapped",
        "",
        f'model = load_swapped("{repo}")  # revision="..." pins a branch, tag or commit',
        f"codes = encode_codes(model, images)  # images: (B, {C}, {H}, {W}) float in [{lo:g}, {hi:g}]",
        "data = codes.to_bytes()  # the fixed-length bitstream",
        f"reconstructions = decode_codes(model, codes)  # (B, {C}, {H}, {W})",
        "```",
        "", "From the command line:", "",
        "```bash",
        f"vqswitch compress IMAGES --model {repo} -o out.vqs",
        f"vqswitch decompress out.vqs -o DIR --model {repo}",
        "```",
    ]


_RESPONSIBLE_USE = """
## Intended use

Research on learned image compression and on image tokenizers at low bit rates: measuring rate-distortion
trade-offs, comparing quantizers, and storing or transmitting images as compact discrete codes when the
sender and the receiver both have this model. The codes are also usable as tokens for generative models
built on the base tokenizer's decoder.

## Limitations and risks

- **Lossy.** Reconstructions are not the original images. At low bit rates they can change
  identity-relevant facial detail (the shape of the eyes, nose and mouth, skin texture, scars, age cues)
  while still looking plausible. Never treat a reconstruction as evidence of what a person looked like.
- **Face data and demographic bias.** The codebooks and the decoder were fitted to the training data
  described above. Reconstruction quality can differ across skin tones, ages, genders and other groups,
  and between the training population and yours. Evaluate PSNR, SSIM and identity similarity separately on
  each group of your population before deployment.
- **Surveillance and privacy.** Cheap, compact face codes make it easier to collect, store and search
  faces at scale. Compressing or storing face images needs the consent of the people shown and a legal
  basis (for example under the GDPR, where face images used to identify someone are biometric data).
  Compressed faces are still personal data.
- **Not for biometric identification.** Do not use this model, its codes or its reconstructions to
  identify, verify or track people, or as input to such systems.
- **Domain.** It was trained (and, where a table is shown, evaluated) only on the data named above, at
  the image size above; other kinds of images and other sizes may reconstruct worse.

## Usage note

Check the evaluation table against images like yours before use, keep the original images where accuracy
matters, and tell the people whose faces you compress what is stored and why. When you publish results
from this model, report the bits per image, the test data and the evaluation per demographic group.
"""


def build_model_card(model_dir, *, run_info: dict | None = None, evaluation: dict | None = None,
                     repo_id: str | None = None) -> str:
    """The model card (README.md text, YAML front matter first) of a swapped-model folder.

    Args:
        model_dir: a swapped-model folder (``config.json`` + ``model.safetensors``, maybe
            ``entropy_model.safetensors``); it is loaded with :func:`vqswitch.adapters.load_swapped`.
        run_info: the run's ``run.json`` dict (every field optional); None reads ``model_dir/run.json`` when present.
        evaluation: ``vqswitch eval``'s dict or the demo's ``metrics.json`` dict; None reads ``model_dir/eval.json``
            when present. The training log is read from ``model_dir/metrics.jsonl`` when present.
        repo_id: the Hub id ``"org/name"`` used in the title and the loading examples (None: a placeholder).
    Returns: the card's text. Front matter: ``library_name: vqswitch``, the tags :data:`TAGS`, ``license`` when
        run.json has one and ``base_model`` when the base is a Hub repo id.
    Raises:
        TypeError: model_dir is not a path, run_info/evaluation not dicts, repo_id not a str.
        ValueError: a bad repo_id; a folder load_swapped refuses (missing or corrupt files); an entropy model
            or evaluation that belongs to another (M, K, T); a run.json whose format is not "vqswitch-run";
            JSON files that are not JSON objects.
    """
    from huggingface_hub import ModelCardData

    from vqswitch.adapters import load_swapped

    if not isinstance(model_dir, (str, os.PathLike)):
        raise TypeError(f"model_dir must be a str or a path, got {type(model_dir).__name__}")
    if repo_id is not None:
        _check_repo_id(repo_id)
    folder = Path(model_dir)
    for name, value in (("run_info", run_info), ("evaluation", evaluation)):
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict or None, got {type(value).__name__}")
    if run_info is None and (folder / RUN_INFO).is_file():
        run_info = _read_json(folder / RUN_INFO, "run info")
    if evaluation is None and (folder / EVALUATION).is_file():
        evaluation = _read_json(folder / EVALUATION, "evaluation")
    run_info = shareable_run_info(run_info or {})  # the card is published: no local path in it
    if run_info.get("format", RUN_FORMAT) != RUN_FORMAT:
        raise ValueError(f"run_info has format {run_info.get('format')!r}, expected {RUN_FORMAT!r}")
    log = _read_log(folder / TRAIN_LOG) if (folder / TRAIN_LOG).is_file() else []

    try:
        model = load_swapped(folder)
    except Exception as err:  # noqa: BLE001 - corrupt weights raise the safetensors error type: one clear message
        raise ValueError(f"the model folder {str(folder)!r} does not load with vqswitch.adapters.load_swapped "
                         f"({type(err).__name__}: {_one_line(err)}); it is not published") from err
    facts = _model_facts(model, _read_json(folder / CONFIG, "config"))
    entropy = _check_entropy_model(folder / ENTROPY, facts) if (folder / ENTROPY).is_file() else None
    if evaluation:
        _check_evaluation(evaluation, facts)

    base = run_info.get("base_model")
    license_ = run_info.get("license") if _text(run_info.get("license")) else None
    meta = ModelCardData(library_name="vqswitch", tags=list(TAGS), license=license_,
                         base_model=base if _is_hub_id(base) else None)
    lines = ["---", meta.to_yaml(), "---", ""]
    lines += _card_header(facts, run_info, repo_id, entropy)
    lines += _card_evaluation(evaluation, facts)
    lines += _card_training(run_info, log)
    lines += _card_usage(facts, repo_id)
    lines += _RESPONSIBLE_USE.rstrip("\n").split("\n")
    lines += ["", "## License", "",
              f"`{license_}`." if license_ else "Not recorded: the base model's license and the training data's "
              "terms apply.", "",
              "## Files", "",
              f"`{CONFIG}` and `{WEIGHTS}` (the swapped model, `vqswitch.adapters.save_swapped` format)"
              + (f", `{ENTROPY}` (the entropy model)" if entropy is not None else "")
              + (f", `{RUN_INFO}` (what the run started from)" if (folder / RUN_INFO).is_file() else "")
              + (f", `{EVALUATION}` (the evaluation)" if (folder / EVALUATION).is_file() else "")
              + (f", `{TRAIN_LOG}` (the training log)" if (folder / TRAIN_LOG).is_file() else "") + "."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ the folder
def _is_prepared_folder(folder: Path) -> bool:
    """Whether ``folder`` looks like a previous :func:`prepare_upload` output (then it may be replaced)."""
    names = {p.name for p in folder.iterdir()}
    if not names:
        return True
    if not names <= set(PUBLISH_FILES) or CARD not in names or CONFIG not in names or \
            any(not (folder / n).is_file() for n in names):
        return False
    try:
        return _read_json(folder / CONFIG, "config").get("format") == SWAPPED_FORMAT
    except ValueError:
        return False


def _fsync_files(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb+") as f:
            os.fsync(f.fileno())


def _install(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` onto ``out`` (new, empty, or a previous prepared folder)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def prepare_upload(run_dir, out_dir, *, repo_id: str | None = None) -> Path:
    """Assemble the publish-format folder of a run in ``out_dir`` (see the module docstring); returns ``out_dir``.

    The files are copied into a temporary folder beside ``out_dir``, the model card is built from those copies
    (loading the model validates them), and the folder is renamed onto ``out_dir`` only when complete: a
    failure leaves ``out_dir`` as it was.

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
        _check_repo_id(repo_id)
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a str or a path, got {type(out_dir).__name__}")
    out = Path(out_dir)
    resolved = out.resolve()
    for source in {Path(run_dir).resolve(), model_dir.resolve()}:
        if source == resolved or resolved in source.parents:
            raise ValueError(f"out_dir {str(out)!r} is or contains the {kind} folder being published; "
                             "give another folder")
    if out.exists() and (not out.is_dir() or not _is_prepared_folder(out)):
        raise ValueError(f"out_dir {str(out)!r} already exists and is not an empty folder or a folder prepared "
                         "by vqswitch push; give a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for name in (CONFIG, WEIGHTS, ENTROPY):
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, tmp / name)
        for name, path in extras.items():
            shutil.copyfile(path, tmp / name)
        for name, what, shareable in ((RUN_INFO, "run info", shareable_run_info),
                                      (EVALUATION, "evaluation", shareable_evaluation)):
            if name in extras:  # published without local paths (byte for byte when they hold none)
                value = _read_json(tmp / name, what)
                shared = shareable(value)
                if shared != value:
                    (tmp / name).write_text(json.dumps(shared, indent=2) + "\n", encoding="utf-8")
        card = build_model_card(tmp, repo_id=repo_id)
        (tmp / CARD).write_text(card, encoding="utf-8")
        _fsync_files(tmp)
        _install(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------------ the upload
def push(run_dir, repo_id: str, *, revision: str | None = None, private: bool | None = None,
         token: str | None = None, commit_message: str | None = None, create_pr: bool = False) -> str:
    """Publish a run's swapped model on the Hugging Face Hub as one commit; returns the commit (or PR) URL.

    The folder is prepared and validated (:func:`prepare_upload`) before anything touches the network, then
    ``HfApi(token=token).create_repo(repo_id, exist_ok=True, private=private)``, ``create_branch`` when
    ``revision`` names a branch other than main (and no PR is asked for), ``list_repo_files``, and one
    ``create_commit`` that adds every file and deletes the optional files (``eval.json``...) an earlier
    push left in the repository and this run does not have.

    Args:
        run_dir: a finetune run folder, a demo output folder or a swapped-model folder.
        repo_id: the Hub model id ``"org/name"``.
        revision: the branch to commit to (created if missing; default main); with ``create_pr``, the PR's base.
        private: visibility of a repository that does not exist yet (None: the Hub's default).
        token: a Hub token (None: the logged-in one or ``HF_TOKEN``).
        commit_message: default "Upload vqswitch swapped model (M=.., K=.., T=.., N bits per image)".
        create_pr: open a pull request instead of committing to the branch.
    Raises:
        TypeError/ValueError: bad arguments or a run folder prepare_upload refuses; nothing is uploaded then.
        OSError: the Hub could not be reached or refused the request (the huggingface_hub error is the
            ``__cause__``); the repository may have been created, but no files were committed.
    """
    _check_repo_id(repo_id)
    for name, value in (("revision", revision), ("token", token), ("commit_message", commit_message)):
        _check_optional_str(name, value)
    if private is not None and not isinstance(private, bool):
        raise TypeError(f"private must be a bool or None, got {type(private).__name__}")
    if not isinstance(create_pr, bool):
        raise TypeError(f"create_pr must be a bool, got {type(create_pr).__name__}")
    with tempfile.TemporaryDirectory(prefix="vqswitch-push-") as tmp:
        folder = prepare_upload(run_dir, Path(tmp) / "upload", repo_id=repo_id)
        if commit_message is None:
            q = _read_json(folder / CONFIG, "config")["quantizer"]
            from vqswitch.bits import bits_per_image

            bits = bits_per_image(q["num_tokens"], q["codebook_size"], q["num_groups"])
            commit_message = (f"Upload vqswitch swapped model (M={q['num_groups']}, K={q['codebook_size']}, "
                              f"T={q['num_tokens']}, {bits} bits per image)")
        stale = [name for name in OPTIONAL_FILES if not (folder / name).exists()]
        from huggingface_hub import HfApi

        step = "connecting"
        try:
            api = HfApi(token=token)
            step = "creating the repository"
            api.create_repo(repo_id, exist_ok=True, private=private)
            if revision is not None and revision != "main" and not create_pr:
                step = f"creating the branch {revision!r}"
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            step = "listing the repository's files"
            existing = set(api.list_repo_files(repo_id, revision=revision))
            from huggingface_hub import CommitOperationAdd, CommitOperationDelete

            operations = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p))
                          for p in sorted(folder.iterdir()) if p.is_file()]
            operations += [CommitOperationDelete(path_in_repo=name) for name in stale if name in existing]
            step = "committing"
            info = api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message,
                                     revision=revision, create_pr=create_pr)
        except Exception as err:  # noqa: BLE001 - every Hub or network failure becomes one clear OSError
            raise OSError(f"pushing to the Hub repository {repo_id!r} failed while {step}: {type(err).__name__}: "
                          f"{_one_line(err)}; no files were committed") from err
    url = getattr(info, "pr_url", None) if create_pr else None
    return str(url or getattr(info, "commit_url", None) or info)


# ------------------------------------------------------------------------------------------------ command line
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``RUN_DIR --repo-id --revision --private --token --message --create-pr --dry-run`` to ``parser``."""
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a vqswitch finetune run, a vqswitch demo output or a swapped-model folder")
    parser.add_argument("--repo-id", metavar="ORG/NAME", help="the Hub model repository (required unless --dry-run)")
    parser.add_argument("--revision", metavar="BRANCH", help="commit to this branch (created if missing)")
    parser.add_argument("--private", action="store_true", default=None, help="create the repository private")
    parser.add_argument("--token", help="Hugging Face token (default: the logged-in one or HF_TOKEN)")
    parser.add_argument("--message", metavar="M", help="commit message")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--dry-run", metavar="OUT_DIR", help="only write the folder that would be uploaded")
    return parser


def cmd_push(args: argparse.Namespace) -> int:
    """Run ``vqswitch push`` on parsed arguments: 0 on success; 2 after one ``vqswitch push: error: ...`` line."""
    try:
        if args.dry_run is not None:
            out = prepare_upload(args.run_dir, args.dry_run, repo_id=args.repo_id)
            print(f"prepared {out} ({', '.join(sorted(p.name for p in Path(out).iterdir()))}); "
                  f"model card: {Path(out) / CARD}")
            return 0
        if args.repo_id is None:
            raise ValueError("--repo-id ORG/NAME is required (or --dry-run OUT_DIR to only prepare the folder)")
        url = push(args.run_dir, args.repo_id, revision=args.revision, private=args.private, token=args.token,
                   commit_message=args.message, create_pr=args.create_pr)
    except (TypeError, ValueError, OSError) as err:
        print(f"vqswitch push: error: {_one_line(err)}", file=sys.stderr)
        return 2
    print(f"pushed {args.run_dir} to {args.repo_id}: {url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``vqswitch push RUN_DIR --repo-id ORG/NAME [...]`` -> exit code (0 ok, 2 errors and bad arguments)."""
    parser = add_arguments(argparse.ArgumentParser(
        prog="vqswitch push", description="Publish a fine-tuned swapped model (weights, configs, entropy model "
        "and a model card) on the Hugging Face Hub."))
    args = parse_args(parser, argv)
    if isinstance(args, int):  # argparse printed usage and the error (or the help)
        return args
    return cmd_push(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
