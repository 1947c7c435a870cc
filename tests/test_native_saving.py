"""A swapped model's inherited save / push methods (diffusers ``ModelMixin.save_pretrained`` / ``push_to_hub``,
TiTok's own ``save_pretrained``, ``PyTorchModelHubMixin`` on a user's described model) refuse with an error that
points at ``save_swapped`` / ``vqswitch push``: their formats cannot hold the swapped quantizer, and the matching
loaders drop it with a warning (a silently broken model). Nothing is written and the Hub is never called."""
from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from vqswitch.adapters import (describe_model, encode_codes, load_pretrained, load_swapped, save_swapped,
                               swap_quantizer)
from vqswitch.adapters.native_saving import SwappedSaveError, unguard_native_saving

UPSTREAM = Path(__file__).parent / "fixtures" / "upstream"


def _refuses(model, method: str, *args, **kwargs) -> str:
    with pytest.raises(SwappedSaveError) as info:
        getattr(model, method)(*args, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, NotImplementedError)  # what a caller catching "not available" expects
    assert method in message and "save_swapped" in message and "vqswitch push" in message, message
    return message


def _diffusers_vq():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    return diffusers.VQModel(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, num_vq_embeddings=64,
                             sample_size=16, norm_num_groups=8).eval()


@pytest.mark.slow  # builds a diffusers VQModel: importing diffusers is ~7 s of CPU
def test_diffusers_save_pretrained_and_push_to_hub_refuse(tmp_path, monkeypatch):
    import huggingface_hub

    model = swap_quantizer(_diffusers_vq(), num_groups=2, codebook_size=16)
    _refuses(model, "save_pretrained", tmp_path / "native")
    assert not (tmp_path / "native").exists()  # refused before anything is written

    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub was called")

    monkeypatch.setattr(huggingface_hub, "HfApi", no_hub)
    monkeypatch.setattr(huggingface_hub, "create_repo", no_hub)
    _refuses(model, "push_to_hub", "org/name")

    # the vqswitch way saves and loads it exactly, and the loaded model refuses the native methods too
    save_swapped(model, tmp_path / "swapped")
    again = load_swapped(tmp_path / "swapped")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert encode_codes(again, x) == encode_codes(model, x)
    _refuses(again, "save_pretrained", tmp_path / "native")
    # copies keep the guard; the class and an unswapped model are untouched
    _refuses(copy.deepcopy(model), "save_pretrained", tmp_path / "native")
    _refuses(pickle.loads(pickle.dumps(model)), "save_pretrained", tmp_path / "native")
    plain = _diffusers_vq()
    plain.save_pretrained(tmp_path / "plain")
    assert (tmp_path / "plain" / "config.json").is_file()


def test_swapping_again_keeps_the_guard(tmp_path):
    from vqswitch.adapters import quantizer_from_model

    base = _diffusers_vq()
    q = quantizer_from_model(base, num_groups=4, codebook_size=8)
    model = swap_quantizer(swap_quantizer(base), quantizer=q)
    _refuses(model, "save_pretrained", tmp_path / "x")


def test_titok_save_pretrained_refuses(tmp_path):
    model = swap_quantizer(load_pretrained(UPSTREAM / "titok_tiny", adapter="titok"), num_groups=2, codebook_size=8)
    _refuses(model, "save_pretrained", tmp_path / "native")
    assert not (tmp_path / "native").exists()


@pytest.mark.parametrize("family, folder", [("maskgit-vqgan", "maskgit_vqgan_tiny"), ("ibq", "ibq_tiny")])
def test_families_without_native_methods_get_none(family, folder):
    """MaskGIT-VQGAN and IBQ (vqswitch's own plain nn.Modules) have no save/push methods: none are added."""
    model = swap_quantizer(load_pretrained(UPSTREAM / folder, adapter=family), num_groups=2, codebook_size=8)
    assert not hasattr(model, "save_pretrained") and not hasattr(model, "push_to_hub")


class HubTinyGrid(nn.Module, __import__("huggingface_hub").PyTorchModelHubMixin):
    """A user's model with the Hub mixin: 16x16 images -> a 4x4 grid of 4-d latents."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 4, stride=4)
        self.quant = nn.Embedding(16, 4)
        self.dec = nn.ConvTranspose2d(4, 3, 4, stride=4)


describe_model(HubTinyGrid, name="hub-tiny-grid", quantizer="quant", codebook="weight",
               encode=lambda m, x: m.enc(x), decode=lambda m, z: m.dec(z), pixel_range=(0, 1),
               layout="(B, D, H, W)", image_size=16)


def test_described_model_with_the_hub_mixin_refuses(tmp_path):
    torch.manual_seed(0)
    model = swap_quantizer(HubTinyGrid().eval(), num_groups=2, codebook_size=8)
    _refuses(model, "save_pretrained", tmp_path / "native")
    _refuses(model, "push_to_hub", "org/name")
    assert not (tmp_path / "native").exists()
    HubTinyGrid().save_pretrained(tmp_path / "plain")  # unswapped: the mixin works as before
    assert (tmp_path / "plain" / "model.safetensors").is_file()
    unguard_native_saving(model)  # a deliberate opt-out: the class's method runs again
    model.save_pretrained(tmp_path / "opt-out")
    assert (tmp_path / "opt-out" / "model.safetensors").is_file()
