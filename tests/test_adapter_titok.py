"""TiTok adapter: drop-in guarantee against both upstream fixtures (legacy stage-2 and VQ-8k), training a
swapped quantizer on a frozen stage-2 model, flat ids, codes API, save/load, duck typing, bad input."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hubcache import check_swapped_round_trip
from vqswitch import SwitchableTokenQuantizer
from vqswitch.adapters import (
    adapter_for, decode_codes, encode_codes, encode_latents, load_pretrained, save_swapped,
    swap_quantizer, swapped_quantizer,
)
from vqswitch.adapters.models.titok import TiTok

ROOT = Path(__file__).parent / "fixtures" / "upstream"
NAMES = ("titok_tiny", "titok_vq8k_tiny")
IO = {n: load_file(str(ROOT / n / "io.safetensors")) for n in NAMES}
SPREAD = 1e-5  # README: the largest float deviation across thread counts


@pytest.fixture(scope="module")
def bases():
    return {n: load_pretrained(ROOT / n, adapter="titok") for n in NAMES}


def close(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=SPREAD * max(1.0, float(b.abs().max())))


# ---------------------------------------------------------------- drop-in guarantee
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("token_specific", [False, True])
def test_swapped_model_reproduces_the_upstream_fixture(bases, name, token_specific):
    base, io = bases[name], IO[name]
    s = swap_quantizer(copy.deepcopy(base), token_specific=token_specific)
    assert swapped_quantizer(s).metric == ("cosine" if name == "titok_tiny" else "l2")
    z_q, result = s.quantize(io["latent"])
    assert result["min_encoding_indices"].dtype == torch.int64
    assert torch.equal(result["min_encoding_indices"], io["indices"])
    assert torch.equal(z_q, io["quantized"])
    for key in ("quantizer_loss", "commitment_loss", "codebook_loss"):
        assert torch.equal(result[key], io[key]), key
    rec, _ = s(io["images"])
    assert torch.equal(rec, base(io["images"])[0])
    close(rec, io["reconstruction"])
    assert torch.equal(s.decode_tokens(io["indices"]), base.decode_tokens(io["indices"]))
    close(s.decode_tokens(io["indices"]), io["decoded_from_indices"])
    flat = s.quantize.get_codebook_entry(io["indices"].reshape(-1))
    assert torch.equal(flat.reshape(2, 1, 8, -1).permute(0, 3, 1, 2), io["quantized_from_indices"])


@pytest.mark.parametrize("name", NAMES)
def test_swapped_gradients_match_the_upstream_fixture(bases, name):
    s = swap_quantizer(copy.deepcopy(bases[name]))
    latent = IO[name]["latent"].clone().requires_grad_(True)
    _, result = s.quantize(latent)
    result["quantizer_loss"].backward()
    torch.testing.assert_close(latent.grad, IO[name]["grad_latent_quantizer_loss"], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(swapped_quantizer(s).codebooks.grad[0, 0], IO[name]["grad_codebook_quantizer_loss"],
                               rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- training on a frozen stage-2 model
def test_stage2_model_trains_the_swapped_quantizer_on_latents(bases):
    base = bases["titok_tiny"]
    assert base.finetune_decoder and not any(p.requires_grad for p in base.quantize.parameters())
    s = swap_quantizer(copy.deepcopy(base), num_groups=2, token_specific=True, router_hidden_dim=8).train()
    q = swapped_quantizer(s)
    _, result = s.encode(IO["titok_tiny"]["images"])  # upstream's stage-2 encode: no_grad, zeroed losses
    assert not result["quantizer_loss"].requires_grad and float(result["quantizer_loss"]) == 0
    s.quantize.train()  # (upstream's encode forced it into eval mode)
    z = encode_latents(s, IO["titok_tiny"]["images"]).detach()  # (B, N, D)
    _, result = s.quantize(z.transpose(1, 2).unsqueeze(2))
    result["quantizer_loss"].backward()
    assert q.codebooks.grad is not None and float(q.codebooks.grad.abs().sum()) > 0
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in q.router.parameters())
    assert all(p.grad is None for p in s.encoder.parameters())


# ---------------------------------------------------------------- groups, flat ids, codes
def grouped(base, steps=2):
    s = swap_quantizer(copy.deepcopy(base), num_groups=4, codebook_size=16, token_specific=True,
                       router_hidden_dim=16).train()
    opt = torch.optim.Adam(swapped_quantizer(s).parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        z = encode_latents(s, torch.rand(4, 3, 64, 64, generator=g)).detach()
        _, result = s.quantize(z.transpose(1, 2).unsqueeze(2))
        opt.zero_grad()
        result["quantizer_loss"].backward()
        opt.step()
    return s.eval()


@pytest.mark.parametrize("name", NAMES)
def test_flat_ids_and_codes_round_trip(bases, name):
    s = grouped(bases[name])
    x = IO[name]["images"]
    z_q, result = s.quantize(s.encode_latent(x))
    ids = result["min_encoding_indices"]
    assert ids.shape == (2, 1, 8) and int(ids.max()) < 64
    out = s.quantize.last_output
    assert torch.equal(ids[:, 0], out.groups[:, None] * 16 + out.indices)
    entry = s.quantize.get_codebook_entry(ids.reshape(-1))
    torch.testing.assert_close(entry.reshape(2, 8, -1), z_q[:, :, 0].transpose(1, 2), rtol=0, atol=1e-6)
    soft = torch.nn.functional.one_hot(ids.reshape(-1), 64).float()  # one-hot soft weights = hard lookup
    torch.testing.assert_close(s.quantize.get_codebook_entry(soft), entry, rtol=0, atol=1e-6)
    codes = encode_codes(s, x)
    assert codes.indices.shape == (2, 8) and codes.num_groups == 4
    assert torch.equal(codes.groups[:, None] * 16 + codes.indices, ids[:, 0])
    recon = decode_codes(s, codes)
    torch.testing.assert_close(recon, s.decode_tokens(ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_swapped(bases, name, tmp_path, offline_cache):
    check_swapped_round_trip(grouped(bases[name]), IO[name]["images"], tmp_path / "run", offline_cache,
                             "org/titok-swapped", TiTok)


# ---------------------------------------------------------------- duck typing on an upstream-shaped instance
class UpstreamTiTok(torch.nn.Module):
    """Shaped like upstream's non-legacy TiTok: latent_tokens, encoder(pixel_values, latent_tokens), quantize,
    decoder, decode (no encode_latent, no dict config)."""

    def __init__(self, ours):
        super().__init__()
        self.latent_tokens = copy.deepcopy(ours.latent_tokens)
        self.encoder, self.decoder = copy.deepcopy(ours.encoder), copy.deepcopy(ours.decoder)
        self.quantize = copy.deepcopy(ours.quantize)

    def decode(self, z_quantized):
        return self.decoder(z_quantized)

    def forward(self, x):
        z_q, result = self.quantize(self.encoder(pixel_values=x, latent_tokens=self.latent_tokens))
        return self.decode(z_q), result


def test_swap_on_an_upstream_shaped_instance(bases, tmp_path):
    up = UpstreamTiTok(bases["titok_vq8k_tiny"])
    assert adapter_for(up).name == "titok"
    x = IO["titok_vq8k_tiny"]["images"]
    ref, ref_result = up(x)
    s = swap_quantizer(copy.deepcopy(up), token_specific=True)
    rec, result = s(x)
    assert torch.equal(rec, ref) and torch.equal(result["min_encoding_indices"], ref_result["min_encoding_indices"])
    assert torch.equal(encode_codes(s, x).indices, ref_result["min_encoding_indices"][:, 0])
    with pytest.raises(ValueError, match="no dict `config`"):
        save_swapped(s, tmp_path / "run")


# ---------------------------------------------------------------- bad input
def test_bad_input(bases):
    s = grouped(bases["titok_tiny"])
    with pytest.raises(ValueError, match="64x64"):
        encode_codes(s, torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="pixel range"):
        encode_codes(s, torch.rand(1, 3, 64, 64) * 255)
    with pytest.raises(ValueError, match="T=8"):
        s.quantize(torch.zeros(1, 12, 1, 7))
    with pytest.raises(ValueError, match="D=12"):
        s.quantize(torch.zeros(1, 16, 1, 8))
    with pytest.raises(ValueError, match="multiple of T=8"):
        s.quantize.get_codebook_entry(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"soft weights must have shape \[B\*N, M\*K=64\]"):
        s.quantize.get_codebook_entry(torch.zeros(8, 63))
    with pytest.raises(ValueError, match="metric 'l2'"):
        swap_quantizer(copy.deepcopy(bases["titok_tiny"]), SwitchableTokenQuantizer(8, 16, 12))
    with pytest.raises(ValueError, match="T=7 tokens"):
        swap_quantizer(copy.deepcopy(bases["titok_tiny"]), SwitchableTokenQuantizer(7, 16, 12, metric="cosine"))
    with pytest.raises(ValueError, match="configured image size"):
        swap_quantizer(copy.deepcopy(bases["titok_tiny"]), image_size=128)
