"""SwitchableTokenQuantizer: properties over random configurations, plus the known cases."""
import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from vqswitch import Codes, SwitchableTokenQuantizer

import reference

METRICS = ["l2", "cosine", "dot"]


@st.composite
def setups(draw, selection=None):
    T, K, D = draw(st.integers(1, 6)), draw(st.integers(1, 24)), draw(st.integers(1, 8))
    M = draw(st.integers(1, 4))
    sel = selection or (draw(st.sampled_from(["router", "nearest"])) if M > 1 else "nearest")
    q = SwitchableTokenQuantizer(
        num_tokens=T, codebook_size=K, dim=D, num_groups=M, token_specific=draw(st.booleans()),
        metric=draw(st.sampled_from(METRICS)), train_selection=sel, inference_selection=sel,
        router_hidden_dim=8, memory_budget=draw(st.sampled_from([1, 512, 2**25])))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        q.codebooks.copy_(torch.randn(q.codebooks.shape, generator=g))
    z = torch.randn(draw(st.integers(1, 5)), T, D, generator=g)
    q.train(draw(st.booleans()))
    return q, z


def _books(q):
    return q.codebooks.detach()


@settings(max_examples=60, deadline=None)
@given(setups())
def test_forward_invariants(setup):
    q, z = setup
    out = q(z)
    B, T = z.shape[:2]
    assert out.indices.shape == (B, T) and out.indices.dtype == torch.int64
    assert out.groups.shape == (B,) and out.groups.dtype == torch.int64
    assert ((out.indices >= 0) & (out.indices < q.codebook_size)).all()
    assert ((out.groups >= 0) & (out.groups < q.num_groups)).all()
    # quantized rows are exactly codebook rows of the selected (group, token)
    tok = torch.arange(T) if q.token_specific else torch.zeros(T, dtype=torch.long)
    rows = _books(q)[out.groups[:, None], tok[None], out.indices]
    if q.metric == "cosine":
        rows = F.normalize(rows, dim=-1)
    assert torch.equal(out.quantized, rows)
    # no other code of that token's codebook is strictly closer (up to fp tolerance)
    d = reference.distances(z, _books(q), out.groups, q.metric)
    chosen = d.gather(-1, out.indices.unsqueeze(-1)).squeeze(-1)
    assert (chosen <= d.min(-1).values + 1e-5 * (1 + d.min(-1).values.abs())).all()
    # router probabilities exist exactly when there is a router
    assert (out.router_probs is None) == (q.num_groups == 1)
    if out.router_probs is not None:
        assert out.router_probs.shape == (B, q.num_groups)
        assert torch.allclose(out.router_probs.sum(-1), torch.ones(B))
    selection = q.train_selection if q.training else q.inference_selection
    if selection == "nearest":  # the picked group's total error is <= every other group's
        assert out.group_errors.shape == (B, q.num_groups)
        assert (out.group_errors.gather(1, out.groups[:, None]) <= out.group_errors).all()
        ref = reference.group_errors(z, _books(q), q.metric)
        assert torch.allclose(out.group_errors.double(), ref, rtol=1e-4, atol=1e-4)
    elif q.num_groups > 1:
        assert torch.equal(out.groups, out.router_probs.argmax(-1))


@settings(max_examples=40, deadline=None)
@given(setups())
def test_decode_of_encode_equals_forward_in_eval(setup):
    q, z = setup
    q.eval()
    codes = q.encode(z)
    assert torch.equal(q.decode(codes), q(z).quantized)
    # the codes round-trip through bytes exactly
    assert Codes.from_bytes(codes.to_bytes()) == codes
    assert len(codes.to_bytes()) * 8 >= z.shape[0] * q.bits_per_image


@settings(max_examples=30, deadline=None)
@given(setups(), st.integers(0, 1000))
def test_independent_of_batch_order_and_chunk_size(setup, seed):
    q, z = setup
    q.eval()
    perm = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))
    a = q.encode(z)
    q.memory_budget = 1
    b = q.encode(z[perm])
    assert torch.equal(a.groups[perm], b.groups) and torch.equal(a.indices[perm], b.indices)


@settings(max_examples=30, deadline=None)
@given(setups())
def test_straight_through_gradient_is_identity(setup):
    q, z = setup
    z = z.clone().requires_grad_(True)
    out = q(z)
    g = torch.randn_like(out.quantized)
    (grad,) = torch.autograd.grad(out.quantized, z, g)
    assert torch.equal(grad, g)


def test_which_terms_get_gradients():
    q = SwitchableTokenQuantizer(num_tokens=4, codebook_size=8, dim=3, num_groups=3, router_hidden_dim=8)
    z = torch.randn(6, 4, 3, requires_grad=True)
    out = q(z)
    params = {"z": z, "codebooks": q.codebooks, "router": q.router.head.weight}

    def grads(t):
        gs = torch.autograd.grad(t, list(params.values()), retain_graph=True, allow_unused=True)
        return {k: (g is not None and bool(g.abs().sum() > 0)) for k, g in zip(params, gs)}

    assert grads(out.codebook_loss) == {"z": False, "codebooks": True, "router": False}
    assert grads(out.commitment_loss) == {"z": True, "codebooks": False, "router": False}
    for name in ("router_balance_loss", "router_decision_loss", "router_quality_loss"):
        assert grads(getattr(out, name)) == {"z": False, "codebooks": False, "router": True}, name
    assert grads(out.quantized.sum()) == {"z": True, "codebooks": False, "router": False}
    # loss is exactly the documented weighted sum
    expect = (out.codebook_loss + q.commitment_weight * out.commitment_loss + q.balance_weight * out.router_balance_loss
              + q.decision_weight * out.router_decision_loss + q.quality_weight * out.router_quality_loss)
    assert torch.equal(out.loss, expect)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_one_shared_group_equals_a_plain_vq(metric):
    """M=1, token-shared: the classic VQ-VAE quantizer (nearest code, ST, codebook + beta*commitment)."""
    torch.manual_seed(0)
    K, D, beta = 32, 6, 0.25
    weight = torch.randn(K, D)
    q = SwitchableTokenQuantizer.from_codebook(weight, num_tokens=10, token_specific=False, metric=metric,
                                               commitment_weight=beta)
    z = torch.randn(4, 10, D, requires_grad=True)
    out = q(z)
    zz, w = (F.normalize(z, dim=-1), F.normalize(weight, dim=-1)) if metric == "cosine" else (z, weight)
    idx = torch.cdist(zz.detach().reshape(-1, D).double(), w.double()).argmin(-1).view(4, 10)
    zq = w[idx]
    assert torch.equal(out.indices, idx)
    assert torch.equal(out.quantized, zq)
    assert torch.allclose(out.loss, F.mse_loss(zq, zz.detach()) + beta * F.mse_loss(zz, zq.detach()))
    assert (out.groups == 0).all() and out.router_probs is None


def test_from_codebook_copies_or_reduces():
    torch.manual_seed(0)
    w = torch.randn(64, 5)
    q = SwitchableTokenQuantizer.from_codebook(w, num_tokens=3)
    assert q.codebook_size == 64 and torch.equal(q.codebooks[0, 2], w) and torch.equal(q.codebooks[0, 0], w)
    q4 = SwitchableTokenQuantizer.from_codebook(w, num_tokens=3, codebook_size=16, num_groups=4, token_specific=False)
    assert q4.codebooks.shape == (4, 1, 16, 5)
    for a in range(4):  # groups start different
        for b in range(a + 1, 4):
            assert not torch.allclose(q4.codebooks[a], q4.codebooks[b])
    # k-means reduction: every reduced code sits inside the cloud of the pretrained codes
    err = reference.nearest(w[None], q4.codebooks[:1].detach(), torch.zeros(1, dtype=torch.long), "l2")[1].mean()
    rnd = reference.nearest(w[None], torch.randn(1, 1, 16, 5) * 3, torch.zeros(1, dtype=torch.long), "l2")[1].mean()
    assert err < rnd
    with pytest.raises(ValueError, match="exceeds"):
        SwitchableTokenQuantizer.from_codebook(w, num_tokens=3, codebook_size=65)
    with pytest.raises(TypeError, match="weight"):
        SwitchableTokenQuantizer.from_codebook(torch.ones(3, 4, 5), num_tokens=3)


def test_to_token_specific_keeps_every_output():
    torch.manual_seed(0)
    q = SwitchableTokenQuantizer(num_tokens=5, codebook_size=16, dim=4, num_groups=3, token_specific=False,
                                 router_hidden_dim=8)
    z = torch.randn(8, 5, 4)
    q.train()
    q(z)  # record some usage
    q.eval()
    before, usage = q(z), q.usage.clone()
    q.to_token_specific()
    after = q(z)
    assert q.token_specific and q.codebooks.shape == (3, 5, 16, 4) and q.get_config()["token_specific"]
    for t in range(5):
        assert torch.equal(q.usage[:, t], usage[:, 0])
    assert torch.equal(before.indices, after.indices) and torch.equal(before.quantized, after.quantized)
    assert q.to_token_specific() is q


def test_init_from_latents_fits_the_data_and_separates_groups():
    torch.manual_seed(0)
    # two kinds of images, far apart: latents around +3 and around -3
    kind = torch.arange(40) % 2
    z = torch.randn(40, 4, 3) * 0.3 + (kind[:, None, None] * 6.0 - 3.0)
    q = SwitchableTokenQuantizer(num_tokens=4, codebook_size=4, dim=3, num_groups=2, router_hidden_dim=8)
    before = q.eval()(z).distances.mean()
    image_groups = q.init_from_latents(z)
    assert image_groups.shape == (40,)
    assert (image_groups == kind).all() or (image_groups == 1 - kind).all()
    out = q(z)
    assert out.distances.mean() < 0.2 * before
    assert torch.equal(out.groups, image_groups)  # "nearest" selection agrees with the clustering


def test_usage_utilization_and_revival():
    torch.manual_seed(0)
    q = SwitchableTokenQuantizer(num_tokens=3, codebook_size=8, dim=2, num_groups=2, train_selection="nearest",
                                 router_hidden_dim=8)
    z = torch.randn(10, 3, 2)
    q.eval()(z)
    assert q.usage.sum() == 0  # eval mode does not count
    out = q.train()(z)
    assert q.usage.sum() == 10 * 3 and q.group_counts.sum() == 10
    assert torch.equal(q.group_counts, torch.bincount(out.groups, minlength=2))
    for b in range(10):
        for t in range(3):
            assert q.usage[out.groups[b], t, out.indices[b, t]] > 0
    u = q.utilization()
    assert 0 < u.min <= u.mean <= u.max <= 1
    assert u.per_codebook.shape == (2, 3)
    dead = int((q.usage == 0).sum())
    assert q.revive_dead_codes(z) == dead
    assert (q.usage == 0).sum() == dead  # revived codes restart their counts
    q.reset_usage()
    assert q.usage.sum() == 0 and q.group_counts.sum() == 0
    assert q.revive_dead_codes(z, threshold=-1) == 0


def test_revived_codes_come_from_the_inputs():
    torch.manual_seed(0)
    q = SwitchableTokenQuantizer(num_tokens=2, codebook_size=4, dim=3)
    with torch.no_grad():
        q.codebooks.fill_(100.0)
    z = torch.randn(5, 2, 3)
    assert q.revive_dead_codes(z) == 8
    for t in range(2):  # each revived code is within 1% noise of some input of its token
        d = torch.cdist(q.codebooks[0, t].detach(), z[:, t]).min(-1).values
        assert (d < 0.2).all()


def test_empty_batch_gives_empty_results():
    q = SwitchableTokenQuantizer(num_tokens=3, codebook_size=8, dim=2, num_groups=2, router_hidden_dim=8)
    z = torch.zeros(0, 3, 2, requires_grad=True)
    out = q(z)
    assert out.quantized.shape == (0, 3, 2) and out.indices.shape == (0, 3) and out.groups.shape == (0,)
    out.loss.backward()  # still differentiable
    codes = q.encode(z.detach())
    assert len(codes) == 0 and q.decode(codes).shape == (0, 3, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_and_autocast(dtype):
    torch.manual_seed(0)
    q = SwitchableTokenQuantizer(num_tokens=4, codebook_size=16, dim=8, num_groups=2, router_hidden_dim=8).eval()
    z = torch.randn(3, 4, 8)
    ref = q(z.to(dtype).float())
    out = q(z.to(dtype))
    assert out.quantized.dtype == dtype
    assert torch.equal(out.indices, ref.indices)  # the search is exact fp32 on the rounded inputs
    assert torch.equal(out.quantized, ref.quantized.to(dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = q(z)
    assert torch.equal(auto.indices, q(z).indices)


@pytest.mark.parametrize("z,exc,match", [
    ([[1.0]], TypeError, "torch.Tensor"),
    (torch.randn(3, 4), ValueError, "shape \\(B, T=4, D=2\\)"),
    (torch.randn(2, 5, 2), ValueError, "T=4"),
    (torch.randn(2, 4, 3), ValueError, "D=2"),
    (torch.ones(2, 4, 2, dtype=torch.int32), TypeError, "floating-point"),
    (torch.tensor([[[float("nan"), 0.0]] * 4]), ValueError, "NaN or Inf"),
    (torch.tensor([[[float("inf"), 0.0]] * 4]), ValueError, "NaN or Inf"),
])
def test_bad_z_is_refused_clearly(z, exc, match):
    q = SwitchableTokenQuantizer(num_tokens=4, codebook_size=8, dim=2)
    with pytest.raises(exc, match=match):
        q(z)
    with pytest.raises(exc, match=match):
        q.encode(z)


def test_decode_refuses_foreign_or_out_of_range_codes():
    q = SwitchableTokenQuantizer(num_tokens=4, codebook_size=8, dim=2, num_groups=2, router_hidden_dim=8)
    with pytest.raises(ValueError, match="\\(T, K, M\\)"):
        q.decode(Codes(torch.zeros(1, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long), 16, 2))
    with pytest.raises(ValueError, match="indices"):
        q.decode(Codes(torch.zeros(1, dtype=torch.long), torch.full((1, 4), 8), 8, 2))
    with pytest.raises(ValueError, match="groups"):
        q.decode(Codes(torch.full((1,), 2), torch.zeros(1, 4, dtype=torch.long), 8, 2))
    with pytest.raises(TypeError, match="Codes"):
        q.decode((torch.zeros(1), torch.zeros(1, 4)))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(num_tokens=0), ValueError, "num_tokens"),
    (dict(codebook_size=2.5), TypeError, "codebook_size"),
    (dict(metric="manhattan"), ValueError, "metric"),
    (dict(train_selection="random"), ValueError, "train_selection"),
    (dict(num_groups=1, inference_selection="router"), ValueError, "num_groups > 1"),
    (dict(commitment_weight=-1.0), ValueError, "commitment_weight"),
    (dict(token_specific="yes"), TypeError, "token_specific"),
    (dict(router_temperature=0.0, num_groups=2), ValueError, "temperature"),
])
def test_bad_constructor_arguments(kwargs, exc, match):
    args = dict(num_tokens=4, codebook_size=8, dim=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        SwitchableTokenQuantizer(**args)


@pytest.mark.parametrize("num_groups", [1, 3])
def test_loss_is_the_weighted_sum_with_router_loss(num_groups):
    """router_loss(out), the router's share that wrappers add to their own losses, is the one in out.loss."""
    torch.manual_seed(0)
    q = SwitchableTokenQuantizer(num_tokens=4, codebook_size=8, dim=3, num_groups=num_groups, router_hidden_dim=8,
                                 commitment_weight=0.5, balance_weight=0.3, decision_weight=0.2, quality_weight=0.7)
    out = q(torch.randn(6, 4, 3))
    want = (0.3 * out.router_balance_loss + 0.2 * out.router_decision_loss + 0.7 * out.router_quality_loss)
    assert torch.equal(q.router_loss(out), want)
    assert torch.allclose(out.loss, out.codebook_loss + 0.5 * out.commitment_loss + want)
    if num_groups == 1:
        assert float(q.router_loss(out)) == 0.0
    else:
        assert q.router_loss(out).requires_grad and float(out.router_balance_loss.detach()) != 0.0


def test_bits_and_bpp_follow_the_formula():
    q = SwitchableTokenQuantizer(num_tokens=128, codebook_size=1024, dim=12, num_groups=16, router_hidden_dim=8)
    assert q.bits_per_image == 128 * 10 + 4
    assert q.bpp(256, 256) == pytest.approx(1284 / 65536)
    assert "bits_per_image=1284" in repr(q)


def test_initialisation_entry_points_refuse_non_finite_latents():
    q = SwitchableTokenQuantizer(num_tokens=4, codebook_size=8, dim=2)
    z = torch.randn(6, 4, 2)
    z[5, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        q.init_from_latents(z)
    with pytest.raises(ValueError, match="NaN or Inf"):
        q.revive_dead_codes(z)
