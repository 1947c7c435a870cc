"""Codebook initialisation helpers and the utilisation report."""
import math

import pytest
import torch

from vqswitch.codebooks import codebooks_from_latents, kmeans, reduce_codebook, utilization


def test_kmeans_recovers_separated_clusters_per_problem():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pts = centres.repeat_interleave(30, 0) + 0.1 * torch.randn(90, 2, generator=g)
    x = torch.stack([pts, pts + 100.0])  # two independent problems
    c = kmeans(x, 3, iters=10, seed=1)
    assert c.shape == (2, 3, 2)
    for p, shift in enumerate([0.0, 100.0]):
        d = torch.cdist(centres + shift, c[p]).min(-1).values
        assert (d < 0.2).all(), d


def test_kmeans_handles_fewer_points_than_clusters_and_cosine():
    x = torch.randn(1, 3, 4)
    c = kmeans(x, 8, iters=3)
    assert c.shape == (1, 8, 4) and torch.isfinite(c).all()
    assert len({tuple(r.tolist()) for r in c[0]}) == 8  # noise keeps the copies distinct
    s = kmeans(torch.randn(2, 50, 4), 5, metric="cosine")
    assert torch.allclose(s.norm(dim=-1), torch.ones(2, 5), atol=1e-5)
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans(x, 0)


def test_seeds_change_the_start():
    x = torch.randn(1, 100, 3)
    assert not torch.equal(kmeans(x, 4, iters=0, seed=0), kmeans(x, 4, iters=0, seed=1))
    assert torch.equal(kmeans(x, 4, seed=3), kmeans(x, 4, seed=3))


def test_reduce_codebook_shapes_and_copy():
    w = torch.randn(20, 3)
    assert torch.equal(reduce_codebook(w, 20, 1)[0], w)
    r = reduce_codebook(w, 20, 3)
    assert torch.equal(r[0], w) and not torch.equal(r[1], w) and torch.allclose(r[1], w, atol=0.2)
    assert reduce_codebook(w, 5, 2).shape == (2, 5, 3)


def test_codebooks_from_latents_shapes():
    z = torch.randn(12, 3, 2)
    books, groups = codebooks_from_latents(z, 4, 2, token_specific=False)
    assert books.shape == (2, 1, 4, 2) and groups.shape == (12,) and set(groups.tolist()) <= {0, 1}


def test_utilization_report():
    usage = torch.zeros(2, 3, 4, dtype=torch.long)
    u = utilization(usage, torch.zeros(2, dtype=torch.long))
    assert math.isnan(u.mean) and torch.isnan(u.per_codebook).all()
    usage[0, 0, :2] = 5   # 2 of 4 codes used
    usage[0, 1, :] = 1    # 4 of 4
    usage[0, 2, 0] = 7    # 1 of 4
    u = utilization(usage, torch.tensor([9, 0]))
    assert (u.min, u.max) == (0.25, 1.0)
    assert u.mean == pytest.approx((0.5 + 1.0 + 0.25) / 3)
    assert u.std == pytest.approx(torch.tensor([0.5, 1.0, 0.25]).std(unbiased=False).item())
    assert torch.isnan(u.per_codebook[1]).all() and u.to_dict()["group_counts"] == [9, 0]
