"""The public API refuses bad arguments with one clear TypeError/ValueError naming the argument, never a deep
traceback from torch's internals, and accepts nothing silently that it would then get wrong."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

from vqswitch import SwitchableTokenQuantizer
from vqswitch.codebooks import codebooks_from_latents, kmeans, reduce_codebook

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "maskgit_vqgan_tiny"


def small(**kw):
    kw.setdefault("router_hidden_dim", 8)
    return SwitchableTokenQuantizer(4, 8, 3, num_groups=2, **kw)


META = torch.randn(2, 4, 3, device="meta")


# ---------------------------------------------------------------- 'meta' tensors (shapes without data)
@pytest.mark.parametrize("call", [
    lambda q: q(META),
    lambda q: q.eval().encode(META),
    lambda q: q.init_from_latents(META),
    lambda q: q.revive_dead_codes(META),
])
def test_meta_latents_are_refused(call):
    with pytest.raises(ValueError, match=r"z .*meta"):
        call(small())


def test_meta_ids_are_refused_by_lookup():
    ids = torch.zeros(2, 4, dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match=r"groups .*meta"):
        small().lookup(ids[:, 0], ids)


def test_a_meta_quantizer_is_refused():
    q = small().to("meta")
    with pytest.raises(ValueError, match=r"meta"):
        q(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"meta"):
        q.eval().encode(torch.randn(2, 4, 3))


def test_from_codebook_refuses_meta_and_non_finite_weights():
    with pytest.raises(ValueError, match=r"weight .*meta"):
        SwitchableTokenQuantizer.from_codebook(torch.randn(8, 3, device="meta"), 4)
    for K in (4, None):  # a k-means reduction, and a copy
        with pytest.raises(ValueError, match=r"weight .*NaN or Inf"):
            SwitchableTokenQuantizer.from_codebook(torch.full((8, 3), math.nan), 4, K)


def test_swap_quantizer_refuses_a_meta_model():
    from vqswitch.adapters import load_pretrained, swap_quantizer

    for kw in ({}, {"num_groups": 2, "codebook_size": 16}):
        with pytest.raises(ValueError, match=r"model.*meta"):
            swap_quantizer(load_pretrained(FIXTURE, adapter="maskgit-vqgan").to("meta"), **kw)
    quantizer = SwitchableTokenQuantizer(64, 16, 32, token_specific=False)
    with pytest.raises(ValueError, match=r"model.*meta"):
        swap_quantizer(load_pretrained(FIXTURE, adapter="maskgit-vqgan").to("meta"), quantizer)
    assert not quantizer.codebooks.is_meta  # the quantizer given was not moved to 'meta' either


# ---------------------------------------------------------------- sizes that cannot be allocated
@pytest.mark.parametrize("kwargs, name", [
    (dict(num_tokens=10**6, codebook_size=10**6, dim=10**3, num_groups=10**3), "codebook"),
    (dict(num_tokens=4, codebook_size=8, dim=10**12, token_specific=False), "codebook"),
    (dict(num_tokens=10**12, codebook_size=8, dim=3, num_groups=2, token_specific=False), "router"),
    (dict(num_tokens=4, codebook_size=8, dim=3, num_groups=2, router_hidden_dim=10**12), "router"),
])
def test_sizes_that_cannot_be_allocated_are_a_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SwitchableTokenQuantizer(**kwargs)


def test_kmeans_with_an_absurd_cluster_count_is_a_value_error():
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans(torch.randn(1, 10, 3), 2**40)
    with pytest.raises(ValueError, match="codebook"):
        SwitchableTokenQuantizer(4, 2**40, 3, token_specific=False)


# ---------------------------------------------------------------- half-precision quantizers (autocast users)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("z_dtype", [torch.float32, "same"])
def test_a_half_precision_quantizer_takes_fp32_and_its_own_dtype(dtype, z_dtype):
    torch.manual_seed(0)
    q = small().to(dtype)
    z = torch.randn(5, 4, 3, dtype=dtype if z_dtype == "same" else z_dtype)
    out = q(z)
    out.loss.backward()
    assert out.quantized.dtype == z.dtype and out.router_probs.dtype == torch.float32
    assert q.router.proj.weight.grad is not None and q.router.proj.weight.grad.dtype == dtype
    q.eval()
    assert q.encode(z) == q.encode(z.to(dtype))


# ---------------------------------------------------------------- constructor arguments
@pytest.mark.parametrize("kwargs, error, name", [
    (dict(router_hidden_dim=8.5), TypeError, "router_hidden_dim"),
    (dict(router_hidden_dim="8"), TypeError, "router_hidden_dim"),
    (dict(router_hidden_dim=None), TypeError, "router_hidden_dim"),
    (dict(router_temperature="1"), TypeError, "router_temperature"),
    (dict(router_temperature=None), TypeError, "router_temperature"),
    (dict(router_temperature=math.inf), ValueError, "router_temperature"),
    (dict(router_temperature=0.0), ValueError, "router_temperature"),
    (dict(check_finite="no"), TypeError, "check_finite"),
    (dict(track_usage="False"), TypeError, "track_usage"),
    (dict(check_finite=1), TypeError, "check_finite"),
])
def test_bad_constructor_arguments_name_themselves(kwargs, error, name):
    with pytest.raises(error, match=name):
        small(**kwargs)


# ---------------------------------------------------------------- integer latents are not cast silently
def test_integer_latents_are_refused():
    ints = torch.ones(4, 4, 3, dtype=torch.long)
    with pytest.raises(TypeError, match="z must be a floating-point"):
        small().init_from_latents(ints)
    with pytest.raises(TypeError, match="z must be a floating-point"):
        codebooks_from_latents(ints, 2)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        kmeans(ints, 2)
    with pytest.raises(TypeError, match="weight must be a floating-point"):
        reduce_codebook(torch.ones(8, 3, dtype=torch.long), 4)


def test_quantizer_from_model_refuses_integer_latents():
    from vqswitch.adapters import load_pretrained, quantizer_from_model

    base = load_pretrained(FIXTURE, adapter="maskgit-vqgan")
    D = base.quantize.embedding.weight.shape[1]
    with pytest.raises(TypeError, match="latents must be a floating-point"):
        quantizer_from_model(base, init="latents", latents=torch.ones(4, 64, D, dtype=torch.long), codebook_size=4)


# ---------------------------------------------------------------- too few images to initialise every code
@pytest.mark.parametrize("token_specific, n, warns", [(True, 15, True), (True, 16, False), (False, 3, True),
                                                      (False, 4, False)])
def test_init_from_latents_warns_when_codebooks_outnumber_their_points(token_specific, n, warns):
    q = small(token_specific=token_specific)  # M=2 groups of K=8 codes; T=4 tokens
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = q.init_from_latents(torch.randn(n, 4, 3))
    assert groups.shape == (n,)
    assert bool(torch.isfinite(q.codebooks).all())
    hits = [w for w in caught if "init_from_latents" in str(w.message)]
    assert bool(hits) == warns, [str(w.message) for w in caught]
