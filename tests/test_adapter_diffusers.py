"""diffusers VQModel adapter: the drop-in guarantee, flat ids, the codes API, save/load, bad input.

Models are diffusers' own VQModel built from small configs at random weights: a plain group-norm
one, the CompVis ldm-celebahq-256 VQ-VAE architecture (block_out (128, 256, 512), 3 latent
channels, 8192 codes), a spatial-norm (MoVQ) one and a lookup_from_codebook one.
"""
from __future__ import annotations

import copy
import json

import pytest
import safetensors.torch
import torch

from hubcache import make_cached_repo
from vqswitch import Codes, SwitchableTokenQuantizer
from vqswitch.adapters import (
    adapter_for, decode_codes, encode_codes, encode_latents, load_pretrained, load_swapped, quantizer_from_model,
    save_swapped, swap_quantizer, swapped_quantizer,
)

# The full suite only: importing diffusers alone costs ~7 s of CPU, a tenth of the fast tier's budget. It is
# imported when the first model is built (so collecting this file costs nothing), and skipped when absent.
pytestmark = pytest.mark.slow

SMALL = dict(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
             up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, num_vq_embeddings=64, sample_size=16,
             norm_num_groups=8)
# CompVis/ldm-celebahq-256 "vqvae": VQ-f4, 3 latent channels, 8192 codes (run here on 32x32 images)
CELEBAHQ = dict(block_out_channels=(128, 256, 512), down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=2, latent_channels=3,
                num_vq_embeddings=8192, sample_size=256)
SPATIAL = dict(SMALL, norm_type="spatial")
LOOKUP = dict(SMALL, lookup_from_codebook=True)
CONFIGS = {"small": SMALL, "spatial": SPATIAL, "lookup": LOOKUP}


def build(cfg, seed=0, spread_codebook=True):
    """A random-weight diffusers VQModel whose codebook spans its latents (so indices are not all one code)."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    m = diffusers.VQModel(**cfg).eval()
    if spread_codebook:
        with torch.no_grad():
            h = m.encode(images(4, m.config.sample_size if m.config.sample_size <= 32 else 32, seed + 99)).latents
            mu, sd = h.mean((0, 2, 3)), h.std((0, 2, 3))
            m.quantize.embedding.weight.copy_(mu + sd * torch.randn_like(m.quantize.embedding.weight))
    return m


def images(b, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def small():
    return build(SMALL)


# ---------------------------------------------------------------- drop-in guarantee
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("token_specific", [False, True])
def test_drop_in_identical(name, token_specific):
    m = build(CONFIGS[name])
    x = images(2, 16)
    h = m.encode(x).latents
    ref_q, ref_loss, (_, _, ref_idx) = m.quantize(h)
    ref = m(x).sample
    s = swap_quantizer(copy.deepcopy(m), token_specific=token_specific)
    assert swapped_quantizer(s).token_specific is token_specific
    q, loss, (p, e, idx) = s.quantize(h)
    assert p is None and e is None
    assert idx.dtype == torch.int64 and idx.shape == ref_idx.shape == (2 * 64,)
    assert len(set(ref_idx.tolist())) > 3  # a codebook that spans the latents: the check means something
    assert torch.equal(idx, ref_idx)
    assert torch.equal(q, ref_q)
    assert torch.equal(loss, ref_loss)
    assert torch.equal(s(x).sample, ref)
    assert torch.equal(s.decode(h, return_dict=False)[1], m.decode(h, return_dict=False)[1])


@pytest.mark.slow
def test_drop_in_celebahq_architecture():
    m = build(CELEBAHQ)
    assert m.quantize.embedding.weight.shape == (8192, 3)
    x = images(2, 32)
    h = m.encode(x).latents
    ref_q, ref_loss, (_, _, ref_idx) = m.quantize(h)
    s = swap_quantizer(copy.deepcopy(m), image_size=32)
    q, loss, (_, _, idx) = s.quantize(h)
    assert torch.equal(idx, ref_idx) and torch.equal(q, ref_q) and torch.equal(loss, ref_loss)
    assert torch.equal(s(x).sample, m(x).sample)


@pytest.mark.parametrize("legacy", [True, False])
def test_loss_placement_and_gradients_match_upstream(small, legacy):
    m = copy.deepcopy(small)
    m.quantize.legacy = legacy
    m.quantize.beta = 0.4
    s = swap_quantizer(copy.deepcopy(m))
    h = m.encode(images(2, 16)).latents.detach()
    grads = []
    for model in (m, s):
        z = h.clone().requires_grad_(True)
        q, loss, _ = model.quantize(z)
        (loss + (q * torch.linspace(-1, 1, q.numel()).view_as(q)).sum()).backward()
        book = model.quantize.embedding.weight if model is m else model.quantize.quantizer.codebooks
        grads.append((z.grad, book.grad.reshape(-1, h.shape[1]), loss.detach()))
    assert torch.equal(grads[0][2], grads[1][2])
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-5, atol=1e-9)


def test_sane_index_shape(small):
    m = copy.deepcopy(small)
    m.quantize.sane_index_shape = True
    s = swap_quantizer(copy.deepcopy(m))
    h = m.encode(images(2, 16)).latents
    ref = m.quantize(h)[2][2]
    idx = s.quantize(h)[2][2]
    assert idx.shape == (2, 8, 8) and torch.equal(idx, ref)


# ---------------------------------------------------------------- groups and flat ids
def trained_groups(model, num_groups=4, codebook_size=32, steps=3):
    s = swap_quantizer(copy.deepcopy(model), num_groups=num_groups, codebook_size=codebook_size,
                       token_specific=True, router_hidden_dim=16)
    q = swapped_quantizer(s)
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    s.train()
    for i in range(steps):
        _, loss, _ = s.quantize(s.encode(images(4, 16, seed=10 + i)).latents.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return s.eval()


def test_flat_ids_name_the_codes(small):
    s = trained_groups(small)
    q = swapped_quantizer(s)
    h = s.encode(images(3, 16)).latents
    zq, _, (_, _, ids) = s.quantize(h)
    out = s.quantize.last_output
    assert torch.equal(ids.view(3, -1), out.groups[:, None] * q.codebook_size + out.indices)
    assert int(ids.max()) < 4 * 32
    entry = s.quantize.get_codebook_entry(ids, (3, 8, 8, 4))
    assert entry.shape == zq.shape
    torch.testing.assert_close(entry, zq, rtol=0, atol=1e-6)  # zq = z + (q - z): q up to rounding
    assert torch.equal(s.quantize.get_codebook_entry(ids, None), entry.permute(0, 2, 3, 1).reshape(-1, 4))


def test_router_losses_train_the_router(small):
    s = swap_quantizer(copy.deepcopy(small), num_groups=4, codebook_size=32, router_hidden_dim=16).train()
    _, loss, _ = s.quantize(s.encode(images(4, 16)).latents.detach())
    out = s.quantize.last_output
    assert out.router_probs is not None and out.router_probs.shape == (4, 4)
    loss.backward()
    router_grads = [p.grad for p in swapped_quantizer(s).router.parameters()]
    assert all(g is not None for g in router_grads) and any(float(g.abs().sum()) > 0 for g in router_grads)


def test_lookup_from_codebook_decode_path():
    m = build(LOOKUP)
    s = trained_groups(m)
    x = images(2, 16)
    h = s.encode(x).latents
    zq, _, (_, _, ids) = s.quantize(h)
    from_ids = s.decode(ids, force_not_quantize=True, shape=(2, 8, 8, 4)).sample
    torch.testing.assert_close(from_ids, s.decode(h).sample, rtol=0, atol=1e-5)


def test_spatial_norm_decoder_gets_the_quantized_latents():
    m = build(SPATIAL)
    s = trained_groups(m)
    x = images(2, 16)
    codes = encode_codes(s, x)
    torch.testing.assert_close(decode_codes(s, codes), s(x).sample, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- codes API
def test_codes_round_trip(small):
    s = trained_groups(small)
    x = images(3, 16)
    codes = encode_codes(s, x)
    assert isinstance(codes, Codes) and codes.indices.shape == (3, 64) and codes.num_groups == 4
    out = swapped_quantizer(s)(encode_latents(s, x))
    assert torch.equal(codes.groups, out.groups) and torch.equal(codes.indices, out.indices)
    recon = decode_codes(s, codes)
    assert recon.shape == x.shape
    torch.testing.assert_close(recon, s(x).sample, rtol=0, atol=1e-5)
    again = Codes.from_bytes(codes.to_bytes())
    assert torch.equal(decode_codes(s, again), recon)


def test_init_from_latents(small):
    z = encode_latents(small, images(8, 16)).detach()
    q = quantizer_from_model(small, num_groups=2, codebook_size=8, token_specific=True, init="latents", latents=z)
    assert q.codebooks.shape == (2, 64, 8, 4)
    s = swap_quantizer(copy.deepcopy(small), q)
    assert encode_codes(s, images(2, 16)).indices.max() < 8


# ---------------------------------------------------------------- persistence
def test_save_load_swapped_round_trip(small, tmp_path):
    s = trained_groups(small)
    assert int(swapped_quantizer(s).usage.sum()) > 0
    save_swapped(s, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "entropy_model.safetensors",
                                                                    "model.safetensors"]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["adapter"] == "diffusers-vqmodel" and cfg["quantizer"]["num_groups"] == 4
    r = load_swapped(tmp_path / "run")
    sa, sb = s.state_dict(), r.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = images(2, 16)
    assert torch.equal(r(x).sample, s(x).sample)
    assert torch.equal(encode_codes(r, x).indices, encode_codes(s, x).indices)


def test_load_swapped_from_offline_cache(small, tmp_path, offline_cache):
    s = trained_groups(small)
    save_swapped(s, tmp_path / "run")
    make_cached_repo(offline_cache, "org/swapped", tmp_path / "run")
    r = load_swapped("org/swapped")
    x = images(2, 16)
    assert torch.equal(r(x).sample, s(x).sample)


def test_load_swapped_refuses_mixed_or_foreign_files(small, tmp_path):
    s = trained_groups(small)
    save_swapped(s, tmp_path / "a")
    save_swapped(s, tmp_path / "b")
    (tmp_path / "b" / "config.json").write_bytes((tmp_path / "a" / "config.json").read_bytes())
    with pytest.raises(ValueError, match="different saves"):
        load_swapped(tmp_path / "b")
    (tmp_path / "a" / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a vqswitch swapped-model config"):
        load_swapped(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_swapped(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_swapped(tmp_path / "a")


def test_load_swapped_names_bad_keys(small, tmp_path):
    s = trained_groups(small)
    save_swapped(s, tmp_path / "run")
    path = tmp_path / "run" / "model.safetensors"
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = safetensors.torch.load_file(str(path))
    state.pop("quantize.quantizer.codebooks")
    state["extra.weight"] = torch.zeros(1)
    safetensors.torch.save_file(state, str(path), metadata=meta)
    with pytest.raises(ValueError, match=r"missing key.*quantize\.quantizer\.codebooks.*unexpected key.*extra\.weight"):
        load_swapped(tmp_path / "run")


def test_failed_save_leaves_the_old_checkpoint(small, tmp_path, monkeypatch):
    s = trained_groups(small)
    save_swapped(s, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_swapped(trained_groups(small, steps=1), tmp_path / "run")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folder left


def test_load_pretrained_from_save_pretrained_subfolder(small, tmp_path):
    small.save_pretrained(tmp_path / "repo" / "vqvae")
    m = load_pretrained(tmp_path / "repo", adapter="diffusers-vqmodel", subfolder="vqvae")
    assert not m.training
    x = images(2, 16)
    assert torch.equal(m(x).sample, small(x).sample)
    assert adapter_for(m).name == "diffusers-vqmodel"


# ---------------------------------------------------------------- bad input
def test_bad_models_and_quantizers(small):
    with pytest.raises(TypeError, match="nn.Module"):
        swap_quantizer("not a model")
    with pytest.raises(ValueError, match="no vqswitch adapter recognises Linear"):
        swap_quantizer(torch.nn.Linear(2, 2))
    m = copy.deepcopy(small)
    m.quantize = torch.nn.Identity()
    with pytest.raises(ValueError, match="not diffusers' VectorQuantizer"):
        swap_quantizer(m)
    m = copy.deepcopy(small)
    m.quantize.remap = "used.npy"
    with pytest.raises(ValueError, match="remap"):
        swap_quantizer(m)
    with pytest.raises(ValueError, match="D=4"):
        swap_quantizer(copy.deepcopy(small), SwitchableTokenQuantizer(64, 8, 3))
    with pytest.raises(ValueError, match="metric"):
        swap_quantizer(copy.deepcopy(small), SwitchableTokenQuantizer(64, 8, 4, metric="dot"))
    with pytest.raises(TypeError, match="not both"):
        swap_quantizer(copy.deepcopy(small), SwitchableTokenQuantizer(64, 8, 4), num_groups=2)
    s = swap_quantizer(copy.deepcopy(small))
    with pytest.raises(ValueError, match="already swapped"):
        swap_quantizer(s)
    with pytest.raises(ValueError, match="already swapped"):
        quantizer_from_model(s)
    with pytest.raises(ValueError, match="swap_quantizer first"):
        encode_codes(small, images(1, 16))
    with pytest.raises(ValueError, match="init must be one of"):
        quantizer_from_model(small, init="random")
    with pytest.raises(ValueError, match="latents="):
        quantizer_from_model(small, init="latents")
    with pytest.raises(ValueError, match="exceeds"):
        quantizer_from_model(small, codebook_size=65)
    swap_quantizer(s, SwitchableTokenQuantizer(64, 8, 4, token_specific=False))  # re-swap with a new quantizer
    assert swapped_quantizer(s).codebook_size == 8


def test_bad_images_and_codes(small):
    s = trained_groups(small)
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        encode_codes(s, [[0.0]])
    with pytest.raises(TypeError, match="float"):
        encode_codes(s, torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        encode_codes(s, torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="pixel range"):
        encode_codes(s, torch.rand(1, 3, 16, 16) * 255)
    with pytest.raises(ValueError, match="T=64"):
        encode_codes(s, images(1, 32))
    with pytest.raises(ValueError, match="T=64"):
        s(images(1, 32))  # the shim itself refuses another grid
    other = Codes(torch.zeros(1, dtype=torch.long), torch.zeros(1, 16, dtype=torch.long), codebook_size=16,
                  num_groups=4)
    with pytest.raises(ValueError, match=r"\(T, K, M\)"):
        decode_codes(s, other)
    with pytest.raises(TypeError, match="Codes"):
        decode_codes(s, torch.zeros(1, 16))
    with pytest.raises(ValueError, match=r"\[0, M\*K=128\)"):
        s.quantize.get_codebook_entry(torch.full((128,), 128), (2, 8, 8, 4))
    with pytest.raises(TypeError, match="integer"):
        s.quantize.get_codebook_entry(torch.zeros(128), (2, 8, 8, 4))
    with pytest.raises(ValueError, match="multiple of T=64"):
        s.quantize.get_codebook_entry(torch.zeros(5, dtype=torch.long), None)
    with pytest.raises(ValueError, match="shape must be"):
        s.quantize.get_codebook_entry(torch.zeros(128, dtype=torch.long), (2, 8, 8, 3))


def test_swap_follows_the_models_mode(small):
    """Regression: a freshly built quantizer is in training mode; swapping it into an eval model must not
    leave it there (router selection and usage counting would run at inference)."""
    s = swap_quantizer(copy.deepcopy(small).eval(), num_groups=2, codebook_size=16, router_hidden_dim=8)
    assert not s.quantize.training and not swapped_quantizer(s).training
    s(images(2, 16))
    assert int(swapped_quantizer(s).usage.sum()) == 0
    t = swap_quantizer(copy.deepcopy(small).train(), num_groups=2, codebook_size=16, router_hidden_dim=8)
    assert swapped_quantizer(t).training
