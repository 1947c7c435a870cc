"""vqswitch's own TiTok (vqswitch.adapters.models.titok) against the upstream fixtures and manifests.

Fixtures: tests/fixtures/upstream/{titok_tiny,titok_vq8k_tiny}/ (upstream-written checkpoints and
io.safetensors) and manifests/titok_*.json (state_dict keys and shapes of the published checkpoints);
see tests/fixtures/upstream/README.md.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn as nn
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hubcache import make_cached_repo
from vqswitch.adapters.models.titok import (UPSTREAM_MODEL_SIZES, TiTok, TiTokQuantizer,
                                            load_pretrained)

UPSTREAM = Path(__file__).parent / "fixtures" / "upstream"
FIXTURES = {"titok_tiny": UPSTREAM / "titok_tiny", "titok_vq8k_tiny": UPSTREAM / "titok_vq8k_tiny"}
MANIFESTS = ["titok_s128", "titok_l32", "titok_sl256_vq8k"]
MODEL_SEEDS = {"titok_tiny": 1001, "titok_vq8k_tiny": 2001}  # README "Seeds"
REL_TOL = 1e-5  # of the stored tensor's largest magnitude (README: thread-count spread <= 1.05e-05 absolute)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def io_tensors(name: str) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(FIXTURES[name] / "io.safetensors"))


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str) -> float:
    """Same shape and dtype; max |got - want| <= REL_TOL * max |want|. Returns the deviation."""
    assert isinstance(got, torch.Tensor), what
    assert got.shape == want.shape, f"{what}: shape {list(got.shape)} != {list(want.shape)}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    dev = (got.detach().double() - want.double()).abs().max().item()
    tol = REL_TOL * want.double().abs().max().item()
    assert dev <= tol, f"{what}: max |delta| {dev:.3g} > {tol:.3g}"
    return dev


@pytest.fixture(scope="module")
def loaded():
    """name -> (model loaded from the fixture folder, io tensors)."""
    return {name: (load_pretrained(folder), io_tensors(name)) for name, folder in FIXTURES.items()}


# --------------------------------------------------------------------------------------------
# key / shape parity with the published checkpoints
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_state_dict_key_for_key(name):
    manifest = read_json(UPSTREAM / "manifests" / f"{name}.json")
    with torch.device("meta"):
        model = TiTok.from_config(manifest["config"])
    state = model.state_dict()
    got = [(key, list(t.shape), str(t.dtype).replace("torch.", "")) for key, t in state.items()]
    want = [(key, v["shape"], v["dtype"]) for key, v in manifest["state_dict"].items()]
    assert got == want  # names, order, shapes and dtypes
    assert len(state) == manifest["num_tensors"]
    assert sum(t.numel() for t in state.values()) == manifest["num_elements"]
    # the saved config reloads into the same architecture; it spells out upstream's defaults
    expected = copy.deepcopy(manifest["config"])
    expected["model"]["vq_model"].setdefault("is_legacy", True)
    assert model.config == expected
    with torch.device("meta"):
        again = TiTok.from_config(json.loads(json.dumps(model.config)), model.overrides)
    assert [(k, t.shape) for k, t in again.state_dict().items()] == [(k, t.shape) for k, t in state.items()]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_config_and_overrides_round_trip(loaded, name):
    model, _ = loaded[name]
    assert model.config == read_json(FIXTURES[name] / "config.json")
    overrides = {k: v for k, v in read_json(FIXTURES[name] / "overrides.json").items() if not k.startswith("_")}
    assert model.overrides == overrides
    assert not model.training


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_seeded_build_draws_upstream_initial_values(name):
    """Modules are built in upstream's order: the same seed gives the free tensors upstream drew."""
    stored = safetensors.torch.load_file(str(FIXTURES[name] / "model.safetensors"))
    torch.manual_seed(MODEL_SEEDS[name])
    model = TiTok.from_config(read_json(FIXTURES[name] / "config.json"), read_json(FIXTURES[name] / "overrides.json"))
    free = [k for k in model.state_dict() if k.rsplit(".", 1)[-1] in
            ("latent_tokens", "class_embedding", "positional_embedding", "latent_token_positional_embedding",
             "mask_token")]
    assert len(free) == 8
    for key in free:
        assert torch.equal(model.state_dict()[key], stored[key]), key


# --------------------------------------------------------------------------------------------
# numerical parity with the upstream fixtures
# --------------------------------------------------------------------------------------------

def run_api(model: TiTok, io: dict) -> dict[str, torch.Tensor]:
    """Every io.safetensors tensor, produced by the API call the fixture README names."""
    images, latent, quantized, indices = io["images"], io["latent"], io["quantized"], io["indices"]
    out = {}
    with torch.no_grad():
        out["latent"] = model.encode_latent(images)  # TiTokEncoder output
        z_q, result = model.quantize(latent)  # model.quantize(latent)
        out["quantized"] = z_q
        out["indices"] = result["min_encoding_indices"]
        for key in ("quantizer_loss", "commitment_loss", "codebook_loss"):
            out[key] = result[key]
        out["encode_quantized"], encode_result = model.encode(images)  # = TiTok.encode(images)[0]
        out["encode_indices"] = encode_result["min_encoding_indices"]
        # get_codebook_entry(indices.reshape(-1)) -> [B,1,N,C] -> [B,C,1,N]
        out["quantized_from_indices"] = model.lookup_tokens(indices)
        if model.is_legacy:
            out["decoder_logits"] = model.decoder(quantized)  # legacy TiTokDecoder(quantized)
        out["reconstruction"] = model(images)[0]  # TiTok.forward(images)[0] = decode(quantized)
        out["decode_quantized"] = model.decode(quantized)
        out["decoded_from_indices"] = model.decode_tokens(indices)  # TiTok.decode_tokens(indices)
    quantizer = copy.deepcopy(model.quantize).requires_grad_(True)
    quantizer.zero_grad(set_to_none=True)
    latent = latent.clone().requires_grad_(True)
    quantizer(latent)[1]["quantizer_loss"].backward()
    out["grad_latent_quantizer_loss"] = latent.grad
    out["grad_codebook_quantizer_loss"] = quantizer.embedding.weight.grad
    return out


STORED = {
    "titok_tiny": ["latent", "quantized", "indices", "quantizer_loss", "commitment_loss", "codebook_loss",
                   "quantized_from_indices", "decoder_logits", "reconstruction", "decoded_from_indices",
                   "grad_latent_quantizer_loss", "grad_codebook_quantizer_loss"],
    "titok_vq8k_tiny": ["latent", "quantized", "indices", "quantizer_loss", "commitment_loss", "codebook_loss",
                        "quantized_from_indices", "reconstruction", "decoded_from_indices",
                        "grad_latent_quantizer_loss", "grad_codebook_quantizer_loss"],
}
ALIASES = {"encode_quantized": "quantized", "encode_indices": "indices", "decode_quantized": "reconstruction"}


@pytest.fixture(scope="module")
def outputs(loaded):
    return {name: run_api(model, io) for name, (model, io) in loaded.items()}


@pytest.mark.parametrize("name,tensor", [(n, t) for n in sorted(STORED) for t in STORED[n] + sorted(ALIASES)
                                         if t in STORED[n] or ALIASES[t] in STORED[n]])
def test_fixture_tensor(loaded, outputs, name, tensor):
    _, io = loaded[name]
    got, want = outputs[name][tensor], io[ALIASES.get(tensor, tensor)]
    if want.dtype == torch.int64:
        assert got.dtype == torch.int64 and torch.equal(got, want), f"{name}/{tensor}"
    else:
        assert_close(got, want, f"{name}/{tensor}")


def test_fixture_io_fully_covered(loaded):
    for name, (_, io) in loaded.items():
        assert set(io) - {"images"} == set(STORED[name]), name


def test_stage2_encode_zeroes_losses_and_runs_without_grad(loaded):
    model, io = loaded["titok_tiny"]
    images = io["images"].clone().requires_grad_(True)
    z_q, result = model.encode(images)
    assert not z_q.requires_grad  # upstream: no_grad in stage 2
    for key in ("quantizer_loss", "commitment_loss", "codebook_loss"):
        assert result[key].item() == 0.0 and io[key].item() > 0  # upstream quirk: zeroed
    assert torch.equal(result["min_encoding_indices"], io["indices"])
    assert not model.latent_tokens.requires_grad and not model.quantize.embedding.weight.requires_grad
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    # encode_latent has no no_grad wrapper
    assert model.encode_latent(images).requires_grad


def test_stage2_encode_puts_encoder_and_quantizer_in_eval_mode(loaded):
    model, io = loaded["titok_tiny"]
    model.train()
    try:
        model.encode(io["images"])
        assert not model.encoder.training and not model.quantize.training
        assert model.decoder.training and model.pixel_decoder.training
    finally:
        model.eval()


def test_vq8k_encode_returns_real_losses_with_grad(loaded):
    model, io = loaded["titok_vq8k_tiny"]
    images = io["images"].clone().requires_grad_(True)
    reconstruction, result = model(images)
    for key in ("quantizer_loss", "commitment_loss", "codebook_loss"):
        assert_close(result[key].detach(), io[key], key)
    (reconstruction.sum() + result["quantizer_loss"]).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert model.quantize.embedding.weight.grad is not None
    model.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------------------------
# model.quantize is the only way to codes (the adapter replaces it)
# --------------------------------------------------------------------------------------------

class RecordingQuantizer(nn.Module):
    """Same call signature as TiTokQuantizer; returns the latent itself and constant codes."""

    def __init__(self, token_size: int, value: float):
        super().__init__()
        self.token_size, self.value, self.calls = token_size, value, []

    def forward(self, z):
        self.calls.append("forward")
        b, _, h, w = z.shape
        indices = torch.zeros(b, h, w, dtype=torch.long)
        zero = z.sum() * 0
        return z, dict(quantizer_loss=zero + 1, commitment_loss=zero + 2, codebook_loss=zero + 3,
                       min_encoding_indices=indices)

    def get_codebook_entry(self, indices):
        self.calls.append("get_codebook_entry")
        return torch.full((indices.shape[0], self.token_size), self.value)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_code_path_goes_through_model_quantize(loaded, name):
    model, io = loaded[name]
    model = copy.deepcopy(model)
    shim = RecordingQuantizer(model.token_size, 0.5)
    model.quantize = shim
    images = io["images"]
    with torch.no_grad():
        latent = model.encode_latent(images)
        z_q, result = model.encode(images)
        assert shim.calls == ["forward"] and torch.equal(z_q, latent)
        expected_loss = 0.0 if model.finetune_decoder else 1.0
        assert result["quantizer_loss"].item() == expected_loss
        reconstruction, _ = model(images)
        assert shim.calls == ["forward", "forward"]
        assert torch.equal(reconstruction, model.decode(latent))
        decoded = model.decode_tokens(io["indices"])
        assert shim.calls[-1] == "get_codebook_entry"
        constant = torch.full((images.shape[0], model.token_size, 1, model.num_latent_tokens), 0.5)
        assert torch.equal(decoded, model.decode(constant))
        assert not torch.allclose(decoded, io["decoded_from_indices"])


# --------------------------------------------------------------------------------------------
# loading: Hub repo id (offline cache), folders, bare files
# --------------------------------------------------------------------------------------------

def test_load_by_repo_id_from_offline_cache(offline_cache, loaded):
    make_cached_repo(offline_cache, "vqswitch-test/titok_tiny", FIXTURES["titok_tiny"],
                     files=["config.json", "model.safetensors", "overrides.json"])
    model = load_pretrained("vqswitch-test/titok_tiny")
    _, io = loaded["titok_tiny"]
    assert not model.training
    with torch.no_grad():
        assert_close(model.decode_tokens(io["indices"]), io["decoded_from_indices"], "decoded_from_indices")


def test_load_by_repo_id_needs_overrides_for_custom_sizes(offline_cache, loaded):
    make_cached_repo(offline_cache, "vqswitch-test/titok_vq8k_tiny", FIXTURES["titok_vq8k_tiny"])
    with pytest.raises(ValueError, match="unknown vit_enc_model_size 'tiny'"):
        load_pretrained("vqswitch-test/titok_vq8k_tiny")
    overrides = read_json(FIXTURES["titok_vq8k_tiny"] / "overrides.json")
    model = load_pretrained("vqswitch-test/titok_vq8k_tiny", overrides=overrides)
    _, io = loaded["titok_vq8k_tiny"]
    with torch.no_grad():
        assert_close(model(io["images"])[0], io["reconstruction"], "reconstruction")


def test_load_by_repo_id_without_weights_fails(offline_cache):
    make_cached_repo(offline_cache, "vqswitch-test/titok_config_only", FIXTURES["titok_vq8k_tiny"],
                     files=["config.json", "overrides.json"])
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained("vqswitch-test/titok_config_only")


def test_load_raw_bin_state_dict(tmp_path, loaded):
    model, io = loaded["titok_vq8k_tiny"]
    folder = FIXTURES["titok_vq8k_tiny"]
    torch.save(model.state_dict(), tmp_path / "titok.bin")
    with pytest.raises(ValueError, match="config="):
        load_pretrained(tmp_path / "titok.bin")
    again = load_pretrained(str(tmp_path / "titok.bin"), config=folder / "config.json",
                            overrides=read_json(folder / "overrides.json"))
    with torch.no_grad():
        assert torch.equal(again.decode_tokens(io["indices"]), model.decode_tokens(io["indices"]))
    # a folder in the Hub layout with pytorch_model.bin instead of model.safetensors
    for name in ("config.json", "overrides.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "titok.bin").rename(tmp_path / "pytorch_model.bin")
    from_folder = load_pretrained(tmp_path)
    assert from_folder.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(from_folder.state_dict().values(), model.state_dict().values()))


def test_save_pretrained_round_trip(tmp_path, loaded):
    model, io = loaded["titok_tiny"]
    model.save_pretrained(tmp_path / "saved")
    files = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert files == ["config.json", "model.safetensors", "overrides.json"]
    again = load_pretrained(tmp_path / "saved")
    assert again.config == model.config and again.overrides == model.overrides
    with torch.no_grad():
        assert torch.equal(again.decode_tokens(io["indices"]), model.decode_tokens(io["indices"]))


def copy_fixture(tmp_path: Path, name: str, edit) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file in ("config.json", "overrides.json"):
        (folder / file).write_bytes((FIXTURES[name] / file).read_bytes())
    state = safetensors.torch.load_file(str(FIXTURES[name] / "model.safetensors"))
    edit(state)
    safetensors.torch.save_file(state, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("edit,pattern", [
    (lambda s: s.pop("decoder.mask_token"), r"missing key\(s\): decoder\.mask_token"),
    (lambda s: s.update({"encoder.extra_scale": torch.ones(3)}), r"unexpected key\(s\): encoder\.extra_scale"),
    (lambda s: s.update({"quantize.embedding.weight": torch.zeros(127, 16)}),
     r"quantize\.embedding\.weight: expected \(128, 16\), found \(127, 16\)"),
    (lambda s: s.update({"encoder.transformer.1.mlp.c_fc.weight": torch.zeros(128, 64)}),
     r"encoder\.transformer\.1\.mlp\.c_fc\.weight: expected \(256, 64\)"),
], ids=["missing", "unexpected", "codebook-shape", "mlp-shape"])
def test_bad_checkpoint_names_the_key(tmp_path, edit, pattern):
    folder = copy_fixture(tmp_path, "titok_vq8k_tiny", edit)
    with pytest.raises(ValueError, match=pattern):
        load_pretrained(folder)


# --------------------------------------------------------------------------------------------
# bad inputs and bad configs
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("images,error,pattern", [
    (torch.rand(1, 3, 32, 32), ValueError, "64x64"),
    (torch.rand(1, 3, 64, 48), ValueError, "64x64"),
    (torch.rand(1, 1, 64, 64), ValueError, r"x must have shape \(B, 3, H, W\)"),
    (torch.rand(1, 4, 64, 64), ValueError, r"x must have shape \(B, 3, H, W\)"),
    (torch.rand(3, 64, 64), ValueError, r"x must have shape \(B, 3, H, W\)"),
    ((torch.rand(1, 3, 64, 64) * 255).to(torch.uint8), TypeError, "floating-point"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.long), TypeError, "floating-point"),
    (torch.rand(1, 3, 64, 64).numpy(), TypeError, "torch.Tensor"),
])
@pytest.mark.parametrize("method", ["encode", "encode_latent", "forward"])
def test_bad_images(loaded, images, error, pattern, method):
    model, _ = loaded["titok_vq8k_tiny"]
    with pytest.raises(error, match=pattern):
        getattr(model, method)(images)


def test_bad_latents_and_tokens(loaded):
    model, io = loaded["titok_tiny"]
    with pytest.raises(ValueError, match=r"z_quantized must have shape \[B, 12, 1, 8\]"):
        model.decode(torch.zeros(2, 12, 8, 1))
    with pytest.raises(ValueError, match="z_quantized"):
        model.decode(torch.zeros(2, 11, 1, 8))
    with pytest.raises(TypeError, match="z_quantized must be a floating-point"):
        model.decode(torch.zeros(2, 12, 1, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="tokens must be an integer tensor"):
        model.decode_tokens(io["indices"].float())
    with pytest.raises(ValueError, match=r"tokens must have shape \[B, 1, 8\]"):
        model.decode_tokens(io["indices"][..., :7])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 64\)"):
        model.decode_tokens(io["indices"] + 64)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 64\)"):
        model.decode_tokens(io["indices"] - 3)
    with pytest.raises(ValueError, match=r"z must have shape \(B, 12, H, W\)"):
        model.quantize(torch.zeros(2, 16, 1, 8))
    with pytest.raises(TypeError, match="z must be a floating-point"):
        model.quantize(torch.zeros(2, 12, 1, 8, dtype=torch.int32))
    # [B, N] tokens are accepted, as upstream's squeeze(1) does
    with torch.no_grad():
        assert torch.equal(model.lookup_tokens(io["indices"][:, 0]), model.lookup_tokens(io["indices"]))


def tiny_config(**vq) -> dict:
    config = read_json(FIXTURES["titok_vq8k_tiny"] / "config.json")
    for key, value in vq.items():
        if value is ...:
            config["model"]["vq_model"].pop(key)
        else:
            config["model"]["vq_model"][key] = value
    return config


TINY_SIZES = {"model_size_table": {"tiny": {"width": 64, "num_layers": 2, "num_heads": 4}}}


@pytest.mark.parametrize("config,overrides,error,pattern", [
    (tiny_config(vit_enc_model_size="huge"), TINY_SIZES, ValueError, "unknown vit_enc_model_size 'huge'"),
    (tiny_config(vit_dec_model_size="gigantic"), TINY_SIZES, ValueError, "unknown vit_dec_model_size 'gigantic'"),
    (tiny_config(), None, ValueError, "unknown vit_enc_model_size 'tiny'"),
    (tiny_config(codebook_size=...), TINY_SIZES, ValueError, r"lacks key\(s\) \['codebook_size'\]"),
    (tiny_config(codebook_size="128"), TINY_SIZES, TypeError, "codebook_size must be an int"),
    (tiny_config(token_size=0), TINY_SIZES, ValueError, "token_size must be >= 1"),
    (tiny_config(num_latent_tokens=True), TINY_SIZES, TypeError, "num_latent_tokens must be an int"),
    (tiny_config(use_l2_norm="yes"), TINY_SIZES, TypeError, "use_l2_norm must be a bool"),
    (tiny_config(commitment_cost=-1.0), TINY_SIZES, ValueError, "commitment_cost"),
    (tiny_config(vit_dec_patch_size=24), TINY_SIZES, ValueError, "multiple of vit_dec_patch_size 24"),
    (tiny_config(quantize_mode="vae"), TINY_SIZES, ValueError, r"\['quantize_mode'\] 'vae' is not supported"),
    (tiny_config(finetune_decoder=True), TINY_SIZES, ValueError, "needs is_legacy=True"),
    ({"model": {}}, None, ValueError, r"config\['model'\]\['vq_model'\]"),
    ({"model": {"vq_model": {}}}, None, ValueError, "crop_size"),
    ([("model", 1)], None, TypeError, "config must be a mapping"),
    (tiny_config(), {"model_size_table": {"tiny": (64, 2, 3)}}, ValueError, "not divisible by num_heads"),
    (tiny_config(), {"model_size_table": {"tiny": {"width": 64, "layers": 2, "num_heads": 4}}}, ValueError,
     "width, num_layers, num_heads"),
    (tiny_config(), {**TINY_SIZES, "pixel_decoder": {}}, ValueError, r"unknown key\(s\) \['pixel_decoder'\]"),
    (tiny_config(), "overrides.json", TypeError, "overrides must be a mapping"),
])
def test_bad_config(config, overrides, error, pattern):
    with pytest.raises(error, match=pattern):
        TiTok.from_config(config, overrides)


def test_bad_pixel_parts():
    config = read_json(FIXTURES["titok_tiny"] / "config.json")
    overrides = read_json(FIXTURES["titok_tiny"] / "overrides.json")
    with pytest.raises(ValueError, match="must equal the pixel codebook size"):
        TiTok.from_config(config, {**overrides, "legacy_decoder_output_channels": 64})
    with pytest.raises(ValueError, match="must equal pixel_decoder_config\\['z_channels'\\]"):
        TiTok.from_config(config, {**overrides, "pixel_quantizer": {"num_embeddings": 32, "embedding_dim": 16}})
    bad = {**overrides["pixel_decoder_config"], "num_resolutions": 4}
    with pytest.raises(ValueError, match="num_resolutions"):
        TiTok.from_config(config, {**overrides, "pixel_decoder_config": bad})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['depth'\]"):
        TiTok.from_config(config, {**overrides, "pixel_decoder_config": {"depth": 3}})


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 40), c=st.integers(1, 8), b=st.integers(1, 3),
       n=st.integers(1, 6), l2=st.booleans(), beta=st.sampled_from([0.0, 0.25, 1.0]))
def test_quantizer_matches_float64_reference(seed, k, c, b, n, l2, beta):
    gen = torch.Generator().manual_seed(seed)
    quantizer = TiTokQuantizer(k, c, commitment_cost=beta, use_l2_norm=l2)
    with torch.no_grad():
        quantizer.embedding.weight.copy_(torch.randn(k, c, generator=gen))
    z = torch.randn(b, c, 1, n, generator=gen).requires_grad_(True)
    z_q, result = quantizer(z)

    flat = z.detach().double().permute(0, 2, 3, 1).reshape(-1, c)
    book = quantizer.embedding.weight.detach().double()
    if l2:
        flat, book = nn.functional.normalize(flat, dim=-1), nn.functional.normalize(book, dim=-1)
    dist = torch.cdist(flat, book) ** 2
    top2 = dist.topk(2, largest=False).values
    assume(bool(((top2[:, 1] - top2[:, 0]) > 1e-4 * (1 + dist.mean())).all()))
    indices = dist.argmin(dim=1)
    assert result["min_encoding_indices"].dtype == torch.int64
    assert torch.equal(result["min_encoding_indices"], indices.view(b, 1, n))
    codes = book[indices]
    assert torch.allclose(z_q.double(), codes.view(b, 1, n, c).permute(0, 3, 1, 2), atol=1e-6)
    assert torch.allclose(quantizer.get_codebook_entry(indices).double(), codes, atol=1e-6)
    mse = ((codes - flat) ** 2).mean()
    assert torch.allclose(result["codebook_loss"].double(), mse, rtol=1e-5, atol=1e-7)
    assert torch.allclose(result["commitment_loss"].double(), beta * mse, rtol=1e-5, atol=1e-7)
    assert torch.allclose(result["quantizer_loss"].double(), (1 + beta) * mse, rtol=1e-5, atol=1e-7)
    # gradients tell the two loss placements apart: beta scales the latent's pull, not the codebook's
    result["quantizer_loss"].backward()
    if not l2:
        latent_grad = 2 * beta * (flat - codes) / flat.numel()
        assert torch.allclose(z.grad.double().permute(0, 2, 3, 1).reshape(-1, c), latent_grad, atol=1e-7)
        book_grad = torch.zeros_like(book).index_add_(0, indices, 2 * (codes - flat) / flat.numel())
        assert torch.allclose(quantizer.embedding.weight.grad.double(), book_grad, atol=1e-7)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid=st.integers(1, 3), enc_patch=st.sampled_from([2, 4]), dec_patch=st.sampled_from([2, 4]),
       enc=st.sampled_from(["a", "b"]), dec=st.sampled_from(["a", "b"]), n=st.integers(1, 5),
       token_size=st.integers(1, 6), legacy=st.booleans(), legacy_out=st.integers(2, 9), seed=st.integers(0, 99))
def test_custom_architectures_round_trip_and_run(grid, enc_patch, dec_patch, enc, dec, n, token_size, legacy,
                                                 legacy_out, seed):
    image_size = grid * enc_patch * dec_patch
    sizes = {"a": (8, 1, 2), "b": {"width": 12, "num_layers": 2, "num_heads": 3}}
    torch.manual_seed(seed)
    model = TiTok(image_size=image_size, codebook_size=16, token_size=token_size, num_latent_tokens=n,
                  vit_enc_model_size=enc, vit_dec_model_size=dec, use_l2_norm=legacy, vit_enc_patch_size=enc_patch,
                  vit_dec_patch_size=dec_patch, finetune_decoder=False, is_legacy=legacy, model_sizes=sizes,
                  legacy_decoder_output_channels=legacy_out).eval()
    config = json.loads(json.dumps(model.config))
    overrides = json.loads(json.dumps(model.overrides))
    again = TiTok.from_config(config, overrides)
    shapes = [(k, t.shape) for k, t in model.state_dict().items()]
    assert [(k, t.shape) for k, t in again.state_dict().items()] == shapes
    assert again.config == config
    with torch.no_grad():
        images = torch.rand(2, 3, image_size, image_size)
        z_q, result = model.encode(images)
        assert z_q.shape == (2, token_size, 1, n) and result["min_encoding_indices"].shape == (2, 1, n)
        decoded = model.decode_tokens(result["min_encoding_indices"])
        g = image_size // dec_patch
        assert decoded.shape == ((2, legacy_out, g, g) if legacy else (2, 3, image_size, image_size))
        assert torch.allclose(decoded, model(images)[0], atol=1e-5)


def test_upstream_size_table():
    assert UPSTREAM_MODEL_SIZES == {"small": (512, 8, 8), "base": (768, 12, 12), "large": (1024, 24, 16)}
    with torch.device("meta"):
        model = TiTok(image_size=256, codebook_size=4096, token_size=12, num_latent_tokens=64,
                      vit_enc_model_size="base", vit_dec_model_size="base", use_l2_norm=True)
    assert model.encoder.width == 768 and len(model.encoder.transformer) == 12
    assert model.encoder.transformer[0].attn.num_heads == 12
    assert model.encoder.transformer[0].mlp.c_fc.out_features == 4 * 768
    assert model.overrides == {"model_size_table": None, "legacy_decoder_output_channels": None,
                               "pixel_decoder_config": None, "pixel_quantizer": None}
