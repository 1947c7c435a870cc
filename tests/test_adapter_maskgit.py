"""MaskGIT-VQGAN adapter: drop-in guarantee against the upstream fixture, flat ids through the upstream
API, codes API, save/load, duck typing on an upstream-shaped instance, bad input."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hubcache import check_swapped_round_trip, make_cached_repo
from vqswitch import SwitchableTokenQuantizer
from vqswitch.adapters import (
    adapter_for, decode_codes, encode_codes, load_pretrained, load_swapped, save_swapped, swap_quantizer,
    swapped_quantizer,
)
from vqswitch.adapters.models.maskgit_vqgan import MaskGitVQGAN

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "maskgit_vqgan_tiny"
IO = load_file(str(FIXTURE / "io.safetensors"))
SPREAD = 1e-5  # README: the largest float deviation of any tensor across thread counts


@pytest.fixture(scope="module")
def base():
    return load_pretrained(FIXTURE, adapter="maskgit-vqgan")


def close(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=SPREAD * max(1.0, float(b.abs().max())))


# ---------------------------------------------------------------- drop-in guarantee
@pytest.mark.parametrize("token_specific", [False, True])
def test_swapped_model_reproduces_the_upstream_fixture(base, token_specific):
    s = swap_quantizer(copy.deepcopy(base), token_specific=token_specific)
    x = IO["images"]
    rec, quantized, indices = s(x)
    assert indices.dtype == torch.int64 and torch.equal(indices, IO["indices"])
    assert torch.equal(quantized, IO["quantized"])
    close(rec, IO["reconstruction"])
    assert torch.equal(rec, base(x)[0])  # and the unswapped model, bit for bit
    assert torch.equal(s.get_code(x), IO["indices"])
    close(s.decode_code(IO["indices"]), IO["decoded_from_indices"])
    assert torch.equal(s.decode_code(IO["indices"]), base.decode_code(IO["indices"]))
    st, idx, loss = s.quantize(IO["latent"], return_loss=True)
    assert torch.equal(idx, IO["indices"])
    assert torch.equal(loss, IO["loss"])
    close(st, IO["quantized_straight_through"])


def test_swapped_gradients_match_the_upstream_fixture(base):
    s = swap_quantizer(copy.deepcopy(base))
    latent = IO["latent"].clone().requires_grad_(True)
    _, _, loss = s.quantize(latent, return_loss=True)
    loss.backward()
    book = s.quantize.quantizer.codebooks
    torch.testing.assert_close(latent.grad, IO["grad_latent_loss"], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(book.grad[0, 0], IO["grad_codebook_loss"], rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- groups, flat ids, codes
def grouped(base, steps=2):
    s = swap_quantizer(copy.deepcopy(base), num_groups=4, codebook_size=16, token_specific=True,
                       router_hidden_dim=16)
    opt = torch.optim.Adam(swapped_quantizer(s).parameters(), lr=1e-2)
    s.train()
    g = torch.Generator().manual_seed(5)
    for _ in range(steps):
        _, _, loss = s.quantize(s.encoder(torch.rand(4, 3, 32, 32, generator=g)).detach(), return_loss=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return s.eval()


def test_flat_ids_round_trip_through_the_upstream_api(base):
    s = grouped(base)
    x = IO["images"]
    rec, quantized, ids = s(x)
    out = s.quantize.last_output
    assert torch.equal(ids, out.groups[:, None] * 16 + out.indices) and int(ids.max()) < 64
    assert torch.equal(s.get_code(x), ids)
    entry = s.quantize.get_codebook_entry(ids)
    assert torch.equal(entry, quantized)
    assert torch.equal(s.decoder(entry.contiguous()), rec)


def test_codes_round_trip(base):
    s = grouped(base)
    x = IO["images"]
    codes = encode_codes(s, x)
    assert codes.indices.shape == (2, 64) and codes.num_groups == 4 and codes.codebook_size == 16
    assert torch.equal(codes.groups[:, None] * 16 + codes.indices, s.get_code(x))
    assert torch.equal(decode_codes(s, codes), s(x)[0])


def test_router_training_through_return_loss(base):
    s = swap_quantizer(copy.deepcopy(base), num_groups=2, token_specific=True, router_hidden_dim=8).train()
    _, _, loss = s.quantize(s.encoder(IO["images"]).detach(), return_loss=True)
    loss.backward()
    q = swapped_quantizer(s)
    assert q.codebooks.grad is not None and float(q.codebooks.grad.abs().sum()) > 0
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in q.router.parameters())


# ---------------------------------------------------------------- persistence and loading
def test_save_load_swapped(base, tmp_path, offline_cache):
    check_swapped_round_trip(grouped(base), IO["images"], tmp_path / "run", offline_cache, "org/maskgit-swapped",
                             MaskGitVQGAN)


def test_save_swapped_writes_the_entropy_model(base, tmp_path):
    from vqswitch.entropy import FILE_NAME, EntropyModel

    s = grouped(base)
    q = swapped_quantizer(s)
    q.usage[1, :, 3] = 7  # recorded statistics
    q.group_counts[1] = 5
    save_swapped(s, tmp_path / "run")
    assert EntropyModel.load(tmp_path / "run" / FILE_NAME) == EntropyModel.from_quantizer(q)
    custom = EntropyModel(torch.ones_like(q.usage), torch.ones_like(q.group_counts), num_tokens=q.num_tokens)
    save_swapped(s, tmp_path / "run", entropy_model=custom)
    assert EntropyModel.load(tmp_path / "run" / FILE_NAME) == custom
    wrong = EntropyModel(torch.ones(q.num_groups, 1, q.codebook_size + 1, dtype=torch.long),
                         torch.ones_like(q.group_counts), num_tokens=q.num_tokens)
    with pytest.raises(ValueError, match="entropy_model is for"):
        save_swapped(s, tmp_path / "other", entropy_model=wrong)
    assert not (tmp_path / "other").exists()
    with pytest.raises(TypeError, match="entropy_model must be"):
        save_swapped(s, tmp_path / "other", entropy_model="counts")


def test_load_pretrained_by_repo_id_and_filename(tmp_path, offline_cache):
    make_cached_repo(offline_cache, "fun-research/TiTok", FIXTURE, files=["pytorch_model.bin", "config.json"])
    m = load_pretrained("fun-research/TiTok", adapter="maskgit-vqgan", filename="pytorch_model.bin")
    assert torch.equal(m.get_code(IO["images"]), IO["indices"])
    with pytest.raises(ValueError, match="unknown adapter 'maskgit'"):
        load_pretrained(FIXTURE, adapter="maskgit")


# ---------------------------------------------------------------- duck typing on an upstream-shaped instance
class UpstreamVectorQuantizer(torch.nn.Module):
    """Shaped like open-muse's VectorQuantizer: an nn.Embedding codebook, get_code, get_codebook_entry."""

    def __init__(self, weight, commitment_cost):
        super().__init__()
        self.embedding = torch.nn.Embedding.from_pretrained(weight.clone(), freeze=False)
        self.commitment_cost = commitment_cost

    def forward(self, hidden_states, return_loss=False):
        h = hidden_states.permute(0, 2, 3, 1).contiguous()
        flat = h.reshape(-1, h.shape[-1])
        w = self.embedding.weight
        d = torch.addmm(flat.pow(2).sum(1, keepdim=True) + w.pow(2).sum(1)[None], flat, w.t(), alpha=-2)
        idx = d.argmin(1)
        zq = self.embedding(idx).view(h.shape)
        return zq.permute(0, 3, 1, 2).contiguous(), idx.view(h.shape[0], -1), None

    def get_code(self, hidden_states):
        return self(hidden_states)[1]

    def get_codebook_entry(self, indices):
        B, N = indices.shape
        s = int(N ** 0.5)
        return self.embedding(indices).reshape(B, s, s, -1).permute(0, 3, 1, 2)


class UpstreamMaskGit(torch.nn.Module):
    """Shaped like open-muse's MaskGitVQGAN (a FrozenDict-like config, encoder/decoder/quantize)."""

    def __init__(self, ours):
        super().__init__()
        self.config = dict(ours.config)
        self.encoder, self.decoder = copy.deepcopy(ours.encoder), copy.deepcopy(ours.decoder)
        self.quantize = UpstreamVectorQuantizer(ours.quantize.embedding.weight.detach(), 0.25)

    def forward(self, pixel_values):
        zq, idx, _ = self.quantize(self.encoder(pixel_values))
        return self.decoder(zq), zq, idx


def test_swap_on_an_upstream_shaped_instance(base, tmp_path):
    up = UpstreamMaskGit(base)
    assert adapter_for(up).name == "maskgit-vqgan"
    ref = up(IO["images"])
    s = swap_quantizer(copy.deepcopy(up), token_specific=True)
    out = s(IO["images"])
    assert torch.equal(out[2], ref[2]) and torch.equal(out[1], ref[1]) and torch.equal(out[0], ref[0])
    r = load_swapped(save_swapped(s, tmp_path / "run"))
    assert isinstance(r, MaskGitVQGAN) and torch.equal(r(IO["images"])[0], ref[0])


# ---------------------------------------------------------------- bad input
def test_bad_input(base):
    s = grouped(base)
    with pytest.raises(ValueError, match="pixel range"):
        encode_codes(s, IO["images"] * 2 - 1)
    with pytest.raises(ValueError, match="T=64"):
        encode_codes(s, torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="square grid"):
        s.quantize.get_codebook_entry(torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, M\*K=64\)"):
        s.decode_code(torch.full((1, 64), 64))
    with pytest.raises(TypeError, match="float tensor"):
        s.quantize(torch.zeros(1, 32, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="C=32"):
        s.quantize(torch.zeros(1, 16, 8, 8))
    with pytest.raises(ValueError, match="D=32"):
        swap_quantizer(copy.deepcopy(base), SwitchableTokenQuantizer(64, 8, 16))
    m = copy.deepcopy(base)
    m.quantize = torch.nn.Module()  # has get_code / get_codebook_entry but no nn.Embedding codebook
    m.quantize.get_code = m.quantize.get_codebook_entry = lambda *a: None
    with pytest.raises(ValueError, match="not MaskGIT-VQGAN's VectorQuantizer"):
        swap_quantizer(m)


# ---------------------------------------------------------------- which family a checkpoint holds
@pytest.mark.slow  # builds a diffusers VQModel: importing diffusers is ~7 s of CPU
def test_load_pretrained_detects_the_family(tmp_path, offline_cache):
    from diffusers import VQModel

    from vqswitch.adapters.saving import detect_family

    root = Path(__file__).parent / "fixtures" / "upstream"
    assert detect_family(FIXTURE) == "maskgit-vqgan"  # open-muse config.json
    assert detect_family(FIXTURE / "pytorch_model.bin") == "maskgit-vqgan"
    assert detect_family(root / "titok_tiny") == "titok"
    assert detect_family(root / "ibq_tiny") == "ibq"
    VQModel(block_out_channels=(32,), norm_num_groups=8).save_pretrained(tmp_path / "repo" / "vqvae")
    assert detect_family(tmp_path / "repo", subfolder="vqvae") == "diffusers-vqmodel"
    assert detect_family("fun-research/TiTok") == "maskgit-vqgan"
    assert detect_family("TencentARC/IBQ-Tokenizer-8192") == "ibq"
    assert detect_family("yucornetto/tokenizer_titok_l32_imagenet") == "titok"
    make_cached_repo(offline_cache, "org/vq", tmp_path / "repo", files=["vqvae/config.json"])
    assert detect_family("org/vq", subfolder="vqvae") == "diffusers-vqmodel"
    m = load_pretrained(FIXTURE)
    assert torch.equal(m.get_code(IO["images"]), IO["indices"])
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "weights.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="pass adapter="):
        load_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="pass adapter="):
        load_pretrained("org/unknown")
    save_swapped(swap_quantizer(load_pretrained(FIXTURE)), tmp_path / "swapped")
    with pytest.raises(ValueError, match="load_swapped"):
        load_pretrained(tmp_path / "swapped")
