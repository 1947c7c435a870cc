"""The generic adapter (vqswitch.adapters.describe_model): a user's own VQ model, real and tiny.

The real one is the pretrained VQ-VAE of tests/fixtures/vqvae-cifar, described by examples/vqvae_cifar.py (user
code, imported by path); the tiny ones are defined here: a grid model whose codebook is a bare tensor attribute,
and a (B, N, D) sequence model whose codebook is an nn.Parameter.
"""
import hashlib
import importlib.util
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vqswitch.adapters import (adapter_for, decode_codes, describe_model, encode_codes, encode_latents, load_swapped,
                               quantizer_from_model, save_swapped, swap_quantizer, swapped_quantizer)
from vqswitch.adapters.generic import GRID, SEQUENCE, GenericQuantizerShim, latents_to_tokens, tokens_to_latents
from vqswitch.data import ProceduralFaces

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "vqvae-cifar"


def _example():
    spec = importlib.util.spec_from_file_location("vqvae_cifar_example", ROOT / "examples" / "vqvae_cifar.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EX = _example()


def faces(n=4, size=64, seed=0):
    return ProceduralFaces(n, size, seed=seed).get_batch(range(n)) - 0.5  # the model's x/255 - 0.5 range


@pytest.fixture(scope="module")
def vqvae():
    return EX.build(FIXTURE / "vqvae.pt")


def fresh(vqvae):
    model = EX.VQVAE()
    model.load_state_dict(vqvae.state_dict())
    return model.eval()


# ---------------------------------------------------------------- tiny user models
class BareTensorVQ(nn.Module):
    def __init__(self, K=16, D=4):
        super().__init__()
        self.codebook = torch.randn(K, D, generator=torch.Generator().manual_seed(1))  # neither parameter nor buffer

    def forward(self, z):
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        idx = torch.cdist(flat.double(), self.codebook.double()).argmin(1)
        q = self.codebook[idx].view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
        return z + (q - z).detach()


class TinyGrid(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 4, stride=4)
        self.quant = BareTensorVQ()
        self.dec = nn.ConvTranspose2d(4, 3, 4, stride=4)

    def forward(self, x):
        return self.dec(self.quant(self.enc(x)))


class SeqVQ(nn.Module):
    def __init__(self, K=32, D=8):
        super().__init__()
        self.codes = nn.Parameter(torch.randn(K, D, generator=torch.Generator().manual_seed(2)))
        self.proj = nn.Linear(D, D)  # a second 2-D tensor: auto-detection must be told which one is the codebook

    def forward(self, z):
        idx = torch.cdist(z.double(), self.codes.double()[None]).argmin(-1)
        q = self.codes[idx]
        return z + (q - z).detach(), idx


class TinySeq(nn.Module):
    """16x16 images -> 16 patches of 4x4 -> tokens (B, 16, 8)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(48, 8)
        self.vq = nn.ModuleDict({"inner": SeqVQ()})
        self.decoder = nn.Linear(8, 48)

    def tokens(self, x):
        return self.encoder(F.unfold(x, 4, stride=4).transpose(1, 2))

    def pixels(self, z):
        return F.fold(self.decoder(z).transpose(1, 2), (16, 16), 4, stride=4)

    def forward(self, x):
        z_q, _ = self.vq["inner"](self.tokens(x))
        return self.pixels(z_q)


describe_model(TinyGrid, quantizer="quant", encode=lambda m, x: m.enc(x), decode=lambda m, z: m.dec(z),
               pixel_range=(0, 1), layout="(B, D, H, W)", image_size=16, decoder="dec")
describe_model(TinySeq, quantizer="vq.inner", codebook="codes", encode=lambda m, x: m.tokens(x),
               decode=lambda m, z: m.pixels(z), pixel_range=(0.0, 1.0), layout="(B, N, D)", image_size=(16, 16),
               output=lambda z_q, loss, indices: (z_q, indices))


def tiny(cls):
    torch.manual_seed(0)
    return cls().eval()


# ---------------------------------------------------------------- the fixture and the drop-in guarantee
def test_fixture_is_the_published_file():
    digest = hashlib.sha256((FIXTURE / "vqvae.pt").read_bytes()).hexdigest()
    assert digest == "5ffe6674dd274e2bd0578acad537707138d2e695a42cda4c21f098df2720b8bd"
    assert digest in (FIXTURE / "README.md").read_text() and "MIT" in (FIXTURE / "LICENSE").read_text()


@torch.no_grad()
def test_real_vqvae_drop_in_identical_indices_and_reconstructions(vqvae):
    x = faces(6)
    z = vqvae.encode(x)
    ref_zq, ref_loss, ref_idx = vqvae.vq_vae(z)
    ref_recon, ref_loss2 = vqvae(x)
    model = swap_quantizer(fresh(vqvae))  # M=1, token-shared, the model's own codebook
    assert isinstance(model.vq_vae, GenericQuantizerShim) and adapter_for(model).name == "generic:vqvae-cifar"
    codes = encode_codes(model, x)
    assert codes.indices.shape == (6, 256) and torch.equal(codes.indices.view(6, 16, 16), ref_idx)
    zq, loss, ids = model.vq_vae(z)  # the user's forward() unpacks this structure (output=)
    assert torch.equal(zq, ref_zq) and torch.equal(ids, ref_idx) and torch.equal(loss, ref_loss)
    recon, loss2 = model(x)
    assert torch.equal(recon, ref_recon) and torch.equal(loss2, ref_loss2)
    # decoding codes = the original decoder on the original codebook rows at the original indices
    rows = vqvae.vq_vae.codebook(ref_idx).permute(0, 3, 1, 2).contiguous()
    assert torch.equal(decode_codes(model, codes), vqvae.decoder(rows))
    assert torch.equal(encode_latents(model, x), z.permute(0, 2, 3, 1).reshape(6, 256, 128))


@pytest.mark.parametrize("cls", [TinyGrid, TinySeq])
@torch.no_grad()
def test_tiny_models_drop_in(cls):
    base = tiny(cls)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    ref = base(x)
    z = encode_latents(base, x)
    weight = adapter_for(base).codebook(base)
    want = torch.cdist(z.double(), weight.double()[None]).argmin(-1)
    model = swap_quantizer(base)
    assert torch.equal(encode_codes(model, x).indices, want)
    assert torch.equal(model(x), ref)
    assert torch.equal(decode_codes(model, encode_codes(model, x)), adapter_for(model).decode(model, (
        tokens_to_latents(weight[want], GRID, (4, 4)) if cls is TinyGrid else weight[want])))


def test_auto_detection_and_explicit_codebooks():
    assert adapter_for(tiny(TinyGrid)).codebook(tiny(TinyGrid)).shape == (16, 4)  # the bare tensor attribute
    assert torch.equal(adapter_for(tiny(TinySeq)).codebook(tiny(TinySeq)), tiny(TinySeq).vq["inner"].codes)

    class Ambiguous(TinySeq):
        pass

    describe_model(Ambiguous, quantizer="vq.inner", encode=lambda m, x: m.tokens(x), decode=lambda m, z: m.pixels(z),
                   pixel_range=(0, 1), layout="(B, N, D)", image_size=16)
    with pytest.raises(ValueError, match=r"several \(K, D\) tensors.*codebook="):
        swap_quantizer(Ambiguous())


# ---------------------------------------------------------------- any grid size, and the shim's gradients
def test_token_shared_takes_any_size_token_specific_refuses(vqvae):
    model = swap_quantizer(fresh(vqvae), num_groups=2, codebook_size=32)
    assert swapped_quantizer(model).num_tokens == 256
    x = faces(2, 32)  # an 8x8 grid, not the 16x16 the quantizer was built for
    with torch.no_grad():
        recon, loss = model(x)
        z = model.encode(x)
        _, _, ids = model.vq_vae(z)
    assert recon.shape == x.shape and ids.shape == (2, 8, 8) and torch.isfinite(loss)
    q = swapped_quantizer(model)
    books = q.codebooks[:, 0]  # (M, K, D)
    tokens = z.permute(0, 2, 3, 1).reshape(2, 64, 128)
    d = torch.cdist(tokens.double()[:, None], books.double()[None])  # (B, M, T, K)
    best = d.min(-1).values.pow(2).sum(-1).argmin(-1)
    want = d.argmin(-1)[torch.arange(2), best]
    assert torch.equal(ids.view(2, 64), best[:, None] * 32 + want)
    swap_quantizer(model, q.to_token_specific())
    with pytest.raises(ValueError, match="token-specific quantizer has one codebook per position for T=256"):
        model(x)
    assert model(faces(1))[0].shape == (1, 3, 64, 64)



def test_codes_at_another_non_square_size_decode_with_image_size(vqvae):
    """The drop-in guarantee at a 48x32 image (a 12x8 grid): the M=1 own-codebook swap's codes decode to what the
    original model reconstructs, once decode_codes is told the image size."""
    original = fresh(vqvae)
    model = swap_quantizer(fresh(vqvae))
    x = faces(2, 64)[..., :48, :32].contiguous()
    codes = encode_codes(model, x)
    assert codes.indices.shape == (2, 96)
    with torch.no_grad():
        want_ids = original.vq_vae(original.encode(x))[2].reshape(2, -1)
        want = original.decoder(original.vq_vae.codebook.weight[want_ids].reshape(2, 12, 8, -1).permute(0, 3, 1, 2))
    assert torch.equal(codes.indices, want_ids)
    torch.testing.assert_close(decode_codes(model, codes, image_size=(48, 32)), want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="cannot tell the latent grid of 96 tokens"):
        decode_codes(model, codes)
    with pytest.raises(ValueError, match="cannot tell the latent grid"):
        decode_codes(model, codes, image_size=(32, 32))

def test_straight_through_gradients_and_router_loss():
    model = swap_quantizer(tiny(TinySeq), num_groups=2, codebook_size=8).train()
    z = torch.randn(5, 16, 8, requires_grad=True)
    zq, ids = model.vq["inner"](z)
    (zq * torch.arange(8.0)).sum().backward()
    assert torch.equal(z.grad, torch.arange(8.0).expand(5, 16, 8))  # the identity to z
    shim = model.vq["inner"]
    assert shim.last_loss is not None and shim.last_output.router_probs.shape == (5, 2)
    shim.last_loss.backward()
    assert shim.quantizer.codebooks.grad.abs().sum() > 0 and shim.quantizer.router.head.weight.grad is not None
    assert ids.shape == (5, 16) and int(ids.max()) < 16


# ---------------------------------------------------------------- training, codec, saving
@pytest.mark.slow  # runs the three fine-tuning stages
def test_finetuner_three_stages(vqvae, tmp_path):
    from vqswitch.train import FinetuneConfig, Finetuner, StageConfig

    data = faces(8)
    model = swap_quantizer(fresh(vqvae), num_groups=2, codebook_size=16, init="latents",
                           latents=encode_latents(vqvae, data).detach())
    decoder_before = [p.clone() for p in model.decoder.parameters()]
    encoder_before = [p.clone() for p in model.encoder.parameters()]
    config = FinetuneConfig(stage1=StageConfig(steps=2, lr=1e-3, batch_size=4),
                            stage2=StageConfig(steps=2, lr=1e-3, batch_size=4),
                            stage3=StageConfig(steps=1, lr=1e-4, batch_size=4), progress=False)
    out = Finetuner(model, data, tmp_path / "run", config).run()
    q = swapped_quantizer(out)
    assert q.token_specific and q.num_groups == 2 and int(q.usage.sum()) == 8 * 256
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, out.decoder.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, out.encoder.parameters()))
    again = load_swapped(tmp_path / "run" / "checkpoints" / "stage3" / "model")  # built from the described class
    assert torch.equal(decode_codes(again, encode_codes(again, data)), decode_codes(out, encode_codes(out, data)))


def test_codec_round_trip(vqvae, tmp_path):
    from vqswitch.codec import compress, decompress, load_codec_model

    model = swap_quantizer(fresh(vqvae), num_groups=2, codebook_size=32)
    x = faces(3)
    data = compress(model, x, mode="fixed")
    decoded = decompress(data, model)
    assert decoded.codes == encode_codes(model, x)
    assert torch.equal(decoded.images, decode_codes(model, encode_codes(model, x)).clamp(-0.5, 0.5))
    save_swapped(model, tmp_path / "m")
    codec = load_codec_model(tmp_path / "m")
    assert torch.equal(decompress(compress(codec, x), codec).images, decoded.images)


def test_save_load_with_class_instance_and_refusals(vqvae, tmp_path):
    model = swap_quantizer(fresh(vqvae), num_groups=2, codebook_size=32, token_specific=True)
    save_swapped(model, tmp_path / "m")
    x = faces(2)
    want = decode_codes(model, encode_codes(model, x))
    by_class = load_swapped(tmp_path / "m", model=EX.VQVAE)
    target = EX.VQVAE()  # unswapped, random weights: replaced in place
    by_instance = load_swapped(tmp_path / "m", model=target)
    assert by_instance is target
    for loaded in (load_swapped(tmp_path / "m"), by_class, by_instance):
        assert torch.equal(decode_codes(loaded, encode_codes(loaded, x)), want)
        assert swapped_quantizer(loaded).token_specific and not loaded.training
    with pytest.raises(ValueError, match=r"holds a 'generic:vqvae-cifar' model, but model= is TinyGrid"):
        load_swapped(tmp_path / "m", model=TinyGrid)
    with pytest.raises(ValueError, match=r"holds a 'generic:vqvae-cifar' model, but model= is a TinySeq"):
        load_swapped(tmp_path / "m", model=TinySeq())
    with pytest.raises(TypeError, match="model must be None, a model class or an nn.Module"):
        load_swapped(tmp_path / "m", model="VQVAE")
    narrow = EX.VQVAE()
    narrow.pre_vq_conv = nn.Conv2d(128, 128, 3)
    with pytest.raises(ValueError, match=r"does not fit the saved VQVAE.*pre_vq_conv.weight is \[128, 128, 3, 3\]"):
        load_swapped(tmp_path / "m", model=narrow)


# ---------------------------------------------------------------- clear errors
def test_clear_errors(vqvae):
    kw = dict(encode=lambda m, x: m.enc(x), decode=lambda m, z: m.dec(z), image_size=16)

    class BadPath(TinyGrid):
        pass

    describe_model(BadPath, quantizer="nope.quant", pixel_range=(0, 1), layout="(B, D, H, W)", **kw)
    with pytest.raises(ValueError, match=r"no module at quantizer path 'nope.quant' \(its modules: \['enc', 'quant'"):
        swap_quantizer(BadPath())

    class NoCodebook(TinyGrid):
        def __init__(self):
            super().__init__()
            self.quant = nn.ReLU()

    describe_model(NoCodebook, quantizer="quant", pixel_range=(0, 1), layout="(B, D, H, W)", **kw)
    with pytest.raises(ValueError, match="no codebook found in the quantizer at 'quant' \\(ReLU\\)"):
        swap_quantizer(NoCodebook())
    with pytest.raises(ValueError, match=re.escape("layout must be '(B, D, H, W)'")):
        describe_model(TinyGrid, quantizer="quant", pixel_range=(0, 1), layout="(B, H, W, D)", **kw)
    with pytest.raises(TypeError, match=r"pixel_range must be a pair \(low, high\)"):
        describe_model(TinyGrid, quantizer="quant", pixel_range="0-1", layout=GRID, **kw)
    with pytest.raises(ValueError, match="pixel_range must be finite with low < high"):
        describe_model(TinyGrid, quantizer="quant", pixel_range=(1, 0), layout=GRID, **kw)
    with pytest.raises(ValueError, match="quantizer must be an attribute path"):
        describe_model(TinyGrid, quantizer="quant[0]", pixel_range=(0, 1), layout=GRID, **kw)
    with pytest.raises(TypeError, match="model_class must be a subclass of torch.nn.Module"):
        describe_model(TinyGrid(), quantizer="quant", pixel_range=(0, 1), layout=GRID, **kw)
    with pytest.raises(ValueError, match="'generic:vqvae-cifar'|already describes VQVAE"):
        describe_model(TinyGrid, name="vqvae-cifar", quantizer="quant", pixel_range=(0, 1), layout=GRID, **kw)
    model = swap_quantizer(fresh(vqvae))
    with pytest.raises(TypeError, match=re.escape("z must be a float tensor (B, D, H, W)")):
        model.vq_vae(torch.zeros(2, 128, 4))
    with pytest.raises(ValueError, match="with D=128 channels"):
        model.vq_vae(torch.zeros(2, 64, 4, 4))
    with pytest.raises(ValueError, match="must lie in the pixel range"):
        encode_codes(model, faces(1) + 0.5)  # [0, 1] images given to a [-0.5, 0.5] model
    with pytest.raises(ValueError, match="already swapped"):
        quantizer_from_model(model)


# ---------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None)
@given(B=st.integers(0, 3), D=st.integers(1, 5), H=st.integers(1, 6), W=st.integers(1, 6))
def test_layout_round_trip(B, D, H, W):
    z = torch.randn(B, D, H, W)
    tokens, spatial = latents_to_tokens(z, GRID, D)
    assert tokens.shape == (B, H * W, D) and torch.equal(tokens_to_latents(tokens, GRID, spatial), z)
    assert torch.equal(tokens[:, W + 0 if H > 1 else 0], z[:, :, 1 if H > 1 else 0, 0])  # row-major over (H, W)
    seq = torch.randn(B, H, D)
    assert torch.equal(tokens_to_latents(*latents_to_tokens(seq, SEQUENCE, D)[:1], SEQUENCE, (H,)), seq)


@settings(max_examples=15, deadline=None)
@given(side=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_shared_shim_picks_the_nearest_code_at_any_size(side, seed):
    model = swap_quantizer(tiny(TinyGrid))
    z = torch.randn(2, 4, side, side, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        zq = model.quant(z)
    book = model.quant.quantizer.codebooks[0, 0]
    tokens = z.permute(0, 2, 3, 1).reshape(-1, 4)
    want = book[torch.cdist(tokens.double(), book.double()).argmin(1)]
    assert torch.allclose(zq.permute(0, 2, 3, 1).reshape(-1, 4), want, atol=1e-6)


# ---------------------------------------------------------------- the README section
@pytest.mark.slow  # the README example end to end
def test_readme_section_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python example=vqvae-cifar\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "fixtures").symlink_to(ROOT / "tests" / "fixtures")
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "vqvae-faces" / "config.json").is_file()
    describe = re.findall(r"```python describe=vqvae-cifar\n(.*?)```", text, flags=re.S)
    assert len(describe) == 1
    adapter = eval(compile(describe[0], "README.md", "eval"), {"describe_model": describe_model, "VQVAE": EX.VQVAE})
    assert adapter.name == "generic:vqvae-cifar" and adapter.layout == GRID and adapter.pixel_range == (-0.5, 0.5)
