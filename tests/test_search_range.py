"""Finite but extreme inputs: the search either agrees with the float64 reference or refuses with a ValueError.

|z|^2 overflows fp32 for |z| around 1e19 and underflows it for |z| around 1e-19; before the range check,
codes then differed from the float64 search and distances came back as 0 or Inf, with no error."""
from __future__ import annotations

import pytest
import torch

import reference
from vqswitch import SwitchableTokenQuantizer
from vqswitch.kernels import nearest_codeword, nearest_group

METRICS = ("l2", "cosine", "dot")


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(6, 4, 8, generator=g)
    cb = torch.randn(2, 1, 16, 8, generator=g)
    return z, cb, torch.tensor([0, 1, 0, 1, 0, 1])


def exact_or_refused(z, cb, groups, metric):
    """'exact' when both searches agree with float64, 'refused' when both raise the range error."""
    outcomes = []
    for search in (lambda: nearest_codeword(z, cb, groups, metric).indices,
                   lambda: nearest_group(z, cb, metric).group_errors):
        try:
            search()
        except ValueError as e:
            assert "magnitude" in str(e), str(e)
            outcomes.append("refused")
            continue
        r = nearest_codeword(z, cb, groups, metric)
        idx, dist = reference.nearest(z.double(), cb.double(), groups, metric)
        assert torch.equal(r.indices, idx), (metric, float(z.abs().max()), float(cb.abs().max()))
        rel = ((r.distances.double() - dist).abs() / dist.abs().clamp_min(1e-300)).max()
        assert float(rel) < 1e-4, (metric, float(rel))
        errs = nearest_group(z, cb, metric).group_errors.double()
        ref = reference.group_errors(z.double(), cb.double(), metric)
        assert float(((errs - ref).abs() / ref.abs().clamp_min(1e-300)).max()) < 1e-4
        outcomes.append("exact")
    assert outcomes[0] == outcomes[1], outcomes
    return outcomes[0]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("scale", [1e19, 1e20, 1e30, 1e-25, 1e-30, 1e-20])
def test_extreme_latents_and_codes_are_refused(metric, scale):
    z, cb, g = problem()
    assert exact_or_refused(z * scale, cb * scale, g, metric) == "refused"


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("scale", [1.0, 1e15, 1e-15, 3e17, 1e-17])
def test_large_and_small_but_safe_inputs_stay_exact(metric, scale):
    z, cb, g = problem(1)
    assert exact_or_refused(z * scale, cb * scale, g, metric) == "exact"


@pytest.mark.parametrize("metric", ("l2", "cosine"))
@pytest.mark.parametrize("z_scale, cb_scale", [(1e20, 1.0), (1.0, 1e20), (1e-25, 1.0)])
def test_one_side_extreme_is_exact_or_refused(metric, z_scale, cb_scale):
    z, cb, g = problem(2)
    exact_or_refused(z * z_scale, cb * cb_scale, g, metric)


def test_all_zero_latents_are_fine():
    z, cb, g = problem(3)
    assert exact_or_refused(torch.zeros_like(z), cb, g, "l2") == "exact"


def test_the_quantizer_refuses_extreme_latents_and_check_finite_false_skips_the_check():
    z, _, _ = problem(4)
    q = SwitchableTokenQuantizer(4, 16, 8, num_groups=2, router_hidden_dim=8)
    for call in (q.train(), q.eval(), q.eval().encode):
        with pytest.raises(ValueError, match="magnitude"):
            call(z * 1e20)
    q = SwitchableTokenQuantizer(4, 16, 8, check_finite=False)
    q.eval().encode(z * 1e20)  # no sync, no check: documented


def test_fp64_inputs_have_fp64_limits():
    z, cb, g = problem(5)
    assert exact_or_refused(z.double() * 1e30, cb.double() * 1e30, g, "l2") == "exact"
    assert exact_or_refused(z.double() * 1e200, cb.double() * 1e200, g, "l2") == "refused"
