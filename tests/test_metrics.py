"""Evaluation metrics: PSNR/SSIM against closed forms and a float64 loop reference, IDS, the LFW
10-fold verification protocol against a brute-force reference, pairs.txt parsing, codebook-use
tables and the optional plots."""
import json
import math
import statistics
import sys
import types

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from vqswitch.codebooks import utilization
from vqswitch.eval import (VerificationResult, evaluate, group_histogram, identity_similarity, plot_group_histogram,
                           plot_utilization, psnr, ssim, utilization_table, verification_accuracy)

FAST = settings(max_examples=25, deadline=None)


def rand_images(shape, seed=0, dtype=torch.float64):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------------------------- PSNR
def test_psnr_constant_offset_closed_form():
    # dyadic values: x and x + 1/16 are exact, so MSE is exactly 1/256
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) % 128 / 256
    c = 1 / 16
    for L in (1.0, 2.0):
        got = psnr(x, x + c, data_range=L, reduction="none")
        assert got.shape == (2,) and got.dtype == torch.float64
        expected = 20 * math.log10(L / c)
        assert torch.allclose(got, torch.full((2,), expected, dtype=torch.float64), rtol=1e-12, atol=0)
    assert math.isclose(float(psnr(x, x - c)), 10 * math.log10(256), rel_tol=1e-12)


def test_psnr_identical_is_inf_and_mean_is_mean_of_per_image():
    x = rand_images((3, 1, 4, 4))
    assert torch.isinf(psnr(x, x.clone(), reduction="none")).all()
    assert float(psnr(x, x)) == math.inf
    y = x.clone()
    y[0] += 0.1   # MSE 0.01 -> 20 dB
    y[1] += 0.01  # MSE 1e-4 -> 40 dB
    y[2] -= 0.001  # MSE 1e-6 -> 60 dB
    per = psnr(x, y, reduction="none")
    assert torch.allclose(per, torch.tensor([20.0, 40.0, 60.0], dtype=torch.float64), atol=1e-9)
    assert math.isclose(float(psnr(x, y)), 40.0, abs_tol=1e-9)  # mean of the per-image PSNRs
    pooled = 10 * math.log10(1 / ((0.01 + 1e-4 + 1e-6) / 3))
    assert abs(float(psnr(x, y)) - pooled) > 10  # and not the PSNR of the pooled MSE


def test_psnr_data_range_scales_and_dtypes():
    x, y = rand_images((2, 3, 5, 6), 1), rand_images((2, 3, 5, 6), 2)
    assert torch.allclose(psnr(255 * x, 255 * y, 255.0), psnr(x, y, 1.0), rtol=1e-12)
    xh, yh = x.half(), y.half()
    assert torch.equal(psnr(xh, yh, reduction="none"), psnr(xh.double(), yh.double(), reduction="none"))


@FAST
@given(st.floats(1e-4, 0.5), st.floats(1.01, 10.0), st.integers(0, 2**16))
def test_psnr_decreases_as_noise_grows(s1, factor, seed):
    x = rand_images((2, 3, 6, 6), seed)
    n = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    a = psnr(x, x + s1 * n, reduction="none")
    b = psnr(x, x + s1 * factor * n, reduction="none")
    assert (a > b).all()
    assert torch.equal(psnr(x, x + s1 * n), psnr(x + s1 * n, x))  # symmetric


def test_psnr_errors():
    x = torch.rand(1, 1, 4, 4)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        psnr(x.numpy(), x)
    with pytest.raises(TypeError, match="y must be a floating-point"):
        psnr(x, (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\)"):
        psnr(x[0], x[0])
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, torch.rand(1, 1, 4, 5))
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0)
    with pytest.raises(TypeError, match="data_range"):
        psnr(x, x, data_range="1")
    with pytest.raises(ValueError, match="reduction"):
        psnr(x, x, reduction="sum")
    with pytest.raises(ValueError, match="y contains NaN"):
        psnr(x, torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="empty"):
        psnr(x[:0], x[:0])


# ---------------------------------------------------------------------------------- SSIM
def gaussian_2d(ws, sigma):
    r = np.arange(ws) - (ws - 1) / 2
    g = np.exp(-r ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g)
    return w / w.sum()


def ssim_reference(x, y, data_range=1.0, ws=11, sigma=1.5, k1=0.01, k2=0.03):
    """Straightforward float64 SSIM: explicit windows, centred (co)variances, per-image mean."""
    x, y = x.double().numpy(), y.double().numpy()
    w = gaussian_2d(ws, sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    B, C, H, W = x.shape
    out = []
    for b in range(B):
        vals = []
        for c in range(C):
            for i in range(H - ws + 1):
                for j in range(W - ws + 1):
                    px, py = x[b, c, i:i + ws, j:j + ws], y[b, c, i:i + ws, j:j + ws]
                    mx, my = (w * px).sum(), (w * py).sum()
                    vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                    cxy = (w * (px - mx) * (py - my)).sum()
                    vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
        out.append(np.mean(vals))
    return torch.tensor(out, dtype=torch.float64)


def local_means(x, ws=11, sigma=1.5):
    """Gaussian-weighted local means over the valid region, by conv2d with the 2-D window: (B, C, H', W')."""
    w = torch.from_numpy(gaussian_2d(ws, sigma)).view(1, 1, ws, ws)
    B, C, H, W = x.shape
    return F.conv2d(x.double().reshape(B * C, 1, H, W), w).view(B, C, H - ws + 1, W - ws + 1)


def test_ssim_identical_is_one():
    x = rand_images((3, 3, 16, 20), 3)
    assert torch.equal(ssim(x, x.clone(), reduction="none"), torch.ones(3, dtype=torch.float64))
    assert float(ssim(x.float(), x.float())) == 1.0


def test_ssim_constant_images_closed_form():
    # a flat image has zero variance, so only the luminance term is left
    a, c = 0.25, 0.125
    x = torch.full((1, 1, 13, 13), a)
    got = float(ssim(x, x + c))
    c1 = 0.01 ** 2
    expected = (2 * a * (a + c) + c1) / (a ** 2 + (a + c) ** 2 + c1)
    assert math.isclose(got, expected, rel_tol=1e-10)


def test_ssim_constant_shift_changes_only_the_mean_term():
    # y = x + c: sigma_y = sigma_x and sigma_xy = sigma_x^2, so the contrast-structure term is 1
    # and SSIM = mean over positions of (2 mu (mu + c) + C1) / (mu^2 + (mu + c)^2 + C1)
    x = rand_images((2, 3, 18, 15), 4)
    c, L = 0.2, 1.0
    mu = local_means(x)
    c1 = (0.01 * L) ** 2
    expected = ((2 * mu * (mu + c) + c1) / (mu ** 2 + (mu + c) ** 2 + c1)).mean(dim=(1, 2, 3))
    got = ssim(x, x + c, data_range=L, reduction="none")
    assert torch.allclose(got, expected, rtol=0, atol=1e-9)
    assert (got < 1).all()


def test_ssim_matches_reference_on_fixed_images():
    x = rand_images((2, 3, 14, 16), 5)
    y = (x + 0.2 * rand_images((2, 3, 14, 16), 6)).clamp(0, 1)
    assert torch.allclose(ssim(x, y, reduction="none"), ssim_reference(x, y), rtol=0, atol=1e-6)
    # other window, sigma and constants; [-1, 1] images
    x2, y2 = 2 * x - 1, 2 * y - 1
    got = ssim(x2, y2, data_range=2.0, window_size=7, sigma=1.0, k1=0.02, k2=0.05, reduction="none")
    ref = ssim_reference(x2, y2, data_range=2.0, ws=7, sigma=1.0, k1=0.02, k2=0.05)
    assert torch.allclose(got, ref, rtol=0, atol=1e-6)
    assert math.isclose(float(ssim(x, y)), float(ssim_reference(x, y).mean()), abs_tol=1e-6)


@FAST
@given(st.integers(0, 2**16), st.integers(11, 14), st.integers(11, 13), st.sampled_from([1, 3]),
       st.floats(0.0, 1.0))
def test_ssim_random_images_match_reference_symmetric_and_bounded(seed, H, W, C, mix):
    x = rand_images((2, C, H, W), seed)
    y = mix * x + (1 - mix) * rand_images((2, C, H, W), seed + 1)
    s = ssim(x, y, reduction="none")
    assert torch.allclose(s, ssim_reference(x, y), rtol=0, atol=1e-6)
    assert torch.allclose(s, ssim(y, x, reduction="none"), rtol=0, atol=1e-12)
    assert (s <= 1 + 1e-12).all() and (s >= -1).all()


@FAST
@given(st.integers(0, 2**16), st.floats(-0.9, 0.9))
def test_ssim_at_most_one_for_arbitrary_pairs(seed, shift):
    x = rand_images((1, 2, 12, 12), seed)
    y = -x + shift if seed % 2 else rand_images((1, 2, 12, 12), seed + 7) * 2 - 1
    assert float(ssim(x, y, data_range=2.0)) <= 1.0


def test_ssim_low_precision_inputs_compute_in_float64():
    x, y = rand_images((2, 3, 12, 12), 8), rand_images((2, 3, 12, 12), 9)
    for dt in (torch.float16, torch.bfloat16, torch.float32):
        a, b = x.to(dt), y.to(dt)
        assert torch.equal(ssim(a, b, reduction="none"), ssim(a.double(), b.double(), reduction="none"))


def test_ssim_errors():
    x = torch.rand(1, 3, 12, 12)
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        ssim(x[..., :10, :], x[..., :10, :])
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        ssim(x[..., :10], x[..., :10])
    assert ssim(x[..., :5, :5], x[..., :5, :5], window_size=5).item() == 1.0
    with pytest.raises(ValueError, match="window_size must be odd"):
        ssim(x, x, window_size=10)
    with pytest.raises(ValueError, match="sigma"):
        ssim(x, x, sigma=0.0)
    with pytest.raises(TypeError, match="window_size"):
        ssim(x, x, window_size=11.0)
    with pytest.raises(TypeError, match="floating-point"):
        ssim(x.long(), x.long())
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, x[:, :1])


# ---------------------------------------------------------------------------------- identity similarity
def tiny_embed(seed=0, dim=8):
    """A deterministic random conv net: (B, 3, H, W) -> (B, dim)."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(4, 3, 3, 3, generator=g)
    b1 = torch.rand(4, generator=g) + 0.1
    w2 = torch.randn(dim, 4, generator=g)

    def embed(x):
        h = F.relu(F.conv2d(x.float(), w1, b1, stride=2))
        return h.mean(dim=(2, 3)) @ w2.T

    return embed


@FAST
@given(st.integers(0, 2**16), st.integers(1, 6))
def test_ids_of_identical_inputs_is_one(seed, batch_size):
    x = rand_images((5, 3, 9, 9), seed, torch.float32)
    s = identity_similarity(x, x.clone(), tiny_embed(seed % 3), batch_size=batch_size, reduction="none")
    assert s.shape == (5,) and torch.allclose(s, torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-12)


def test_ids_is_the_cosine_of_embeddings_whatever_the_batching():
    x, y = rand_images((7, 3, 4, 4), 10), rand_images((7, 3, 4, 4), 11)
    flat = identity_similarity(x, y, lambda t: t.flatten(1), reduction="none")
    a, b = x.flatten(1), y.flatten(1)
    expected = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    assert torch.allclose(flat, expected, rtol=0, atol=1e-12)
    assert math.isclose(float(identity_similarity(x, y, lambda t: t.flatten(1))), float(expected.mean()), abs_tol=1e-12)
    # the embedding is only ever called on <= batch_size images, and batching does not change the result
    sizes = []
    net = tiny_embed(1)

    def recording(t):
        sizes.append(t.shape[0])
        return net(t)

    s3 = identity_similarity(x, y, recording, batch_size=3, reduction="none")
    assert sizes == [3, 3, 3, 3, 1, 1]
    assert torch.allclose(s3, identity_similarity(x, y, net, batch_size=7, reduction="none"), atol=1e-6)
    assert not torch.allclose(s3, torch.ones(7, dtype=torch.float64))  # different images, different identity


def test_ids_errors():
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(TypeError, match="embed must be callable"):
        identity_similarity(x, x, embed=None)
    with pytest.raises(TypeError, match="embed must return a torch.Tensor"):
        identity_similarity(x, x, lambda t: t.flatten(1).tolist())
    with pytest.raises(ValueError, match=r"\(2, E\)"):
        identity_similarity(x, x, lambda t: t)
    with pytest.raises(ValueError, match="all-zero embedding"):
        identity_similarity(x, x, lambda t: torch.zeros(t.shape[0], 5))
    with pytest.raises(TypeError, match="floating-point embeddings"):
        identity_similarity(x, x, lambda t: torch.ones(t.shape[0], 3, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or Inf embeddings"):
        identity_similarity(x, x, lambda t: torch.full((t.shape[0], 3), float("inf")))
    with pytest.raises(ValueError, match="batch_size"):
        identity_similarity(x, x, tiny_embed(), batch_size=0)


# ---------------------------------------------------------------------------------- verification
def embeddings_with_similarity(sims, dim=8, seed=0):
    """(emb1, emb2) whose row-wise cosine similarities are ``sims`` (random directions and lengths)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.as_tensor(sims, dtype=torch.float64).unsqueeze(1)
    n = s.shape[0]
    u = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    v = torch.randn(n, dim, generator=g, dtype=torch.float64)
    v = F.normalize(v - (v * u).sum(1, keepdim=True) * u, dim=1)
    e2 = s * u + (1 - s ** 2).clamp_min(0).sqrt() * v
    scale1 = torch.rand(n, 1, generator=g, dtype=torch.float64) + 0.5
    scale2 = torch.rand(n, 1, generator=g, dtype=torch.float64) + 0.5
    return u * scale1, e2 * scale2


def lfw_like(flips_per_fold, folds=10, per_fold=60, seed=0):
    """Folds of per_fold/2 same pairs (similarity in [0.6, 0.95]) and per_fold/2 different pairs (in
    [-0.4, 0.2]), shuffled inside each fold; in fold f the labels of flips_per_fold[f] pairs from the
    middle of the clusters are flipped."""
    rng = np.random.default_rng(seed)
    half = per_fold // 2
    sims, same = [], []
    for f in range(folds):
        s = np.concatenate([np.linspace(0.6, 0.95, half), np.linspace(-0.4, 0.2, half)])
        y = np.concatenate([np.ones(half, bool), np.zeros(half, bool)])
        for j in range(flips_per_fold[f]):
            k = 12 + j // 2 + (0 if j % 2 == 0 else half)  # alternate: a same pair, then a different pair
            y[k] = not y[k]
        perm = rng.permutation(per_fold)
        sims.append(s[perm])
        same.append(y[perm])
    return np.concatenate(sims), np.concatenate(same)


def test_verification_separable_pairs_score_one():
    sims, same = lfw_like([0] * 10)
    e1, e2 = embeddings_with_similarity(sims)
    r = verification_accuracy(e1, e2, torch.from_numpy(same))
    assert isinstance(r, VerificationResult)
    assert r.accuracy == 1.0 and r.fold_accuracies == [1.0] * 10 and r.std == 0.0 and r.standard_error == 0.0
    assert r.fold_sizes == [60] * 10
    # the threshold is the midpoint of the gap between different (<= 0.2) and same (>= 0.6) pairs
    assert all(abs(t - 0.4) < 1e-9 for t in r.thresholds)
    assert json.loads(json.dumps(r.to_dict(), allow_nan=False))["accuracy"] == 1.0


def test_verification_label_noise_gives_the_predicted_accuracy_and_std():
    flips = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    sims, same = lfw_like(flips, seed=1)
    e1, e2 = embeddings_with_similarity(sims, seed=1)
    r = verification_accuracy(e1.numpy(), e2.numpy(), same, folds=10)  # numpy inputs work too
    expected = [(60 - k) / 60 for k in flips]  # each flipped pair is misclassified, nothing else is
    assert r.fold_accuracies == pytest.approx(expected, abs=1e-12)
    assert r.accuracy == pytest.approx(sum(expected) / 10, abs=1e-12)
    assert r.std == pytest.approx(statistics.stdev(expected), abs=1e-12)  # sample std, n - 1
    assert r.std > 0 and r.standard_error == pytest.approx(r.std / math.sqrt(10), abs=1e-12)
    assert all(abs(t - 0.4) < 1e-9 for t in r.thresholds)


def test_verification_folds_are_contiguous_with_remainder_in_the_first_folds():
    n = 23
    same = np.arange(n) % 2 == 0
    sims = np.where(same, 0.6 + 0.35 * ((np.arange(n) * 7) % 23) / 22, -0.4 + 0.6 * ((np.arange(n) * 5) % 23) / 22)
    sims[9] = 0.8  # pair 9 (a different pair) looks like a same pair
    e1, e2 = embeddings_with_similarity(sims, seed=2)
    r = verification_accuracy(e1, e2, list(same.tolist()), folds=10)
    assert r.fold_sizes == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]  # 23 = 3 * 3 + 7 * 2
    # fold 3 holds pairs 9 and 10: only there is the outlier held out
    assert r.fold_accuracies == [1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def reference_verification(e1, e2, same, folds, grid=None):
    """Brute force: every candidate threshold tried one by one; ties go to the lowest."""
    a, b = e1.double().numpy(), e2.double().numpy()
    s = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    n = len(s)
    sizes = [n // folds + (1 if f < n % folds else 0) for f in range(folds)]
    start, accs, ths = 0, [], []
    for size in sizes:
        test = np.zeros(n, bool)
        test[start:start + size] = True
        start += size
        st_, yt = s[~test], same[~test]
        if grid is None:
            u = np.unique(st_)
            cands = [-math.inf] + [(u[i] + u[i + 1]) / 2 for i in range(len(u) - 1)] + [math.inf]
        else:
            cands = sorted(set(grid))
        best, best_t = -1, None
        for t in cands:
            acc = int(((st_ >= t) == yt).sum())
            if acc > best:
                best, best_t = acc, t
        accs.append(int(((s[test] >= best_t) == same[test]).sum()) / size)
        ths.append(best_t)
    return accs, ths


@FAST
@given(st.integers(4, 40).flatmap(lambda n: st.tuples(
    # similarity k / 10 for even k: many ties, and no similarity sits on a midpoint threshold between two others
    # (an odd k / 10), where one ulp of the cosine's rounding would decide the comparison
    st.lists(st.integers(-5, 5).map(lambda k: 2 * k), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n),
    st.integers(2, min(10, n)))), st.booleans())
def test_verification_matches_brute_force(data, use_grid):
    ks, labels, folds = data
    ang = torch.tensor([math.acos(k / 10) for k in ks], dtype=torch.float64)
    e1 = torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(len(ks), 2)
    e2 = torch.stack([ang.cos(), ang.sin()], dim=1)
    same = np.array(labels, dtype=bool)
    grid = [-0.95 + 0.1 * i for i in range(20)] + [0.35, -2.0] if use_grid else None
    r = verification_accuracy(e1, e2, torch.from_numpy(same), folds=folds, thresholds=grid)
    accs, ths = reference_verification(e1, e2, same, folds, grid)
    assert r.fold_accuracies == accs
    for got, want in zip(r.thresholds, ths):
        assert got == want if math.isinf(want) else abs(got - want) < 1e-9
    assert r.accuracy == pytest.approx(float(np.mean(accs)), abs=1e-12)
    assert r.std == pytest.approx(float(np.std(accs, ddof=1)), abs=1e-12)


def test_verification_grid_ties_go_to_the_lowest_threshold():
    sims, same = lfw_like([0] * 10)
    sims = np.where(same, sims, np.minimum(sims, 0.19))
    e1, e2 = embeddings_with_similarity(sims)
    r = verification_accuracy(e1, e2, same, thresholds=np.linspace(1, -1, 201))  # given in descending order
    assert r.accuracy == 1.0
    assert all(abs(t - 0.2) < 1e-9 for t in r.thresholds)  # lowest grid value above every different pair


def test_verification_errors():
    e = torch.randn(20, 4)
    same = torch.zeros(20, dtype=torch.bool)
    with pytest.raises(TypeError, match="same must have dtype bool"):
        verification_accuracy(e, e, same.long())
    with pytest.raises(TypeError, match="same must be"):
        verification_accuracy(e, e, [0, 1] * 10)
    with pytest.raises(ValueError, match=r"same must have shape \(N,\)"):
        verification_accuracy(e, e, same[:10])
    with pytest.raises(ValueError, match="emb1 and emb2 must have the same shape"):
        verification_accuracy(e, e[:, :3], same)
    with pytest.raises(ValueError, match="folds must be between 2"):
        verification_accuracy(e, e, same, folds=21)
    with pytest.raises(ValueError, match="folds must be between 2"):
        verification_accuracy(e, e, same, folds=1)
    with pytest.raises(TypeError, match="emb2 must be a torch.Tensor"):
        verification_accuracy(e, e.tolist(), same)
    with pytest.raises(ValueError, match="all-zero embedding at row 3"):
        z = e.clone()
        z[3] = 0
        verification_accuracy(e, z, same)
    with pytest.raises(ValueError, match="thresholds"):
        verification_accuracy(e, e, same, thresholds=[0.1, float("nan")])


# ---------------------------------------------------------------------------------- codebook use
def hand_usage():
    usage = torch.zeros(2, 3, 4, dtype=torch.long)
    usage[0, 0, 0] = 5                  # 1/4 used
    usage[0, 1, :2] = torch.tensor([1, 2])  # 2/4
    usage[0, 2] = 1                     # 4/4
    usage[1, 0, 1:3] = 3                # 2/4
    # (1, 1) saw no data
    usage[1, 2] = torch.tensor([1, 1, 1, 9])  # 4/4
    return usage, torch.tensor([6, 2])


def test_group_histogram():
    h = group_histogram(torch.tensor([1, 3, 0, 4]))
    assert h.dtype == torch.float64 and torch.equal(h, torch.tensor([0.125, 0.375, 0.0, 0.5], dtype=torch.float64))
    with pytest.raises(TypeError, match="integer"):
        group_histogram(torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="all zero"):
        group_histogram(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="non-negative"):
        group_histogram(torch.tensor([1, -1]))
    with pytest.raises(ValueError, match=r"shape \(M,\)"):
        group_histogram(torch.ones(2, 2, dtype=torch.long))


def test_utilization_table_by_hand():
    usage, counts = hand_usage()
    t = utilization_table(utilization(usage, counts))
    json.dumps(t, allow_nan=False)  # strict JSON
    seen = [0.25, 0.5, 1.0, 0.5, 1.0]
    assert t["codebooks"] == 6 and t["codebooks_seen"] == 5
    assert t["overall"]["min"] == 0.25 and t["overall"]["max"] == 1.0
    assert t["overall"]["mean"] == pytest.approx(statistics.fmean(seen))
    assert t["overall"]["std"] == pytest.approx(statistics.pstdev(seen))
    g0, g1 = t["groups"]
    assert (g0["images"], g0["image_fraction"], g0["codebooks_seen"]) == (6, 0.75, 3)
    assert g0["mean"] == pytest.approx(7 / 12) and g0["std"] == pytest.approx(statistics.pstdev([0.25, 0.5, 1.0]))
    assert (g1["images"], g1["image_fraction"], g1["codebooks_seen"]) == (2, 0.25, 2)
    assert (g1["min"], g1["max"], g1["mean"], g1["std"]) == (0.5, 1.0, 0.75, 0.25)
    tok = t["tokens"]
    assert [x["codebooks_seen"] for x in tok] == [2, 1, 2]
    assert [x["mean"] for x in tok] == [0.375, 0.5, 1.0] and tok[1]["std"] == 0.0


def test_utilization_table_without_data_is_json_with_nones():
    t = utilization_table(utilization(torch.zeros(2, 1, 4, dtype=torch.long), torch.zeros(2, dtype=torch.long)))
    nones = {"min": None, "max": None, "mean": None, "std": None}
    assert json.loads(json.dumps(t, allow_nan=False))["overall"] == nones
    assert t["groups"][0]["image_fraction"] is None and t["groups"][1]["mean"] is None
    with pytest.raises(TypeError, match="Utilization"):
        utilization_table({"min": 0})


# ---------------------------------------------------------------------------------- evaluate
def test_evaluate_summary():
    x = rand_images((4, 3, 16, 16), 20, torch.float32)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(21))).clamp(0, 1)
    embed = tiny_embed(2)
    usage, counts = hand_usage()
    d = evaluate(x, y, data_range=1.0, bits_per_image=1284, embed=embed, util=utilization(usage, counts))
    json.dumps(d, allow_nan=False)
    assert (d["images"], d["height"], d["width"], d["bits_per_image"]) == (4, 16, 16, 1284)
    assert d["bpp"] == 1284 / 256
    assert d["psnr"] == pytest.approx(float(psnr(x, y))) and d["psnr_exact_images"] == 0
    assert d["ssim"] == pytest.approx(float(ssim(x, y))) and 0 < d["ssim"] < 1
    assert d["ids"] == pytest.approx(float(identity_similarity(x, y, embed)))
    assert d["utilization"]["codebooks_seen"] == 5
    same = evaluate(x, x.clone(), data_range=1.0, bits_per_image=1032)
    assert "ids" not in same and "utilization" not in same
    assert same["psnr"] is None and same["psnr_exact_images"] == 4 and same["ssim"] == 1.0
    with pytest.raises(ValueError, match="reconstructions"):
        evaluate(x, y[:2], data_range=1.0, bits_per_image=10)
    with pytest.raises(ValueError, match="bits"):
        evaluate(x, y, data_range=1.0, bits_per_image=-1)


# ---------------------------------------------------------------------------------- plots
def hide_matplotlib(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import matplotlib...` raise ImportError


def test_plots_without_matplotlib_raise_a_clear_import_error(monkeypatch, tmp_path):
    hide_matplotlib(monkeypatch)
    usage, counts = hand_usage()
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_utilization(usage, tmp_path / "u.png")
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_group_histogram(counts, tmp_path / "g.png")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="integer"):  # bad input is still reported as such
        plot_utilization(usage.float(), tmp_path / "u.png")


class FakeFigure:
    """Stands in for matplotlib.figure.Figure: records calls, writes a fake PNG."""
    made = []

    def __init__(self, figsize=None):
        self.calls, self.fail = [], False
        FakeFigure.made.append(self)

    def add_subplot(self):
        fig = self

        class Axes:
            def __getattr__(self, name):
                return lambda *a, **k: fig.calls.append((name, a, k)) or object()

        return Axes()

    def colorbar(self, *a, **k):
        self.calls.append(("colorbar", a, k))

    def savefig(self, fname, format=None, **kwargs):
        assert format == "png"
        with open(fname, "wb") as f:
            f.write(b"\x89PNG fake")
            if FakeFigure.fail_next:
                raise RuntimeError("disk full")


def install_fake_matplotlib(monkeypatch, fail=False):
    FakeFigure.made, FakeFigure.fail_next = [], fail
    mpl, fig = types.ModuleType("matplotlib"), types.ModuleType("matplotlib.figure")
    fig.Figure = FakeFigure
    mpl.figure = fig
    monkeypatch.setitem(sys.modules, "matplotlib", mpl)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", fig)


def test_plots_draw_the_right_data_and_write_atomically(monkeypatch, tmp_path):
    install_fake_matplotlib(monkeypatch)
    usage, counts = hand_usage()
    out = plot_utilization(usage, tmp_path / "u.png")
    assert out == tmp_path / "u.png" and out.read_bytes() == b"\x89PNG fake"
    (name, args, _), = [c for c in FakeFigure.made[-1].calls if c[0] == "imshow"]
    data = args[0]
    assert data.shape == (2, 3) and bool(data.mask[1, 1]) and data.mask.sum() == 1
    assert np.allclose(data.filled(-1), [[0.25, 0.5, 1.0], [0.5, -1, 1.0]])
    plot_utilization(utilization(usage, counts), tmp_path / "u2.png")  # a Utilization works too
    (_, args2, _), = [c for c in FakeFigure.made[-1].calls if c[0] == "imshow"]
    assert np.array_equal(args2[0].filled(-1), data.filled(-1))
    plot_group_histogram(counts, tmp_path / "g.png")
    (_, bargs, _), = [c for c in FakeFigure.made[-1].calls if c[0] == "bar"]
    assert np.allclose(bargs[1], [0.75, 0.25])
    # a failing save leaves the old file whole and no temporary behind
    FakeFigure.fail_next = True
    (tmp_path / "g.png").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        plot_group_histogram(counts, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "u.png", "u2.png"]


# (that importing vqswitch.eval or vqswitch.metrics loads no matplotlib is checked with the other optional
# dependencies in tests/test_identity.py::test_importing_data_and_eval_loads_no_optional_dependency)


@pytest.mark.slow
def test_real_plots(tmp_path):
    pytest.importorskip("matplotlib")
    usage, counts = hand_usage()
    for path in (plot_utilization(usage, tmp_path / "u.png"), plot_group_histogram(counts, tmp_path / "g.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------- old import paths
def test_old_module_paths_re_export_the_same_objects():
    """vqswitch.metrics and vqswitch.identity (README's paths) are re-exports of vqswitch.eval, and the pairs-file
    readers vqswitch.eval re-exports are vqswitch.data's."""
    import vqswitch.data
    import vqswitch.eval
    import vqswitch.eval.identity
    import vqswitch.identity
    import vqswitch.metrics

    for name in vqswitch.eval.__all__:
        assert getattr(vqswitch.metrics, name) is getattr(vqswitch.eval, name), name
    for name in vqswitch.eval.identity.__all__:
        assert getattr(vqswitch.identity, name) is getattr(vqswitch.eval.identity, name), name
    for name in ("read_pairs", "parse_pairs", "resolve_pair_image", "PairLine"):
        assert getattr(vqswitch.eval, name) is getattr(vqswitch.data, name), name
