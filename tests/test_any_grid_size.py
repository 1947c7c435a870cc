"""The drop-in guarantee at any image size: convolutional tokenizers (MaskGIT-VQGAN, IBQ, diffusers VQModel)
take images of any size, non-square included, and so must a swapped model with a token-shared quantizer
(identical indices and reconstructions, and the codes API with the grid given by image_size). A
token-specific quantizer (one codebook per position) is tied to one grid and refuses another size clearly."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from vqswitch import Codes
from vqswitch.adapters import decode_codes, encode_codes, load_pretrained, swap_quantizer, swapped_quantizer

UPSTREAM = Path(__file__).parent / "fixtures" / "upstream"


def maskgit():
    return load_pretrained(UPSTREAM / "maskgit_vqgan_tiny", adapter="maskgit-vqgan").eval()


def ibq():
    return load_pretrained(UPSTREAM / "ibq_tiny", adapter="ibq").eval()


def vqmodel():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    m = diffusers.VQModel(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, num_vq_embeddings=64,
                          sample_size=16, norm_num_groups=8).eval()
    with torch.no_grad():  # a codebook that spans the latents, so that indices are not all one code
        h = m.encode(torch.rand(4, 3, 16, 16) * 2 - 1).latents
        mu, sd = h.mean((0, 2, 3)), h.std((0, 2, 3))
        m.quantize.embedding.weight.copy_(mu + sd * torch.randn_like(m.quantize.embedding.weight))
    return m


# family: (build, pixel range low, reconstruction of images, upstream indices (B, h*w) from the latent grid)
FAMILIES = {
    "maskgit-vqgan": (maskgit, 0.0, lambda m, x: m(x)[0],
                      lambda m, x: m.quantize(m.encoder(x))[1].reshape(x.shape[0], -1)),
    "ibq": (ibq, -1.0, lambda m, x: m(x)[0],
            lambda m, x: m.quantize(m.quant_conv(m.encoder(x)))[2][2].reshape(x.shape[0], -1)),
    "diffusers-vqmodel": (vqmodel, -1.0, lambda m, x: m(x).sample,
                          lambda m, x: m.quantize(m.encode(x).latents)[2][2].reshape(x.shape[0], -1)),
}
SIZES = [(16, 24), (24, 16), (48, 32), (16, 16)]  # none the configured size (32x32 / 16x16 for diffusers' 16)


def images(size, low, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, *size, generator=g) * (1.0 - low) + low


# diffusers: its import alone is ~7 s of CPU, so its family runs in the full suite only (the slow tier)
@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) if n == "diffusers-vqmodel" else n
                                        for n in sorted(FAMILIES)])
def family(request):
    build, low, recon, indices = FAMILIES[request.param]
    return build(), low, recon, indices


@pytest.mark.parametrize("size", SIZES)
def test_token_shared_swap_is_drop_in_at_any_size(family, size):
    base, low, recon, upstream_indices = family
    if size == (16, 16) and base.__class__.__name__ == "VQModel":
        size = (40, 24)  # 16x16 is this VQModel's configured size
    s = swap_quantizer(copy.deepcopy(base))
    x = images(size, low)
    with torch.no_grad():
        ref, out = recon(base, x), recon(s, x)
        ref_ids, ids = upstream_indices(base, x), upstream_indices(s, x)
    assert torch.equal(ids, ref_ids)
    assert torch.equal(out, ref)
    codes = encode_codes(s, x)
    T = ref_ids.shape[1]
    assert codes.num_tokens == T != swapped_quantizer(s).num_tokens
    assert torch.equal(codes.indices, ref_ids) and torch.equal(codes.groups, torch.zeros(2, dtype=torch.long))
    again = Codes.from_bytes(codes.to_bytes())
    decoded = decode_codes(s, again, image_size=size)
    assert decoded.shape == x.shape
    torch.testing.assert_close(decoded, ref, rtol=0, atol=1e-5)


def test_decode_codes_needs_the_size_of_a_non_square_grid(family):
    base, low, _, _ = family
    s = swap_quantizer(copy.deepcopy(base))
    codes = encode_codes(s, images((16, 24), low))
    with pytest.raises(ValueError, match="image_size"):
        decode_codes(s, codes)
    with pytest.raises(ValueError, match="image_size"):  # a size that does not give the codes' T
        decode_codes(s, codes, image_size=(16, 16))


def test_grouped_token_shared_swap_encodes_any_size_by_least_error(family):
    base, low, recon, _ = family
    s = swap_quantizer(copy.deepcopy(base), num_groups=2, codebook_size=8, router_hidden_dim=8)
    x = images((16, 24), low, b=3)
    codes = encode_codes(s, x)
    q = swapped_quantizer(s)
    with torch.no_grad():
        decoded = decode_codes(s, codes, image_size=(16, 24))
        assert torch.equal(decoded, decode_codes(s, codes, image_size=(16, 24)))
        out = recon(s.train(), x)  # training mode at another T: least-error groups, no router
    assert out.shape == x.shape
    assert codes.num_groups == 2 and codes.num_tokens != q.num_tokens


def test_token_specific_swap_refuses_another_size(family):
    base, low, recon, _ = family
    s = swap_quantizer(copy.deepcopy(base), token_specific=True)
    x = images((16, 24), low)
    with pytest.raises(ValueError, match=r"quantizer was built for T="):
        recon(s, x)
    with pytest.raises(ValueError, match=r"quantizer was built for T="):
        encode_codes(s, x)
