"""vqswitch.compat.VectorQuantize against the real vector_quantize_pytorch.VectorQuantize.

Parity (M = 1, token-shared): indices and outputs in eval, loss / outputs / input gradients / EMA codebook and
statistics over training steps, state-dict conversion; a conv autoencoder switched by one import line.
STSCQ behaviour (M > 1, token-specific): flat ids, Codes, decode, bits; argument refusal.
"""
import math

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

vqp = pytest.importorskip("vector_quantize_pytorch")

from vqswitch import Codes, bits_per_image  # noqa: E402
from vqswitch.compat import UNSUPPORTED, VectorQuantize  # noqa: E402

Upstream = vqp.VectorQuantize

# settings with sequences (B, N, D) unless they ask for a feature map; dim=16 throughout
SETTINGS = {
    "plain": dict(),
    "cosine": dict(use_cosine_sim=True),
    "heads-shared-proj": dict(heads=2, codebook_dim=4),
    "heads-separate": dict(heads=2, codebook_dim=8, separate_codebook_per_head=True),
    "codebook-dim": dict(codebook_dim=4, layernorm_after_project_in=True),
    "straight-through": dict(rotation_trick=False, commitment_weight=0.25, decay=0.9),
    "image-fmap": dict(accept_image_fmap=True),
    "channel-first": dict(channel_last=False, use_cosine_sim=True),
    "learnable": dict(ema_update=False, learnable_codebook=True),
}


def _input(kw, B=4, N=12, generator=None):
    if kw.get("accept_image_fmap"):
        return torch.randn(B, 16, 3, 4, generator=generator)
    if kw.get("channel_last") is False:
        return torch.randn(B, 16, N, generator=generator)
    return torch.randn(B, N, 16, generator=generator)


def _pair(kw, K=32, seed=0):
    torch.manual_seed(seed)
    up = Upstream(dim=16, codebook_size=K, **kw)
    return up, VectorQuantize.from_vector_quantize(up)


def _codebooks(up, ours):
    """Both codebooks in upstream's (H', K, d) layout."""
    return up._codebook.embed.detach(), ours.quantizer.codebooks.detach()[0]


# ------------------------------------------------------------------ eval parity
@pytest.mark.parametrize("name", SETTINGS)
def test_eval_indices_and_outputs_match_upstream(name):
    up, ours = _pair(SETTINGS[name])
    up.eval(), ours.eval()
    x = _input(SETTINGS[name], B=6)
    q_up, i_up, loss_up = up(x)
    q, i, loss = ours(x)
    assert i.shape == i_up.shape and i.dtype == i_up.dtype and q.shape == q_up.shape
    assert torch.equal(i, i_up)
    torch.testing.assert_close(q, q_up, atol=1e-6, rtol=0)
    assert float(loss) == float(loss_up) == 0.0


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 4), N=st.integers(1, 9), K=st.integers(2, 40), heads=st.sampled_from([1, 2, 4]),
       cosine=st.booleans(), separate=st.booleans(), seed=st.integers(0, 2**16))
def test_property_eval_indices_match_upstream(B, N, K, heads, cosine, separate, seed):
    kw = dict(codebook_dim=16 // heads, heads=heads, separate_codebook_per_head=separate, use_cosine_sim=cosine)
    up, ours = _pair(kw, K=K, seed=seed)
    up.eval(), ours.eval()
    x = torch.randn(B, N, 16, generator=torch.Generator().manual_seed(seed))
    q_up, i_up, _ = up(x)
    q, i, _ = ours(x)
    # upstream's float32 ||x||^2 + ||c||^2 - 2x.c can flip a near-tie (1 index in ~10^4 at random): a differing
    # index must then name a code at the same float64 distance, and ours the nearer one
    z = x.double().reshape(B, N, heads, 16 // heads)
    z = torch.nn.functional.normalize(z, dim=-1) if cosine else z
    books = ours.codebook.detach().double()
    books = books if separate and heads > 1 else books.expand(heads, K, 16 // heads)
    for b, n, *h in (i != i_up).view(B, N, heads).nonzero().tolist():
        dist = (books[h[0]] - z[b, n, h[0]]).norm(dim=-1)
        ours_d, up_d = dist[i.view(B, N, heads)[b, n, h[0]]], dist[i_up.view(B, N, heads)[b, n, h[0]]]
        assert ours_d <= up_d < ours_d + 1e-5 * (1 + ours_d)
    same = (i == i_up).view(B, N, heads).all(dim=-1)
    torch.testing.assert_close(q[same], q_up[same], atol=1e-6, rtol=0)
    # and the codes / decode path gives the same output
    codes = ours.encode(x)
    assert codes.indices.shape == (B, N * heads)
    torch.testing.assert_close(ours.decode(codes), q, atol=0, rtol=0)


# ------------------------------------------------------------------ training parity
@pytest.mark.parametrize("name", SETTINGS)
def test_training_matches_upstream_over_steps(name):
    """Loss, outputs, input gradients, indices and the EMA (codes, cluster_size, embed_avg) over 4 steps; for the
    learnable codebook, its gradient too (then both take the same SGD step)."""
    kw = SETTINGS[name]
    up, ours = _pair(kw)
    up.train(), ours.train()
    gen = torch.Generator().manual_seed(1)
    worst = {"q": 0.0, "grad": 0.0, "loss": 0.0, "books": 0.0}
    for _ in range(4):
        x1 = _input(kw, generator=gen).requires_grad_()
        x2 = x1.detach().clone().requires_grad_()
        q_up, i_up, loss_up = up(x1)
        q, i, loss = ours(x2)
        assert torch.equal(i, i_up)
        (q_up.square().sum() + loss_up).backward()
        (q.square().sum() + loss).backward()
        worst["q"] = max(worst["q"], (q - q_up).abs().max().item())
        worst["grad"] = max(worst["grad"], (x1.grad - x2.grad).abs().max().item())
        worst["loss"] = max(worst["loss"], abs(loss.item() - loss_up.item()))
        if kw.get("learnable_codebook"):
            g_up, g = up._codebook.embed.grad, ours.quantizer.codebooks.grad[0]
            torch.testing.assert_close(g, g_up, atol=1e-6, rtol=1e-5)
            with torch.no_grad():
                up._codebook.embed -= 0.5 * g_up
                ours.quantizer.codebooks -= 0.5 * ours.quantizer.codebooks.grad
            up._codebook.embed.grad = ours.quantizer.codebooks.grad = None
        b_up, b = _codebooks(up, ours)
        worst["books"] = max(worst["books"], (b - b_up).abs().max().item())
    assert worst["q"] < 1e-5 and worst["grad"] < 1e-5 and worst["loss"] < 1e-6 and worst["books"] < 1e-5, worst
    if not kw.get("learnable_codebook"):
        assert not torch.equal(_codebooks(up, ours)[1], _pair(kw)[1].quantizer.codebooks[0])  # the EMA moved
        torch.testing.assert_close(ours.cluster_size[0], up._codebook.cluster_size, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(ours.embed_avg[0], up._codebook.embed_avg, atol=1e-5, rtol=1e-6)


def test_frozen_codebook_and_ema_off_leave_codes_unchanged():
    _, ours = _pair(dict())
    before = ours.quantizer.codebooks.detach().clone()
    ours.train()
    ours(torch.randn(4, 12, 16), freeze_codebook=True)
    ours(torch.randn(4, 12, 16), ema_update=False)
    assert torch.equal(ours.quantizer.codebooks, before)
    ours(torch.randn(4, 12, 16))
    assert not torch.equal(ours.quantizer.codebooks, before)


def test_dead_codes_are_refilled_from_the_batch():
    torch.manual_seed(0)
    ours = VectorQuantize(dim=8, codebook_size=16, threshold_ema_dead_code=2.0).train()
    x = torch.randn(3, 5, 8) * 0.01 + 5.0  # far from every code: one code takes everything, the rest decay
    ours(x)
    dead_before = ours.cluster_size[0, 0] < 2.0
    assert not dead_before.any()  # all refilled at once (15 dead <= 15 vectors), counts reset to the threshold
    books = ours.quantizer.codebooks[0, 0].detach()
    refilled = (ours.cluster_size[0, 0] == 2.0)
    assert int(refilled.sum()) == 15
    # each refilled code is one of the batch's vectors, all different
    flat = x.reshape(-1, 8)
    dist = torch.cdist(books[refilled], flat)
    assert (dist.min(dim=1).values < 1e-6).all()
    assert len(set(dist.argmin(dim=1).tolist())) == 15
    torch.testing.assert_close(ours.embed_avg[0, 0][refilled], books[refilled] * 2.0)


def test_kmeans_init_runs_on_the_first_batch():
    torch.manual_seed(0)
    ours = VectorQuantize(dim=4, codebook_size=8, kmeans_init=True)
    assert not bool(ours.initted) and torch.count_nonzero(ours.quantizer.codebooks) == 0
    centres = torch.randn(8, 4) * 5
    x = (centres[torch.arange(64) % 8] + 0.01 * torch.randn(64, 4)).view(8, 8, 4)
    ours.eval()
    q, _, _ = ours(x)
    assert bool(ours.initted)
    assert (q - x).abs().max() < 0.1  # k-means found the 8 clusters
    assert ours.cluster_size.sum() == 64


# ------------------------------------------------------------------ conversion
@pytest.mark.parametrize("name", ["plain", "cosine", "heads-separate", "codebook-dim", "image-fmap"])
def test_converting_a_trained_vector_quantize_is_lossless(name):
    kw = SETTINGS[name]
    torch.manual_seed(3)
    up = Upstream(dim=16, codebook_size=32, threshold_ema_dead_code=1, **kw).train()
    for _ in range(5):  # EMA steps and dead-code refills change every buffer
        up(_input(kw))
    ours = VectorQuantize.from_vector_quantize(up)
    assert ours.training
    up.eval(), ours.eval()
    x = _input(kw, B=8)
    q_up, i_up, _ = up(x)
    q, i, _ = ours(x)
    assert torch.equal(i, i_up)
    torch.testing.assert_close(q, q_up, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.get_output_from_indices(i), q, atol=0, rtol=0)
    # the state-dict path gives the same module; token-specific copies give the same codes too
    again = VectorQuantize(dim=16, codebook_size=32, threshold_ema_dead_code=1, **kw)
    again.load_vector_quantize_state_dict(up.state_dict())
    assert torch.equal(again.eval()(x)[1], i_up)
    specific = VectorQuantize.from_vector_quantize(up, num_tokens=12, token_specific=True).eval()
    assert torch.equal(specific(x)[1], i_up)


def test_conversion_refuses_unsupported_upstream_settings():
    up = Upstream(dim=8, codebook_size=16, orthogonal_reg_weight=0.1, learnable_codebook=True, ema_update=False)
    with pytest.raises(ValueError, match="orthogonal_reg_weight"):
        VectorQuantize.from_vector_quantize(up)
    with pytest.raises(TypeError, match="vq must be"):
        VectorQuantize.from_vector_quantize(nn.Linear(2, 2))
    ours = VectorQuantize(dim=8, codebook_size=16)
    with pytest.raises(ValueError, match="missing"):
        ours.load_vector_quantize_state_dict({"_codebook.embed": torch.zeros(1, 16, 8)})
    wrong = Upstream(dim=8, codebook_size=32).state_dict()
    with pytest.raises(ValueError, match="_codebook.embed"):
        ours.load_vector_quantize_state_dict(wrong)


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_arguments_are_refused_by_name(name):
    default = UNSUPPORTED[name]
    VectorQuantize(dim=8, codebook_size=16, **{name: default})  # upstream's default is accepted
    if default is None:
        other = 1
    elif isinstance(default, bool):
        other = not default
    else:
        other = default + 0.5
    with pytest.raises(ValueError, match=name):
        VectorQuantize(dim=8, codebook_size=16, **{name: other})


def test_argument_errors():
    with pytest.raises(TypeError, match="no_such_argument"):
        VectorQuantize(dim=8, codebook_size=16, no_such_argument=1)
    with pytest.raises(ValueError, match="num_tokens"):
        VectorQuantize(dim=8, codebook_size=16, num_groups=4)
    with pytest.raises(ValueError, match="learnable_codebook"):
        VectorQuantize(dim=8, codebook_size=16, learnable_codebook=True)
    with pytest.raises(TypeError, match="codebook_size"):
        VectorQuantize(dim=8, codebook_size=16.0)
    with pytest.raises(ValueError, match="decay"):
        VectorQuantize(dim=8, codebook_size=16, decay=1.5)
    with pytest.raises(ValueError, match="quantizer_kwargs"):
        VectorQuantize(dim=8, codebook_size=16, quantizer_kwargs={"num_groups": 2})
    vq = VectorQuantize(dim=8, codebook_size=16, num_tokens=5)
    for kwarg in ("mask", "lens", "topk", "indices", "codebook_transform_fn"):
        with pytest.raises(ValueError, match=kwarg):
            vq(torch.randn(2, 5, 8), **{kwarg: torch.ones(2, 5, dtype=torch.long)})
    with pytest.raises(ValueError, match="num_tokens=5"):
        vq(torch.randn(2, 6, 8))
    with pytest.raises(ValueError, match="dim=8"):
        vq(torch.randn(2, 5, 7))
    with pytest.raises(TypeError, match="floating"):
        vq(torch.ones(2, 5, 8, dtype=torch.long))


# ------------------------------------------------------------------ STSCQ extras
@pytest.mark.filterwarnings("ignore:init_from_latents got")  # kmeans_init on a 6-image batch, on purpose
@pytest.mark.parametrize("heads", [1, 2])
def test_switchable_token_specific_codes_bits_and_decode(heads):
    torch.manual_seed(0)
    vq = VectorQuantize(dim=8, codebook_size=16, heads=heads, codebook_dim=4, accept_image_fmap=True,
                        num_tokens=12, num_groups=4, token_specific=True, kmeans_init=True)
    assert vq.bits_per_image == bits_per_image(12 * heads, 16, 4) == 12 * heads * 4 + 2
    assert math.isclose(vq.bpp(48, 64), vq.bits_per_image / (48 * 64))
    x = torch.randn(6, 8, 3, 4, requires_grad=True)
    q, ids, loss = vq(x)  # training: router picks groups, loss includes the router terms
    loss.backward()
    assert q.shape == x.shape and ids.shape == ((6, 3, 4, 2) if heads == 2 else (6, 3, 4))
    assert int(ids.min()) >= 0 and int(ids.max()) < 4 * 16 and x.grad is not None
    assert any(p.grad is not None for p in vq.quantizer.router.parameters())
    vq.eval()
    q, ids, _ = vq(x)
    codes = vq.encode(x)
    assert isinstance(codes, Codes) and codes.indices.shape == (6, 12 * heads) and codes.num_groups == 4
    restored = Codes.from_bytes(codes.to_bytes())
    assert restored == codes and len(codes.to_bytes()) == 25 + math.ceil(6 * vq.bits_per_image / 8)
    assert torch.equal(vq.decode(restored, fmap_size=(3, 4)), q)
    assert torch.equal(vq.get_output_from_indices(ids), q)
    # flat ids: group * K + code, one group per image
    groups = ids.reshape(6, -1) // 16
    assert torch.equal(groups, codes.groups[:, None].expand_as(groups))
    with pytest.raises(ValueError, match="fmap_size"):
        vq.decode(codes)


def test_decode_checks_its_codes():
    vq = VectorQuantize(dim=8, codebook_size=16)
    with pytest.raises(TypeError, match="Codes"):
        vq.decode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="K, M"):
        vq.decode(Codes(torch.zeros(1, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), codebook_size=32,
                        num_groups=1))
    with pytest.raises(ValueError, match="flat ids"):
        vq.get_output_from_indices(torch.full((1, 3), 16))
    with pytest.raises(ValueError, match="num_tokens"):
        _ = vq.bits_per_image


# ------------------------------------------------------------------ a model switched by one import
MODEL_SOURCE = '''
import torch.nn as nn
from vector_quantize_pytorch import VectorQuantize


class AutoEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 32, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(32, 8, 3, padding=1))
        self.vq = VectorQuantize(dim=8, codebook_size=32, decay=0.8, commitment_weight=0.25, accept_image_fmap=True)
        self.decoder = nn.Sequential(nn.ConvTranspose2d(8, 32, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(32, 3, 3, padding=1))

    def forward(self, images):
        quantized, indices, vq_loss = self.vq(self.encoder(images))
        return self.decoder(quantized), indices, vq_loss
'''


def _model_class(source):
    scope = {}
    exec(compile(source, "autoencoder.py", "exec"), scope)
    return scope["AutoEncoder"]


def _images(n, seed):
    """Smooth coloured blobs, (n, 3, 16, 16) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    centre = torch.rand(n, 2, 1, 1, generator=g) * 1.2 - 0.6
    radius = torch.rand(n, 1, 1, generator=g) * 0.4 + 0.3
    mask = (((xx - centre[:, 0]) ** 2 + (yy - centre[:, 1]) ** 2) < radius ** 2).float()
    colour, back = torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g) * 0.3
    return back + (colour - back) * mask[:, None]


def _train(model, steps=40, seed=0):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    data = _images(256, seed)
    losses = []
    model.train()
    for _ in range(steps):
        batch = data[torch.randint(0, 256, (16,), generator=gen)]
        recon, _, vq_loss = model(batch)
        rec = (recon - batch).square().mean()
        opt.zero_grad()
        (rec + vq_loss).backward()
        opt.step()
        losses.append(rec.item())
    return losses


@pytest.mark.slow  # trains two autoencoders step for step
def test_autoencoder_switched_by_one_import_trains_like_upstream():
    switched = MODEL_SOURCE.replace("from vector_quantize_pytorch import VectorQuantize",
                                    "from vqswitch.compat import VectorQuantize")
    diff = [(a, b) for a, b in zip(MODEL_SOURCE.splitlines(), switched.splitlines()) if a != b]
    assert len(diff) == 1  # the one line
    Original, Switched = _model_class(MODEL_SOURCE), _model_class(switched)

    torch.manual_seed(0)
    original = Original()
    torch.manual_seed(0)
    model = Switched()
    assert isinstance(model.vq, VectorQuantize)
    # the same start: encoder/decoder weights and the codebook from the original
    model.encoder.load_state_dict(original.encoder.state_dict())
    model.decoder.load_state_dict(original.decoder.state_dict())
    model.vq.load_vector_quantize_state_dict(original.vq.state_dict())

    losses_up, losses = _train(original), _train(model)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)  # it trains
    # and it trains the way the original does, step for step
    assert max(abs(a - b) for a, b in zip(losses, losses_up)) < 1e-3 * max(losses_up), list(zip(losses, losses_up))

    # it reconstructs held-out images, and its codes decode to the same reconstruction
    model.eval()
    test = _images(8, seed=99)
    with torch.no_grad():
        recon, indices, _ = model(test)
        held_out = (recon - test).square().mean().item()
        assert held_out < 0.5 * first, (held_out, first)  # unseen images reconstruct as well as training ones
        codes = model.vq.encode(model.encoder(test))
        again = model.decoder(model.vq.decode(codes, fmap_size=tuple(indices.shape[1:])))
    assert torch.equal(again, recon)
