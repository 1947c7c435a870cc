"""Three-stage fine-tuning of swapped tokenizers (imported on demand: ``from vqswitch.train import finetune``).

* :mod:`vqswitch.train.finetune`: :class:`Finetuner`, :class:`FinetuneConfig`, :class:`StageConfig`, :func:`finetune`;
* :mod:`vqswitch.train.losses`: stage 3's reconstruction loss and pluggable perceptual / identity feature losses
  over ``transformers`` vision models;
* :mod:`vqswitch.train.latents`: the memory-mapped encoder-token cache of stages 1 and 2.
"""
from .finetune import Finetuner, FinetuneConfig, StageConfig, TrainingDiverged, finetune

__all__ = ["Finetuner", "FinetuneConfig", "StageConfig", "TrainingDiverged", "finetune"]
