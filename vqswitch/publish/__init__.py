"""Publishing a fine-tuned swapped model on the Hugging Face Hub (the library behind ``vqswitch push``, whose
command line is :mod:`vqswitch.cli.push`).

``run_dir`` is one of:

* a ``vqswitch finetune`` run: ``final/`` (the swapped model), ``run.json``, ``metrics.jsonl`` and, when
  ``vqswitch eval --out RUN_DIR/eval.json`` was run, ``eval.json``;
* a ``vqswitch demo`` output: ``checkpoint/`` (the swapped model), ``metrics.json`` (its evaluation, with the
  baseline), ``run.json`` and ``run/metrics.jsonl``;
* a swapped-model folder (:func:`vqswitch.adapters.save_swapped`), which may hold the optional files below
  under their published names (so a folder prepared with ``--dry-run`` can be pushed as it is).

The published folder (:func:`prepare_upload`) holds exactly these files (:data:`PUBLISH_FILES`):

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
in one commit), so a failed push leaves the repository's files as they were. ``load_swapped("ORG/NAME",
revision=...)`` loads the model back.

One job per module: :mod:`~vqswitch.publish.shareable` (what of run.json and an evaluation may be published),
:mod:`~vqswitch.publish.card` (the model card), :mod:`~vqswitch.publish.folder` (the run layouts and the prepared
folder), :mod:`~vqswitch.publish.hub` (the upload).
"""
from .card import TAGS, build_model_card
from .folder import OPTIONAL_FILES, PUBLISH_FILES, prepare_upload
from .hub import push
from .shareable import LOCAL_BASE, shareable_evaluation, shareable_run_info

__all__ = ["build_model_card", "prepare_upload", "push", "shareable_run_info", "shareable_evaluation",
           "PUBLISH_FILES", "OPTIONAL_FILES", "TAGS", "LOCAL_BASE"]
