"""The model card (``README.md``) of a swapped-model folder: :func:`build_model_card`.

Every number in the card is computed from the files: the model's sizes and bits from the loaded model, every row of
the evaluation (for a demo: the baseline, the fair reference "baseline + stage 3" and STSCQ, with the difference to
the fair reference spelled out) and the stage-3 losses the run's config gave a weight. A local path is never written
into it (:mod:`vqswitch.publish.shareable`).
"""
from __future__ import annotations

import math
from pathlib import Path

from vqswitch._checks import check_path, check_repo_id, is_int, one_line
from vqswitch._io import read_json_lines, read_json_object
from vqswitch.formats import (CONFIG_FILE, ENTROPY_FILE, EVALUATION_FILE, RUN_FORMAT, RUN_INFO_FILE, TRAIN_LOG_FILE,
                              WEIGHTS_FILE)

from .shareable import is_hub_id, shareable_run_info

__all__ = ["build_model_card", "TAGS"]

TAGS = ("vqswitch", "image-tokenizer", "vector-quantization", "image-compression")
_STAGE_WHAT = {1: "M token-shared group codebooks + router, on the frozen encoder's tokens",
               2: "token-specific codebooks (each token's started from its group's) + router",
               3: "decoder only, on images ({losses})"}
_STAGE3_LOSSES = (("l2", "L2"), ("perceptual", "perceptual"), ("identity", "identity"))
# (metrics key, card label) of the demo's table rows, in its order; other rows are shown under their key
_ROW_LABELS = (("baseline", "baseline VQ (before the swap)"),
               ("baseline_decoder_tuned", "baseline + stage 3 (same codes, decoder fine-tuned as in stage 3)"),
               ("stscq", "STSCQ (this model)"))
_FAIR_REFERENCE = "baseline_decoder_tuned"


def _num(value) -> float | None:
    """A finite real number as a float, else None (JSON fields are optional and may be null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _int(value) -> int | None:
    return value if is_int(value) else None


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
    if is_hub_id(base):
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
        lines.append(f"| entropy model | `{ENTROPY_FILE}`: code counts of {images} images, smoothing "
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

    folder = check_path("model_dir", model_dir)
    if repo_id is not None:
        check_repo_id("repo_id", repo_id)
    for name, value in (("run_info", run_info), ("evaluation", evaluation)):
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict or None, got {type(value).__name__}")
    if run_info is None and (folder / RUN_INFO_FILE).is_file():
        run_info = read_json_object(folder / RUN_INFO_FILE, "run info")
    if evaluation is None and (folder / EVALUATION_FILE).is_file():
        evaluation = read_json_object(folder / EVALUATION_FILE, "evaluation")
    run_info = shareable_run_info(run_info or {})  # the card is published: no local path in it
    if run_info.get("format", RUN_FORMAT) != RUN_FORMAT:
        raise ValueError(f"run_info has format {run_info.get('format')!r}, expected {RUN_FORMAT!r}")
    log = read_json_lines(folder / TRAIN_LOG_FILE) if (folder / TRAIN_LOG_FILE).is_file() else []

    try:
        model = load_swapped(folder)
    except Exception as err:  # noqa: BLE001 - corrupt weights raise the safetensors error type: one clear message
        raise ValueError(f"the model folder {str(folder)!r} does not load with vqswitch.adapters.load_swapped "
                         f"({type(err).__name__}: {one_line(err, limit=400)}); it is not published") from err
    facts = _model_facts(model, read_json_object(folder / CONFIG_FILE, "config"))
    entropy = _check_entropy_model(folder / ENTROPY_FILE, facts) if (folder / ENTROPY_FILE).is_file() else None
    if evaluation:
        _check_evaluation(evaluation, facts)

    base = run_info.get("base_model")
    license_ = run_info.get("license") if _text(run_info.get("license")) else None
    meta = ModelCardData(library_name="vqswitch", tags=list(TAGS), license=license_,
                         base_model=base if is_hub_id(base) else None)
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
              f"`{CONFIG_FILE}` and `{WEIGHTS_FILE}` (the swapped model, `vqswitch.adapters.save_swapped` format)"
              + (f", `{ENTROPY_FILE}` (the entropy model)" if entropy is not None else "")
              + (f", `{RUN_INFO_FILE}` (what the run started from)" if (folder / RUN_INFO_FILE).is_file() else "")
              + (f", `{EVALUATION_FILE}` (the evaluation)" if (folder / EVALUATION_FILE).is_file() else "")
              + (f", `{TRAIN_LOG_FILE}` (the training log)" if (folder / TRAIN_LOG_FILE).is_file() else "") + "."]
    return "\n".join(lines) + "\n"


