"""IBQ adapter: drop-in guarantee against the upstream fixture (dot-product codes, index backpropagation,
entropy terms), flat ids, codes API, save/load, duck typing, bad input."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hubcache import check_swapped_round_trip
from vqswitch import SwitchableTokenQuantizer
from vqswitch.adapters import (
    adapter_for, decode_codes, encode_codes, encode_latents, load_pretrained,
    swap_quantizer, swapped_quantizer,
)
from vqswitch.adapters.models.ibq import IBQ

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "ibq_tiny"
IO = load_file(str(FIXTURE / "io.safetensors"))
LOSSES = ("quant_loss", "sample_entropy", "avg_entropy", "entropy_loss")


@pytest.fixture(scope="module")
def base():
    return load_pretrained(FIXTURE, adapter="ibq")


def close(a, b, spread=1e-5):
    torch.testing.assert_close(a, b, rtol=0, atol=spread * max(1.0, float(b.abs().max())))


# ---------------------------------------------------------------- drop-in guarantee
@pytest.mark.parametrize("token_specific", [False, True])
def test_swapped_model_reproduces_the_upstream_fixture(base, token_specific):
    s = swap_quantizer(copy.deepcopy(base), token_specific=token_specific)
    assert swapped_quantizer(s).metric == "dot"
    z_q, loss, (a, b, idx) = s.quantize(IO["latent"])
    ref_q, ref_loss, (_, _, ref_idx) = base.quantize(IO["latent"])
    assert a is None and b is None and idx.dtype == torch.int64 and idx.shape == (128,)
    assert torch.equal(idx, IO["indices"]) and torch.equal(idx, ref_idx)
    assert torch.equal(z_q, IO["quantized"]) and z_q.stride() == ref_q.stride()
    assert isinstance(loss, tuple) and len(loss) == 4
    for name, value, ref in zip(LOSSES, loss, ref_loss):
        close(value, IO[name])
        torch.testing.assert_close(value, ref, rtol=1e-6, atol=1e-7)
    x = IO["images"]
    rec, _ = s(x)
    assert torch.equal(rec, base(x)[0])
    close(rec, IO["reconstruction"], 1e-4)
    codes = IO["indices"].view(2, 8, 8)
    assert torch.equal(s.decode_code(codes), base.decode_code(codes))
    close(s.decode_code(codes), IO["decoded_from_indices"], 1e-4)


def test_index_backpropagation_gradients_match_upstream(base):
    s = swap_quantizer(copy.deepcopy(base))
    grads = []
    for model, book in ((base, lambda m: m.quantize.embedding.weight), (s, lambda m: swapped_quantizer(m).codebooks)):
        m = copy.deepcopy(model)
        latent = IO["latent"].clone().requires_grad_(True)
        z_q, loss, _ = m.quantize(latent)
        (loss[0] + loss[3] + (z_q * torch.linspace(-1, 1, z_q.numel()).view_as(z_q)).sum()).backward()
        grads.append((latent.grad, book(m).grad.reshape(-1, 32)))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-5, atol=1e-5)
    assert bool((grads[1][1].abs().sum(-1) > 0).all())  # every code of the codebook gets a gradient


def test_without_entropy_loss_returns_the_scalar(base):
    m = copy.deepcopy(base)
    m.quantize.use_entropy_loss = False
    s = swap_quantizer(copy.deepcopy(m))
    _, loss, _ = s.quantize(IO["latent"])
    _, ref, _ = m.quantize(IO["latent"])
    assert loss.dim() == 0 and torch.equal(loss, ref)


# ---------------------------------------------------------------- groups, flat ids, codes
def grouped(base, steps=2):
    s = swap_quantizer(copy.deepcopy(base), num_groups=4, codebook_size=16, token_specific=True,
                       router_hidden_dim=16).train()
    q = swapped_quantizer(s)
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(4)
    for _ in range(steps):
        h = s.quant_conv(s.encoder(torch.rand(4, 3, 32, 32, generator=g) * 2 - 1)).detach()
        _, loss, _ = s.quantize(h)
        opt.zero_grad()
        (loss[0] + 0.1 * loss[3]).backward()
        opt.step()
    return s.eval()


def test_group_training_reaches_router_and_each_tokens_codes(base):
    s = swap_quantizer(copy.deepcopy(base), num_groups=2, codebook_size=16, token_specific=True,
                       router_hidden_dim=8).train()
    _, loss, _ = s.quantize(IO["latent"])
    (loss[0] + loss[3]).backward()
    q = swapped_quantizer(s)
    used = q.codebooks.grad.abs().sum((-1, -2)) > 0  # (M, T): every token codebook of a used group
    groups = s.quantize.last_output.groups.unique()
    assert bool(used[groups].all()) and int(used.sum()) == len(groups) * 64
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in q.router.parameters())


def test_flat_ids_and_codes_round_trip(base):
    s = grouped(base)
    x = IO["images"]
    z_q, _, (_, _, ids) = s.quantize(s.quant_conv(s.encoder(x)))
    out = s.quantize.last_output
    assert torch.equal(ids.view(2, -1), out.groups[:, None] * 16 + out.indices) and int(ids.max()) < 64
    entry = s.quantize.get_codebook_entry(ids, (2, 8, 8, 32))
    torch.testing.assert_close(entry, z_q, rtol=0, atol=1e-6)
    codes = encode_codes(s, x)
    assert codes.indices.shape == (2, 64) and torch.equal(codes.groups[:, None] * 16 + codes.indices, ids.view(2, -1))
    torch.testing.assert_close(decode_codes(s, codes), s(x)[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(s.decode_code(ids.view(2, 8, 8)), s(x)[0], rtol=0, atol=1e-4)
    assert encode_latents(s, x).shape == (2, 64, 32)


def test_save_load_swapped(base, tmp_path, offline_cache):
    check_swapped_round_trip(grouped(base), IO["images"], tmp_path / "run", offline_cache, "org/ibq-swapped", IBQ)


def test_live_weights_on_request(base):
    live = load_pretrained(FIXTURE, adapter="ibq", use_ema=False)
    s = swap_quantizer(copy.deepcopy(live))
    close(s(IO["images"])[0], IO["reconstruction_live"], 1e-4)
    assert not torch.equal(IO["reconstruction_live"], IO["reconstruction"])


# ---------------------------------------------------------------- duck typing on an upstream-shaped instance
class UpstreamIBQQuantize(torch.nn.Module):
    """Shaped like IndexPropagationQuantize: embedding, beta, use_entropy_loss (wraps ours for the maths)."""

    def __init__(self, ours):
        super().__init__()
        self.inner = copy.deepcopy(ours)
        self.embedding = self.inner.embedding
        self.beta, self.use_entropy_loss = ours.beta, ours.use_entropy_loss
        self.entropy_temperature = ours.entropy_temperature

    def forward(self, z):
        return self.inner(z)


class UpstreamIBQ(torch.nn.Module):
    def __init__(self, ours):
        super().__init__()
        for name in ("encoder", "decoder", "quant_conv", "post_quant_conv"):
            setattr(self, name, copy.deepcopy(getattr(ours, name)))
        self.quantize = UpstreamIBQQuantize(ours.quantize)

    def forward(self, x):
        quant, diff, _ = self.quantize(self.quant_conv(self.encoder(x)))
        return self.decoder(self.post_quant_conv(quant)), diff


def test_swap_on_an_upstream_shaped_instance(base):
    up = UpstreamIBQ(base)
    assert adapter_for(up).name == "ibq"
    ref, _ = up(IO["images"])
    s = swap_quantizer(copy.deepcopy(up), image_size=32)  # (no config: the grid follows the encoder)
    assert torch.equal(s(IO["images"])[0], ref)


# ---------------------------------------------------------------- bad input
def test_bad_input(base):
    s = grouped(base)
    with pytest.raises(ValueError, match="pixel range"):
        encode_codes(s, torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(ValueError, match="T=64"):
        encode_codes(s, torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="D=32"):
        s.quantize(torch.zeros(1, 16, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, M\*K=64\)"):
        s.decode_code(torch.full((1, 8, 8), 64))
    with pytest.raises(ValueError, match="shape must be"):
        s.quantize.get_codebook_entry(torch.zeros(64, dtype=torch.long), (1, 8, 8, 16))
    with pytest.raises(ValueError, match="metric 'l2'"):
        swap_quantizer(copy.deepcopy(base), SwitchableTokenQuantizer(64, 16, 32))
    m = copy.deepcopy(base)
    m.quantize = torch.nn.Module()
    m.quantize.use_entropy_loss = True
    with pytest.raises(ValueError, match="not IBQ's IndexPropagationQuantize"):
        swap_quantizer(m)
