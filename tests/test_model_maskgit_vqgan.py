"""vqswitch's own MaskGIT-VQGAN (adapters/models/maskgit_vqgan.py): checkpoint layout, upstream
fixture parity, the upstream API, Hub loading from an offline cache, and input/argument checks."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hubcache import make_cached_repo
from vqswitch.adapters.models import maskgit_vqgan as mg
from vqswitch.adapters.models.maskgit_vqgan import (MaskGitDecoder, MaskGitEncoder, MaskGitQuantizer, MaskGitVQGAN,
                                                    SameConv2d, load_pretrained)

UPSTREAM = Path(__file__).parent / "fixtures" / "upstream"
TINY = UPSTREAM / "maskgit_vqgan_tiny"
MANIFEST = json.loads((UPSTREAM / "manifests" / "maskgit_vqgan_f16_256.json").read_text())
TINY_CONFIG = {k: v for k, v in json.loads((TINY / "config.json").read_text()).items() if not k.startswith("_")}
FLOATS = ["latent", "quantized", "quantized_straight_through", "loss", "reconstruction", "reconstruction_clamped",
          "decoded_from_indices", "decoded_from_indices_clamped", "grad_latent_loss", "grad_codebook_loss"]


def close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Same shape and dtype; |actual - expected| <= rel * max|expected| everywhere."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    atol = rel * float(expected.abs().max())
    err = float((actual.double() - expected.double()).abs().max())
    assert err <= atol, f"max |diff| {err:.3g} > {atol:.3g}"


# ---------------------------------------------------------------- layout vs the real checkpoint
def test_default_model_matches_real_checkpoint_manifest():
    with torch.device("meta"):
        model = MaskGitVQGAN()
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    want = [(k, v["shape"]) for k, v in MANIFEST["state_dict"].items()]
    assert got == want  # key for key, shape for shape, in state_dict order
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert len(got) == MANIFEST["num_tensors"]
    assert sum(v.numel() for v in model.state_dict().values()) == MANIFEST["num_elements"]
    assert model.config == MANIFEST["config"] == mg.DEFAULT_CONFIG
    assert json.loads(json.dumps(model.config)) == model.config


def test_standalone_decoder_has_the_decoder_keys():
    # TiTok's legacy pixel_decoder.* keys equal decoder.* here: the standalone class must give them.
    with torch.device("meta"):
        dec = MaskGitDecoder(128, (1, 1, 2, 2, 4), 2, 256)
        enc = MaskGitEncoder(128, [1, 1, 2, 2, 4], 2, 256, num_channels=3)
    for prefix, module in (("decoder.", dec), ("encoder.", enc)):
        want = [(k[len(prefix):], v["shape"]) for k, v in MANIFEST["state_dict"].items() if k.startswith(prefix)]
        assert [(k, list(v.shape)) for k, v in module.state_dict().items()] == want


# ---------------------------------------------------------------- upstream fixture parity
@pytest.fixture(scope="module")
def tiny():
    return load_pretrained(TINY)


@pytest.fixture(scope="module")
def io():
    return safetensors.torch.load_file(str(TINY / "io.safetensors"))


@pytest.fixture(scope="module")
def outputs(tiny, io):
    """Every io.safetensors tensor, produced by the public API named in the fixture README table."""
    images = io["images"]
    out = {}
    with torch.no_grad():
        out["latent"] = tiny.encoder(images)
        out["quantized"], out["indices"], none = tiny.quantize(out["latent"])
        assert none is None
        out["quantized_straight_through"], _, out["loss"] = tiny.quantize(out["latent"], return_loss=True)
        out["reconstruction"] = tiny.decode(out["quantized"])
        out["reconstruction_clamped"] = out["reconstruction"].clamp(0, 1)
        out["decoded_from_indices"] = tiny.decode_code(out["indices"])
        out["decoded_from_indices_clamped"] = out["decoded_from_indices"].clamp(0, 1)
    latent = out["latent"].clone().requires_grad_(True)
    weight = tiny.quantize.embedding.weight
    assert weight.grad is None
    try:
        tiny.quantize(latent, return_loss=True)[2].backward()
        out["grad_latent_loss"], out["grad_codebook_loss"] = latent.grad, weight.grad.clone()
    finally:
        weight.grad = None
    return out


def test_tiny_fixture_loads_with_its_config(tiny):
    assert isinstance(tiny, MaskGitVQGAN) and not tiny.training
    assert tiny.config == TINY_CONFIG
    ref = torch.load(TINY / "pytorch_model.bin", weights_only=True)
    assert list(tiny.state_dict()) == list(ref)  # the upstream save order too
    assert all(torch.equal(tiny.state_dict()[k], v) for k, v in ref.items())


def test_indices_exact(outputs, io):
    assert outputs["indices"].dtype == torch.int64 and torch.equal(outputs["indices"], io["indices"])


@pytest.mark.parametrize("name", FLOATS)
def test_fixture_tensor(outputs, io, name):
    close(outputs[name], io[name])


def test_quantized_are_exact_codebook_rows(tiny, outputs):
    rows = tiny.quantize.embedding.weight[outputs["indices"]]  # (B, N, C)
    assert torch.equal(outputs["quantized"].flatten(2).transpose(1, 2), rows)


def test_loss_placement_is_told_apart_by_the_gradients(io):
    # The fixture's grads fit beta on the codebook term, and not the reverse (so the test above can fail).
    h, zq, beta = io["latent"], io["quantized"], 0.25
    upstream = 2 * (h - zq) / h.numel()
    close(io["grad_latent_loss"], upstream)
    assert float((io["grad_latent_loss"] - beta * upstream).abs().max()) > 0.5 * float(upstream.abs().max())


def test_public_api_structures(tiny, io, outputs):
    images = io["images"]
    with torch.no_grad():
        enc = tiny.encode(images)
        enc_loss = tiny.encode(images, return_loss=True)
        fwd = tiny(images)
        fwd_loss = tiny(images, return_loss=True)
        code = tiny.get_code(images)
    assert isinstance(enc, tuple) and len(enc) == 2 and len(enc_loss) == 3
    assert isinstance(fwd, tuple) and len(fwd) == 3 and len(fwd_loss) == 4
    assert torch.equal(enc[0], outputs["quantized"]) and torch.equal(enc[1], outputs["indices"])
    assert torch.equal(enc_loss[0], outputs["quantized_straight_through"]) and enc_loss[2].dim() == 0
    assert torch.equal(fwd[0], outputs["reconstruction"]) and torch.equal(fwd[1], outputs["quantized"])
    assert torch.equal(fwd[2], outputs["indices"]) and torch.equal(code, outputs["indices"])
    assert torch.equal(fwd_loss[3], outputs["loss"])
    assert fwd[0].shape == images.shape and code.shape == (2, 64) and code.dtype == torch.int64


def test_codebook_entry_layout_is_upstreams(tiny, outputs):
    """Kept deliberately: a channels-last view, so decode_code matches upstream's decode_code; a
    contiguous copy decodes exactly like the forward pass's quantized states."""
    entry = tiny.quantize.get_codebook_entry(outputs["indices"])
    assert entry.shape == (2, 32, 8, 8) and not entry.is_contiguous()
    assert entry.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(entry, outputs["quantized"])
    with torch.no_grad():
        assert torch.equal(tiny.decode(entry.contiguous()), outputs["reconstruction"])


def test_every_code_path_goes_through_model_quantize(tiny, io, outputs):
    """A shim with the quantizer's call signatures and no ``embedding`` replaces model.quantize."""

    class Shim(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, []

        def forward(self, hidden_states, return_loss=False):
            self.calls.append("forward")
            return self.inner(hidden_states, return_loss)

        def get_code(self, hidden_states):
            self.calls.append("get_code")
            return self.inner.get_code(hidden_states)

        def get_codebook_entry(self, indices):
            self.calls.append("get_codebook_entry")
            return self.inner.get_codebook_entry(indices)

    original = tiny.quantize
    shim = Shim(original)
    tiny.quantize = shim
    try:
        with torch.no_grad():
            assert torch.equal(tiny.encode(io["images"])[1], outputs["indices"])
            assert torch.equal(tiny.get_code(io["images"]), outputs["indices"])
            assert torch.equal(tiny.decode_code(outputs["indices"]), outputs["decoded_from_indices"])
            assert torch.equal(tiny(io["images"])[0], outputs["reconstruction"])
    finally:
        tiny.quantize = original
    assert shim.calls == ["forward", "get_code", "get_codebook_entry", "forward"]


def test_maskgit_decoder_reproduces_titok_legacy_pixel_decoder():
    """Second fixture for MaskGitDecoder (5 levels): TiTok's stage-2 soft pixel-codebook decode."""
    folder = UPSTREAM / "titok_tiny"
    cfg = json.loads((folder / "overrides.json").read_text())["pixel_decoder_config"]
    weights = safetensors.torch.load_file(str(folder / "model.safetensors"))
    io = safetensors.torch.load_file(str(folder / "io.safetensors"))
    dec = MaskGitDecoder(cfg["hidden_channels"], cfg["channel_mult"], cfg["num_res_blocks"], cfg["z_channels"],
                         cfg["num_channels"], cfg["dropout"]).eval()
    mg.load_state_dict_strict(dec, {k[len("pixel_decoder."):]: v for k, v in weights.items()
                                    if k.startswith("pixel_decoder.")})
    soft = torch.einsum("nchw,cd->ndhw", io["decoder_logits"].softmax(dim=1),
                        weights["pixel_quantize.embedding.weight"])
    with torch.no_grad():
        close(dec(soft), io["reconstruction"])


# ---------------------------------------------------------------- loading
def test_load_from_a_file_path_uses_the_config_beside_it(tiny):
    model = load_pretrained(TINY / "pytorch_model.bin")
    assert model.config == tiny.config and not model.training


def test_explicit_config_wins():
    with pytest.raises(ValueError, match=r"missing key\(s\)") as err:
        load_pretrained(TINY, config={**TINY_CONFIG, "num_res_blocks": 2})
    assert "decoder.mid.1.norm2.weight" in str(err.value)  # a block the tiny checkpoint lacks


def test_load_by_hub_repo_id_from_offline_cache(offline_cache, tmp_path, io):
    # fun-research/TiTok layout: the default file name and no config.json -> config= is needed.
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    shutil.copy(TINY / "pytorch_model.bin", ckpt / mg.DEFAULT_FILENAME)
    make_cached_repo(offline_cache, "fun-research/TiTok", ckpt, files=[mg.DEFAULT_FILENAME])
    model = load_pretrained(config=TINY_CONFIG)
    with torch.no_grad():
        assert torch.equal(model.get_code(io["images"]), io["indices"])
    with pytest.raises(ValueError, match="missing key"):  # no config.json in the repo: the real config
        load_pretrained()


def test_load_by_hub_repo_id_reads_open_muse_config(offline_cache, io):
    make_cached_repo(offline_cache, "someone/maskgit-tiny", TINY, files=["config.json", "pytorch_model.bin"])
    model = load_pretrained("someone/maskgit-tiny", "pytorch_model.bin")
    assert model.config == TINY_CONFIG
    with torch.no_grad():
        assert torch.equal(model.get_code(io["images"]), io["indices"])
    with pytest.raises(FileNotFoundError):  # offline, not in the cache
        load_pretrained("someone/other-repo", "pytorch_model.bin")


def test_a_foreign_config_json_is_ignored(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(TINY / "pytorch_model.bin", folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"_class_name": "SomethingElse", "width": 3}))
    with pytest.raises(ValueError, match="missing key"):  # fell back to the real config
        load_pretrained(folder)
    assert load_pretrained(folder, config=TINY_CONFIG).config == TINY_CONFIG


@pytest.mark.parametrize("edit, needle", [
    (lambda sd: sd.pop("decoder.conv_out.bias"), "decoder.conv_out.bias"),
    (lambda sd: sd.__setitem__("quantize.extra", torch.zeros(1)), "quantize.extra"),
    (lambda sd: sd.__setitem__("quantize.embedding.weight", torch.zeros(65, 32)), "quantize.embedding.weight"),
    (lambda sd: sd.__setitem__("encoder.down.1.block.0.nin_shortcut.weight", torch.zeros(64, 32, 1, 1)),
     "encoder.down.1.block.0.nin_shortcut.weight"),
])
def test_bad_checkpoint_names_the_key(tmp_path, edit, needle):
    sd = torch.load(TINY / "pytorch_model.bin", weights_only=True)
    edit(sd)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    shutil.copy(TINY / "config.json", tmp_path / "config.json")
    with pytest.raises(ValueError, match="does not fit MaskGitVQGAN") as err:
        load_pretrained(tmp_path)
    assert needle in str(err.value)


# ---------------------------------------------------------------- configuration
def test_config_round_trip_and_metadata_keys():
    model = MaskGitVQGAN.from_config({**TINY_CONFIG, "channel_mult": (1, 2, 2), "_class_name": "MaskGitVQGAN",
                                      "_version": "0.0.1"})
    assert model.config == TINY_CONFIG and isinstance(model.config["channel_mult"], list)
    assert MaskGitVQGAN.from_config(model.config).config == model.config
    assert model.downsample_factor == 4


@pytest.mark.parametrize("config, error, needle", [
    ({"bogus": 1}, ValueError, "bogus"),
    ({"_class_name": "VQGANModel"}, ValueError, "VQGANModel"),
    ([("resolution", 32)], TypeError, "dict"),
])
def test_from_config_rejects(config, error, needle):
    with pytest.raises(error, match=needle):
        MaskGitVQGAN.from_config(config)


@pytest.mark.parametrize("kwargs, error, needle", [
    ({"hidden_channels": 16}, ValueError, "hidden_channels"),
    ({"hidden_channels": 32, "channel_mult": [1, 1.5]}, TypeError, r"channel_mult\[1\]"),
    ({"channel_mult": []}, ValueError, "channel_mult"),
    ({"channel_mult": "12"}, TypeError, "channel_mult"),
    ({"num_res_blocks": 0}, ValueError, "num_res_blocks"),
    ({"resolution": 100}, ValueError, "resolution"),
    ({"resolution": True}, TypeError, "resolution"),
    ({"quantized_embed_dim": 64}, ValueError, "quantized_embed_dim"),
    ({"num_embeddings": 0}, ValueError, "num_embeddings"),
    ({"dropout": 1.0}, ValueError, "dropout"),
    ({"dropout": "0"}, TypeError, "dropout"),
    ({"commitment_cost": -0.1}, ValueError, "commitment_cost"),
    ({"commitment_cost": float("nan")}, ValueError, "commitment_cost"),
    ({"resample_with_conv": 1}, TypeError, "resample_with_conv"),
    ({"attn_resolutions": 16}, TypeError, "attn_resolutions"),
    ({"num_channels": 0}, ValueError, "num_channels"),
])
def test_constructor_rejects(kwargs, error, needle):
    with pytest.raises(error, match=needle), torch.device("meta"):
        MaskGitVQGAN(**kwargs)


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("call", ["encode", "get_code", "forward"])
@pytest.mark.parametrize("pixels, error, needle", [
    ([[0.0]], TypeError, "torch.Tensor"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.int64), TypeError, "floating-point"),
    (torch.zeros(3, 32, 32), ValueError, r"must have shape \(B, 3, H, W\)"),
    (torch.zeros(1, 1, 32, 32), ValueError, r"must have shape \(B, 3, H, W\)"),
    (torch.zeros(1, 3, 30, 32), ValueError, "multiples of the downsampling factor 4"),
    (torch.zeros(1, 3, 0, 0), ValueError, "no empty dimension"),
])
def test_bad_pixel_values(tiny, call, pixels, error, needle):
    with pytest.raises(error, match=needle):
        getattr(tiny, call)(pixels)


@pytest.mark.parametrize("indices, error, needle", [
    (torch.zeros(1, 64), TypeError, "integer"),
    (torch.zeros(64, dtype=torch.int64), ValueError, "2-D"),
    (torch.zeros(1, 63, dtype=torch.int64), ValueError, "square"),
    (torch.full((1, 64), 64, dtype=torch.int64), ValueError, r"\[0, 64\)"),
    (torch.full((1, 4), -1, dtype=torch.int64), ValueError, r"\[0, 64\)"),
])
def test_bad_indices(tiny, indices, error, needle):
    with pytest.raises(error, match=needle):
        tiny.decode_code(indices)


def test_bad_quantizer_and_decoder_inputs(tiny):
    with pytest.raises(ValueError, match=r"hidden_states must have shape \(B, 32, H, W\)"):
        tiny.quantize(torch.zeros(1, 31, 2, 2))
    with pytest.raises(ValueError, match="quantized_states"):
        tiny.decode(torch.zeros(1, 16, 2, 2))
    with pytest.raises(TypeError, match="floating-point"):
        tiny.quantize.get_code(torch.zeros(1, 32, 2, 2, dtype=torch.int32))


# ---------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 40), c=st.integers(1, 8), b=st.integers(1, 3), side=st.integers(1, 4),
       beta=st.floats(0.0, 2.0), seed=st.integers(0, 2 ** 16))
def test_quantizer_properties(k, c, b, side, beta, seed):
    gen = torch.Generator().manual_seed(seed)
    q = MaskGitQuantizer(k, c, commitment_cost=beta)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.randn(k, c, generator=gen))
    h = torch.randn(b, c, side, side, generator=gen)
    zq, idx, loss = q(h)
    assert loss is None and idx.shape == (b, side * side) and idx.dtype == torch.int64 and zq.is_contiguous()
    flat = h.permute(0, 2, 3, 1).reshape(-1, c).double()
    d = torch.cdist(flat, q.embedding.weight.double()) ** 2
    chosen = d.gather(1, idx.reshape(-1, 1)).squeeze(1)
    assert torch.all(chosen <= d.min(1).values + 1e-4 * (1 + d.min(1).values))  # a nearest code
    assert torch.equal(zq, q.embedding.weight[idx].reshape(b, side, side, c).permute(0, 3, 1, 2))
    assert torch.equal(q.get_code(h), idx) and torch.equal(q.get_codebook_entry(idx), zq)

    hg = h.clone().requires_grad_(True)
    zst, idx2, loss = q(hg, return_loss=True)
    assert torch.equal(idx2, idx)
    loss.backward()
    mse = ((zq.detach() - h) ** 2).mean()
    assert math.isclose(float(loss.detach()), (1 + beta) * float(mse), rel_tol=1e-5, abs_tol=1e-7)
    torch.testing.assert_close(hg.grad, 2 * (h - zq) / h.numel())  # no beta on the encoder side
    expected = torch.zeros(k, c).index_add_(0, idx.reshape(-1), (beta * 2 * (zq - h) / h.numel())
                                            .permute(0, 2, 3, 1).reshape(-1, c))
    torch.testing.assert_close(q.embedding.weight.grad, expected)
    torch.testing.assert_close(zst, zq)  # straight-through value


@settings(max_examples=30, deadline=None)
@given(size=st.tuples(st.integers(1, 9), st.integers(1, 9)), k=st.sampled_from([1, 2, 3, 4, 5]),
       stride=st.integers(1, 3))
@example(size=(4, 5), k=2, stride=1)
@example(size=(5, 4), k=4, stride=1)
def test_same_conv_is_tf_same(size, k, stride):
    conv = SameConv2d(2, 3, k, stride=stride)
    x = torch.randn(1, 2, *size)
    y = conv(x)
    assert y.shape[-2:] == (math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    if stride == 1 and k % 2 == 1:  # symmetric: equals an ordinary padded conv
        torch.testing.assert_close(y, F.conv2d(x, conv.weight, conv.bias, padding=k // 2))
    if stride == 1 and k % 2 == 0:  # TF puts the odd extra row/column after
        ref = F.conv2d(F.pad(x, [(k - 1) // 2, k // 2, (k - 1) // 2, k // 2]), conv.weight, conv.bias)
        torch.testing.assert_close(y, ref)


@settings(max_examples=6, deadline=None)
@given(hw=st.tuples(st.integers(1, 3), st.integers(1, 3)), batch=st.integers(1, 2))
def test_any_multiple_of_the_factor_round_trips_shapes(tiny, hw, batch):
    x = torch.rand(batch, 3, 4 * hw[0], 4 * hw[1])
    with torch.no_grad():
        rec, zq, idx = tiny(x)
    assert rec.shape == x.shape and zq.shape == (batch, 32, hw[0], hw[1]) and idx.shape == (batch, hw[0] * hw[1])
