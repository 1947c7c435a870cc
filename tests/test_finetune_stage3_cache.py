"""Stage 3 reads the frozen encoder's tokens from the latent cache instead of running the encoder every step."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch

from vqswitch.adapters import load_pretrained, swap_quantizer
from vqswitch.train.finetune import FinetuneConfig, Finetuner, StageConfig

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "maskgit_vqgan_tiny"


@functools.lru_cache(maxsize=1)
def _swapped():
    base = load_pretrained(FIXTURE, adapter="maskgit-vqgan")
    torch.manual_seed(0)
    return swap_quantizer(base, num_groups=2, codebook_size=16, token_specific=False)


def _run(tmp_path, stage3_steps: int, cache_latents: bool = True):
    model = copy.deepcopy(_swapped())  # the swap's k-means once per process
    calls = []
    model.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    data = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = FinetuneConfig(stages=(3,), stage3=StageConfig(steps=stage3_steps, lr=1e-3, batch_size=8), progress=False,
                         log_every=0, cache_latents=cache_latents)
    Finetuner(model, data, tmp_path, cfg).run()
    return sum(calls), model


@pytest.mark.slow  # two runs of 6 decoder steps
def test_stage3_encodes_each_image_once_when_it_trains_an_epoch_or_more(tmp_path):
    encoded, cached = _run(tmp_path / "a", stage3_steps=6)  # 48 images seen: the 16 are encoded once, into the cache
    assert encoded == 16
    encoded_plain, plain = _run(tmp_path / "b", stage3_steps=6, cache_latents=False)
    assert encoded_plain == 48
    for (k, a), b in zip(cached.state_dict().items(), plain.state_dict().values()):  # same training either way
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


def test_stage3_shorter_than_an_epoch_encodes_only_its_batches(tmp_path):
    encoded, _ = _run(tmp_path, stage3_steps=1)  # 8 images seen: cheaper than caching all 16
    assert encoded == 8
