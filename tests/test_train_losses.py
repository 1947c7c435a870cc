"""vqswitch.train.losses: feature-similarity losses over frozen backbones, transformers wrapping, the stage-3 loss.

Every backbone here is a tiny randomly initialised transformers ViT built from a config (no download). Importing
transformers alone costs ~10 s of CPU, so the tests that need it are marked slow (imported lazily); the losses'
own logic is tested on plain callables in the fast tier."""
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hubcache import COMMIT, make_cached_repo
from torch import nn

from vqswitch.train.losses import (IMAGENET_MEAN, IMAGENET_STD, FeatureSimilarityLoss, ReconstructionLoss,
                                   TransformersFeatures, identity_loss, perceptual_loss)

slow = pytest.mark.slow  # needs transformers (~10 s to import)

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)


def _transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def transformers():
    return _transformers()


def tiny_vit(seed: int = 0, **kw):
    transformers = _transformers()
    torch.manual_seed(seed)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64)
    return transformers.ViTModel(config, **kw)


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


def images(b=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g)


# ---------------------------------------------------------------------------------- FeatureSimilarityLoss
@slow
@pytest.mark.parametrize("kind", ["cosine", "l2"])
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1))
def test_identical_inputs_give_zero(vit, kind, seed):
    loss = FeatureSimilarityLoss(TransformersFeatures(vit), kind=kind)
    x = images(seed=seed)
    value = loss(x, x.clone())
    assert value.dim() == 0 and value.dtype == torch.float32
    assert abs(value.item()) < 1e-6
    y = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    assert loss(x, y).item() > 1e-6  # and not zero for a different image


@slow
@pytest.mark.parametrize("kind", ["cosine", "l2"])
def test_more_distortion_larger_loss(vit, kind):
    # the same images and noise directions at growing strength: the batch-mean loss grows, on average over batches
    loss = FeatureSimilarityLoss(TransformersFeatures(vit), kind=kind)
    levels = [0.02, 0.05, 0.1, 0.2, 0.4, 0.8]
    totals = torch.zeros(len(levels))
    for seed in range(4):
        x = images(b=8, seed=seed)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(100 + seed))
        with torch.no_grad():
            totals += torch.tensor([loss(x, x + s * noise).item() for s in levels])
    assert bool((totals[1:] > totals[:-1]).all()), totals


@slow
@pytest.mark.parametrize("kind", ["cosine", "l2"])
def test_gradient_reaches_y_only(kind):
    backbone = tiny_vit(1)
    loss = FeatureSimilarityLoss(TransformersFeatures(backbone), kind=kind)
    x = images(seed=1).requires_grad_(True)
    y = (images(seed=2) * 0.5 + x.detach() * 0.5).requires_grad_(True)
    loss(x, y).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert x.grad is None
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())


def test_target_features_hold_no_graph():
    calls = []

    class Spy(nn.Module):
        def forward(self, t):
            calls.append(torch.is_grad_enabled())
            return t.flatten(1) * 2

    loss = FeatureSimilarityLoss(Spy(), kind="l2")
    x, y = images(seed=3), images(seed=4).requires_grad_(True)
    loss(x, y)
    assert calls == [False, True]  # f(x) under no_grad, f(y) with grad


@slow
def test_backbone_frozen_and_eval_after_train():
    backbone = tiny_vit(2)
    backbone.train()
    assert backbone.training and all(p.requires_grad for p in backbone.parameters())
    features = TransformersFeatures(backbone)
    loss = FeatureSimilarityLoss(features)
    total = ReconstructionLoss(perceptual=loss, perceptual_weight=1.0)
    for module in (loss, total):
        module.train()
        assert module.training and loss.training
        assert not features.training and not backbone.training
        assert not any(m.training for m in backbone.modules())
        assert not any(p.requires_grad for p in backbone.parameters())
    loss.eval()
    loss.train(True)
    assert not backbone.training


def test_plain_callable_extractor_and_pixel_range_mapping():
    seen = []

    class Ranged:
        pixel_range = (-1.0, 1.0)

        def __call__(self, t):
            seen.append((t.min().item(), t.max().item()))
            return t.flatten(1)

    loss = FeatureSimilarityLoss(Ranged(), pixel_range=(0, 1), kind="l2")
    x = torch.zeros(2, 3, 4, 4)
    y = torch.ones(2, 3, 4, 4)
    # features are the pixels mapped onto [-1, 1]: a difference of 2 everywhere
    assert loss(x, y).item() == pytest.approx(4.0)
    assert seen == [(-1.0, -1.0), (1.0, 1.0)]
    # default pixel_range: the extractor's own
    assert FeatureSimilarityLoss(Ranged()).pixel_range == (-1.0, 1.0)
    assert FeatureSimilarityLoss(lambda t: t.flatten(1)).pixel_range == (0.0, 1.0)


def test_cosine_and_l2_values():
    flat = lambda t: t.flatten(1)  # noqa: E731  (features = pixels)
    x = torch.zeros(2, 3, 2, 2)
    x[:, 0] = 1.0
    y = torch.zeros(2, 3, 2, 2)
    y[:, 1] = 1.0  # orthogonal features, each of squared norm 4
    cosine, l2 = FeatureSimilarityLoss(flat, kind="cosine"), FeatureSimilarityLoss(flat, kind="l2")
    assert cosine(x, y).item() == pytest.approx(1.0)
    assert cosine(x, -x).item() == pytest.approx(2.0)
    assert cosine(x, 3 * x).item() == pytest.approx(0.0, abs=1e-6)  # scale-invariant
    assert l2(x, y).item() == pytest.approx(8 / 12)  # mean over the 12 feature elements
    assert l2(x, 3 * x).item() == pytest.approx(4 * 4 / 12)


def test_feature_loss_errors():
    flat = lambda t: t.flatten(1)  # noqa: E731  (the checks are the loss's own, whatever the extractor)
    loss = FeatureSimilarityLoss(flat)
    x = images()
    with pytest.raises(TypeError, match="extractor"):
        FeatureSimilarityLoss(3)
    with pytest.raises(ValueError, match="kind"):
        FeatureSimilarityLoss(flat, kind="l1")
    with pytest.raises(ValueError, match="pixel_range"):
        FeatureSimilarityLoss(flat, pixel_range=(1, 0))
    with pytest.raises(TypeError, match="pixel_range"):
        FeatureSimilarityLoss(flat, pixel_range="01")
    with pytest.raises(TypeError, match="x must"):
        loss(x.numpy(), x)
    with pytest.raises(TypeError, match="y must"):
        loss(x, (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="same shape"):
        loss(x, x[:2])
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\)"):
        loss(x[:, :1], x[:, :1])
    with pytest.raises(ValueError, match="x must have shape"):
        loss(x[0], x[0])
    with pytest.raises(TypeError, match="must return a torch.Tensor"):
        FeatureSimilarityLoss(lambda t: t.tolist())(x, x)
    with pytest.raises(ValueError, match=r"\(B, F\)"):
        FeatureSimilarityLoss(lambda t: t.flatten())(x, x)


@slow
def test_losses_in_float32_features_in_backbone_dtype():
    backbone = tiny_vit(3).to(torch.float64)
    features = TransformersFeatures(backbone)
    x = images(seed=5)
    assert features(x).dtype == torch.float64
    for kind in ("cosine", "l2"):
        value = FeatureSimilarityLoss(features, kind=kind)(x, images(seed=6))
        assert value.dtype == torch.float32 and value.dim() == 0


# ---------------------------------------------------------------------------------- TransformersFeatures
@slow
def test_resizes_larger_inputs(vit):
    features = TransformersFeatures(vit)
    assert features.image_size == (32, 32)
    big = images(b=2, size=64, seed=7)
    out = features(big)
    assert out.shape == (2, 32)
    # the same as resizing by hand with the documented interpolation
    small = nn.functional.interpolate(big, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(out, features(small))
    # and differentiable w.r.t. the input
    big.requires_grad_(True)
    features(big).sum().backward()
    assert big.grad is not None and big.grad.abs().sum() > 0


@slow
def test_pixel_range_equivalence(vit):
    x01 = images(seed=8)
    a = TransformersFeatures(vit, pixel_range=(0, 1))(x01)
    b = TransformersFeatures(vit, pixel_range=(-1, 1))(x01 * 2 - 1)
    c = TransformersFeatures(vit, pixel_range=(0, 255))(x01 * 255)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a, TransformersFeatures(vit, pixel_range=(0, 1))(x01 * 2 - 1), atol=1e-3)


@slow
def test_normalisation_defaults_and_overrides(vit):
    f = TransformersFeatures(vit)
    torch.testing.assert_close(f.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    torch.testing.assert_close(f.std.flatten(), torch.tensor(IMAGENET_STD))
    g = TransformersFeatures(vit, mean=0.5, std=[0.25, 0.5, 1.0], image_size=16)
    torch.testing.assert_close(g.mean.flatten(), torch.full((3,), 0.5))
    torch.testing.assert_close(g.std.flatten(), torch.tensor([0.25, 0.5, 1.0]))
    assert g.image_size == (16, 16)
    assert "mean" not in g.state_dict() and "std" not in g.state_dict()
    # normalisation really is applied: mean/std shift the features
    x = images(seed=9)
    assert not torch.allclose(f(x), TransformersFeatures(vit, mean=0.5, std=0.5)(x), atol=1e-4)
    with pytest.raises(ValueError, match="std"):
        TransformersFeatures(vit, std=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="mean"):
        TransformersFeatures(vit, mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="image_size"):
        TransformersFeatures(vit, image_size=0)
    with pytest.raises(TypeError, match="image_size"):
        TransformersFeatures(vit, image_size=32.0)


@slow
def test_layer_options(vit):
    x = images(b=3, seed=10)
    normalised = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = vit(pixel_values=normalised, output_hidden_states=True)
    pooled = TransformersFeatures(vit, layer="pooler")(x)
    torch.testing.assert_close(pooled, out.pooler_output)
    torch.testing.assert_close(TransformersFeatures(vit, layer="last_hidden_mean")(x), out.last_hidden_state.mean(1))
    torch.testing.assert_close(TransformersFeatures(vit, layer="last_hidden")(x), out.last_hidden_state)
    assert out.last_hidden_state.shape == (3, 17, 32)
    for i in (0, 1, 2, -1, -3):
        torch.testing.assert_close(TransformersFeatures(vit, layer=i)(x), out.hidden_states[i])
    with pytest.raises(ValueError, match="layer"):
        TransformersFeatures(vit, layer=3)
    with pytest.raises(ValueError, match="layer"):
        TransformersFeatures(vit, layer=-4)
    with pytest.raises(ValueError, match="layer"):
        TransformersFeatures(vit, layer="cls")
    with pytest.raises(TypeError, match="layer"):
        TransformersFeatures(vit, layer=1.0)


@slow
def test_pooler_fallback_warns_once():
    backbone = tiny_vit(4, add_pooling_layer=False)
    features = TransformersFeatures(backbone, layer="pooler")
    x = images(seed=11)
    with pytest.warns(UserWarning, match="pooler_output"):
        pooled = features(x)
    assert features.pooling_fallback
    torch.testing.assert_close(pooled, TransformersFeatures(backbone, layer="last_hidden_mean")(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features(x)  # no second warning


@slow
def test_rejects_non_vision_models_and_bad_inputs(vit, transformers):
    bert = transformers.BertModel(transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                          intermediate_size=64, vocab_size=50))
    with pytest.raises(TypeError, match="pixel_values"):
        TransformersFeatures(bert)
    with pytest.raises(TypeError, match="model_or_name"):
        TransformersFeatures(42)
    gray = transformers.ViTModel(transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                                        num_hidden_layers=1,
                                                        num_attention_heads=2, intermediate_size=64, num_channels=1))
    with pytest.raises(ValueError, match="num_channels"):
        TransformersFeatures(gray)
    features = TransformersFeatures(vit)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\)"):
        features(torch.rand(2, 1, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        features(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        features([[1.0]])


@slow
def test_composite_model_uses_vision_tower(transformers):
    torch.manual_seed(5)
    clip = transformers.CLIPModel(transformers.CLIPConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=50,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64),
        projection_dim=16))
    features = TransformersFeatures(clip)
    assert features.model is clip.vision_model
    assert features(images(b=2, size=48, seed=12)).shape == (2, 32)


@slow
def test_loads_local_folder_with_processor_normalisation(tmp_path, vit, monkeypatch, transformers):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vit.save_pretrained(tmp_path)
    proc_cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
    proc_cls(size={"height": 32, "width": 32}, image_mean=[0.1, 0.2, 0.3],
             image_std=[0.4, 0.5, 0.6]).save_pretrained(tmp_path)
    loaded = TransformersFeatures(str(tmp_path))
    torch.testing.assert_close(loaded.mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(loaded.std.flatten(), torch.tensor([0.4, 0.5, 0.6]))
    assert loaded.image_size == (32, 32)
    assert not loaded.model.training
    x = images(seed=13)
    by_hand = TransformersFeatures(vit, mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6])
    torch.testing.assert_close(loaded(x), by_hand(x))
    # explicit arguments win over the processor
    assert TransformersFeatures(tmp_path, mean=0.5).mean.flatten().tolist() == [0.5] * 3
    # no processor: a warning, then ImageNet defaults
    bare = tmp_path / "bare"
    vit.save_pretrained(bare)
    with pytest.warns(UserWarning, match="no image processor"):
        plain = TransformersFeatures(bare)
    torch.testing.assert_close(plain.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    with pytest.raises(OSError, match="model_or_name"):
        TransformersFeatures(str(tmp_path / "missing"))


@slow
def test_loads_hub_id_from_cache(tmp_path, vit, offline_cache, transformers):
    folder = tmp_path / "ckpt"
    vit.save_pretrained(folder)
    proc_cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
    proc_cls(size={"height": 32, "width": 32}, image_mean=[0.3, 0.3, 0.3],
             image_std=[0.2, 0.2, 0.2]).save_pretrained(folder)
    make_cached_repo(offline_cache, "org/tiny-vit", folder,
                     files=("config.json", "model.safetensors", "preprocessor_config.json"))
    loaded = TransformersFeatures("org/tiny-vit", revision=COMMIT, cache_dir=str(offline_cache),
                                  layer="last_hidden_mean")
    torch.testing.assert_close(loaded.std.flatten(), torch.full((3,), 0.2))
    x = images(seed=15)
    torch.testing.assert_close(loaded(x), TransformersFeatures(vit, mean=0.3, std=0.2, layer="last_hidden_mean")(x))
    with pytest.raises(OSError, match="org/absent"):
        TransformersFeatures("org/absent", cache_dir=str(offline_cache))


# ---------------------------------------------------------------------------------- convenience constructors
@slow
def test_identity_and_perceptual_constructors(vit):
    ident = identity_loss(vit, pixel_range=(-1, 1))
    assert ident.kind == "cosine" and ident.extractor.layer == "pooler" and ident.extractor.pixel_range == (-1.0, 1.0)
    assert ident.pixel_range == (-1.0, 1.0)
    perc = perceptual_loss(vit)
    assert perc.kind == "l2" and perc.extractor.layer == "last_hidden"
    assert perceptual_loss(vit, layer=1).extractor.layer == 1
    # a ready extractor is used as is
    ready = TransformersFeatures(vit, layer="last_hidden_mean")
    assert identity_loss(ready).extractor is ready
    custom = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8))
    loss = identity_loss(custom)
    assert loss.extractor is custom and not any(p.requires_grad for p in custom.parameters())
    x = images(seed=14)
    assert loss(x, x).item() < 1e-6
    with pytest.raises(TypeError, match="unexpected"):
        identity_loss(custom, layer=1)
    with pytest.raises(TypeError, match="model_or_name"):
        perceptual_loss(3)


# ---------------------------------------------------------------------------------- ReconstructionLoss
class Const(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value, self.calls = value, []

    def forward(self, x, y):
        self.calls.append((x, y))
        return torch.tensor(self.value)


def test_weights_combine_exactly():
    x = torch.zeros(2, 3, 4, 4)
    y = torch.ones(2, 3, 4, 4)  # l2 = 1
    p, i = Const(2.0), Const(3.0)
    out = ReconstructionLoss(0.5, p, 0.25, i, 4.0)(x, y)
    assert set(out) == {"loss", "l2", "perceptual", "identity"}
    assert [out[k].item() for k in ("l2", "perceptual", "identity")] == [1.0, 2.0, 3.0]
    assert out["loss"].item() == 0.5 + 0.5 + 12.0
    assert all(v.dim() == 0 and v.dtype == torch.float32 for v in out.values())
    # the terms receive (original, reconstruction)
    assert p.calls[0][0] is not None and torch.equal(p.calls[0][0], x) and torch.equal(p.calls[0][1], y)


@slow
@SETTINGS
@given(l2w=st.floats(0, 10), pw=st.floats(0, 10), iw=st.floats(0, 10), seed=st.integers(0, 1000))
def test_total_is_weighted_sum(vit, l2w, pw, iw, seed):
    perc = perceptual_loss(vit)
    ident = identity_loss(vit)
    x = images(b=2, seed=seed)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).requires_grad_(True)
    out = ReconstructionLoss(l2w, perc, pw, ident, iw)(x, y)
    expected = l2w * torch.mean((y.detach() - x) ** 2) + pw * out["perceptual"] + iw * out["identity"]
    torch.testing.assert_close(out["loss"].detach(), expected.detach(), rtol=1e-6, atol=1e-7)
    if pw > 0:
        torch.testing.assert_close(out["perceptual"], perc(x, y))
    if iw > 0:
        torch.testing.assert_close(out["identity"], ident(x, y))
    out["loss"].backward()
    assert y.grad is not None


def test_absent_or_zero_weight_parts_are_zero_tensors():
    x, y = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    out = ReconstructionLoss()(x, y)
    for k in ("perceptual", "identity"):
        assert isinstance(out[k], torch.Tensor) and out[k].dim() == 0 and out[k].item() == 0.0
    assert out["l2"].item() == 0.25 and out["loss"].item() == 0.25
    p = Const(7.0)
    out = ReconstructionLoss(1.0, p, 0.0)(x, y)
    assert out["perceptual"].item() == 0.0 and p.calls == []  # weight 0: not computed
    assert ReconstructionLoss(0.0)(x, y)["loss"].item() == 0.0


def test_no_gradient_to_the_target():
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    y = torch.rand(2, 3, 4, 4, requires_grad=True)
    out = ReconstructionLoss(1.0, FeatureSimilarityLoss(lambda t: t.flatten(1), kind="l2"), 1.0)(x, y)
    out["loss"].backward()
    assert x.grad is None
    torch.testing.assert_close(y.grad, 2 * 2 * (y - x).detach() / y.numel())  # d/dy of two MSE terms


def test_reconstruction_loss_errors():
    with pytest.raises(ValueError, match="l2_weight"):
        ReconstructionLoss(-1.0)
    with pytest.raises(ValueError, match="perceptual_weight"):
        ReconstructionLoss(perceptual=Const(1.0), perceptual_weight=-0.1)
    with pytest.raises(ValueError, match="identity_weight"):
        ReconstructionLoss(identity=Const(1.0), identity_weight=float("nan"))
    with pytest.raises(ValueError, match="perceptual"):
        ReconstructionLoss(perceptual_weight=0.1)
    with pytest.raises(ValueError, match="identity"):
        ReconstructionLoss(identity_weight=1.0)
    with pytest.raises(TypeError, match="l2_weight"):
        ReconstructionLoss("1")
    with pytest.raises(TypeError, match="identity"):
        ReconstructionLoss(identity="arcface", identity_weight=1.0)
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="perceptual loss must return"):
        ReconstructionLoss(perceptual=lambda a, b: torch.zeros(3), perceptual_weight=1.0)(x, x)
    with pytest.raises(ValueError, match="same shape"):
        ReconstructionLoss()(x, torch.zeros(2, 3, 4, 4))
