"""A small swapped model folder the CLI tests share (imported by path: tests/ is on sys.path, see conftest.py)."""
from __future__ import annotations

from pathlib import Path

import torch

from vqswitch.adapters import encode_codes, load_pretrained, save_swapped, swap_quantizer
from vqswitch.data import procedural_faces

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "maskgit_vqgan_tiny"  # 32x32 images, T = 64


def save_counted_swapped(folder: Path) -> Path:
    """Save to ``folder`` the tiny MaskGIT-VQGAN swapped to 2 token-specific groups of 16 codes, with the usage
    counts of 64 procedural faces (the statistics of similar faces, as fine-tuning records them); returns it."""
    torch.manual_seed(0)
    model = swap_quantizer(load_pretrained(FIXTURE, adapter="maskgit-vqgan"), num_groups=2, codebook_size=16,
                           token_specific=True)
    q = model.quantize.quantizer
    codes = encode_codes(model, procedural_faces(64, size=32, seed=9))
    q.usage.zero_()
    q.group_counts.zero_()
    q.record_usage(codes.groups, codes.indices)
    save_swapped(model, folder)
    return folder
