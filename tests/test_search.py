"""The torch search path (vqswitch.kernels) against a float64 brute-force reference."""
import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from vqswitch.kernels import nearest_codeword, nearest_group, plan_tiles, torch_search

import reference
from measure import measure

METRICS = ["l2", "cosine", "dot"]


@st.composite
def problems(draw, max_b=5, max_t=6, max_k=40, max_d=9, max_m=4, dtypes=(torch.float32,)):
    """(z (B, T, D), codebooks (M, T' in {1, T}, K, D), groups (B,)) of random sizes up to the maxima."""
    B, T = draw(st.integers(1, max_b)), draw(st.integers(1, max_t))
    K, D, M = draw(st.integers(1, max_k)), draw(st.integers(1, max_d)), draw(st.integers(1, max_m))
    shared = draw(st.booleans())
    dtype = draw(st.sampled_from(dtypes))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    z = torch.randn(B, T, D, generator=g, dtype=dtype)
    cb = torch.randn(M, 1 if shared else T, K, D, generator=g, dtype=dtype)
    return z, cb, torch.randint(0, M, (B,), generator=g)


def _near_tie_free(z, cb, groups, metric, idx):
    """True where the reference's best and second-best differ by more than fp32 noise."""
    d = reference.distances(z, cb, groups, metric)
    if d.shape[-1] == 1:
        return torch.ones(idx.shape, dtype=torch.bool)
    two = d.topk(2, dim=-1, largest=False).values
    return (two[..., 1] - two[..., 0]) > 1e-4 * (1 + two[..., 0].abs())


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from(METRICS), st.sampled_from([1, 200, 10**9]))
def test_nearest_codeword_matches_reference(problem, metric, budget):
    z, cb, groups = problem
    res = nearest_codeword(z, cb, groups, metric, memory_budget=budget)
    ref_idx, ref_min = reference.nearest(z, cb, groups, metric)
    assert res.indices.dtype == torch.int64 and res.indices.shape == z.shape[:2]
    assert ((res.indices >= 0) & (res.indices < cb.shape[2])).all()
    # the chosen code's true distance is the minimum, up to fp32 rounding
    chosen = reference.distances(z, cb, groups, metric).gather(-1, res.indices.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(chosen, ref_min, rtol=1e-5, atol=1e-5)
    # the reported distance is the chosen code's distance
    assert torch.allclose(res.distances.double(), chosen, rtol=1e-5, atol=1e-5)
    # indices equal exactly away from near-ties
    clear = _near_tie_free(z, cb, groups, metric, res.indices)
    assert torch.equal(res.indices[clear], ref_idx[clear])


@settings(max_examples=40, deadline=None)
@given(problems(), st.sampled_from(METRICS), st.sampled_from([1, 300, 10**9]))
def test_nearest_group_picks_least_total_error(problem, metric, budget):
    z, cb, _ = problem
    res = nearest_group(z, cb, metric, memory_budget=budget)
    ref = reference.group_errors(z, cb, metric)
    assert res.group_errors.shape == ref.shape
    assert torch.allclose(res.group_errors.double(), ref, rtol=1e-4, atol=1e-4)
    # the chosen group's reported error is <= every other group's reported error, exactly
    chosen = res.group_errors.gather(1, res.groups[:, None])
    assert (chosen <= res.group_errors).all()
    # its indices are that group's nearest codes, and distances sum to its error
    per = nearest_codeword(z, cb, res.groups, metric, memory_budget=budget)
    assert torch.equal(per.indices, res.indices)
    assert torch.allclose(res.distances.sum(-1), chosen.squeeze(1), rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(problems(), st.sampled_from(METRICS), st.integers(0, 2**16))
def test_result_independent_of_batch_order_and_chunking(problem, metric, seed):
    z, cb, groups = problem
    perm = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))
    a = nearest_codeword(z, cb, groups, metric, memory_budget=1)
    b = nearest_codeword(z[perm], cb, groups[perm], metric)
    assert torch.equal(a.indices[perm], b.indices)
    ga, gb = nearest_group(z, cb, metric, memory_budget=64), nearest_group(z[perm], cb, metric)
    assert torch.equal(ga.groups[perm], gb.groups) and torch.equal(ga.indices[perm], gb.indices)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("budget", [1, 10**9])
def test_ties_break_toward_lowest_index_and_group(metric, budget):
    code = torch.tensor([0.6, -0.8, 0.0])
    cb = torch.stack([torch.tensor([5.0, 5.0, 5.0]), code, code, torch.tensor([9.0, 0, 0]), code])  # codes 1, 2, 4 tie
    z = code.expand(3, 2, 3).contiguous()
    res = nearest_codeword(z, cb, metric=metric, memory_budget=budget)
    expect = 3 if metric == "dot" else 1  # "dot": the largest inner product is code 3
    assert (res.indices == expect).all()
    groups_cb = torch.stack([cb[[0, 3]], cb[[1, 2]], cb[[1, 4]]]).unsqueeze(1)  # groups 1 and 2 tie
    g = nearest_group(z, groups_cb, metric, memory_budget=budget)
    assert (g.groups == (0 if metric == "dot" else 1)).all()


def test_matches_cdist_argmin_on_a_plain_codebook():
    g = torch.Generator().manual_seed(1)
    z, cb = torch.randn(7, 11, 5, generator=g), torch.randn(33, 5, generator=g)
    res = nearest_codeword(z, cb)
    expect = torch.cdist(z.reshape(-1, 5).double(), cb.double()).argmin(-1).view(7, 11)
    assert torch.equal(res.indices, expect)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_inputs_search_in_fp32_or_better(dtype):
    g = torch.Generator().manual_seed(2)
    z, cb = torch.randn(4, 6, 8, generator=g).to(dtype), torch.randn(6, 50, 8, generator=g).to(dtype)
    res = nearest_codeword(z, cb)
    # exactly the fp32 (fp64) search of the same, already-rounded values
    ref_idx, _ = reference.nearest(z.double(), cb.double().unsqueeze(0), torch.zeros(4, dtype=torch.long), "l2")
    assert torch.equal(res.indices, ref_idx)
    assert res.distances.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(nearest_codeword(z, cb).indices, ref_idx)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.integers(1, 1024), st.integers(1, 5000), st.integers(1, 70000),
       st.integers(1, 300), st.integers(1, 2**28))
def test_tile_plan_respects_the_budget(groups, tokens, rows, codes, dim, budget):
    for itemsize in (4, 8):
        p = plan_tiles(groups, tokens, rows, codes, dim, budget, itemsize=itemsize)
        assert 1 <= p.groups <= groups and 1 <= p.tokens <= tokens and 1 <= p.rows <= rows and 1 <= p.codes <= codes
        cap = max(1, budget // (4 * itemsize))
        if cap >= 2 * dim + 10:  # room for one code and one row: the whole working set fits the cap
            assert p.elements <= p.working_elements(dim) <= cap


# (B, T, K, D, M, shared books, dtype, metric, path): both paths, both layouts, fp32/fp64, every metric
PEAK_CASES = [
    (32, 16, 2048, 16, 8, False, torch.float32, "l2", "bucket"),
    (32, 16, 1024, 16, 4, False, torch.float64, "cosine", "gather"),
    (48, 16, 2048, 16, 12, True, torch.float32, "cosine", "gather"),
    (48, 16, 2048, 8, 12, True, torch.float64, "dot", "auto"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", PEAK_CASES, ids=lambda c: "-".join(map(str, c[5:])).replace("torch.", ""))
def test_peak_memory_of_both_selections_stays_within_the_budget_measured(case):
    """The most memory a search holds at once (every live allocation, the allocator's view) stays within
    memory_budget plus what the docs grant beyond it (outputs, the codebook norms, one copy of z), while the
    (B, T, K) distances alone would be 16x the budget or more; and the search is still the exact one."""
    B, T, K, D, M, shared, dtype, metric, path = case
    budget = 1 << 18
    g = torch.Generator().manual_seed(sum(case[:5]))
    z = torch.randn(B, T, D, generator=g, dtype=dtype)
    cb = torch.randn(M, 1 if shared else T, K, D, generator=g, dtype=dtype)
    groups = torch.randint(0, M, (B,), generator=g)
    torch_search.search_fixed_groups(z[:1], cb[:1, :, :2].clone(), None, metric, budget)  # lazy one-time set-up
    size = z.element_size()
    granted = ({"l2": 1, "cosine": 2, "dot": 0}[metric] * cb[..., 0].numel() * size  # norms (computed here)
               + z.numel() * size + B * T * (8 + size))  # one copy of z; indices and distances
    assert B * T * K * size >= 16 * budget
    fixed = measure(lambda: torch_search.search_fixed_groups(z, cb, groups, metric, budget, path=path))
    assert 0 < fixed.peak <= budget + granted, (fixed.peak, budget, granted)
    every = measure(lambda: torch_search.search_all_groups(z, cb, metric, budget))
    assert 0 < every.peak <= budget + granted + B * (8 + M * size), (every.peak, budget, granted)  # + groups, errors
    i, d = fixed.result
    ref_i, _ = reference.nearest(z.double(), cb.double(), groups, metric)
    clear = _near_tie_free(z.double(), cb.double(), groups, metric, i)
    assert torch.equal(i[clear], ref_i[clear])
    chosen = every.result[3].gather(1, every.result[0][:, None])
    assert (chosen <= every.result[3]).all()


def test_memory_stays_within_budget_measured():
    """Peak allocation of any op (CPU profiler) stays within the budget, while the full distance
    tensor would be 32x larger."""
    budget = 1 << 20
    z = torch.randn(64, 64, 16)
    cb = torch.randn(64, 2048, 16)  # full (B, T, K) fp32 distances: 32 MiB
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        nearest_codeword(z, cb, memory_budget=budget)
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < biggest <= budget, biggest
    full = 64 * 64 * 2048 * 4
    assert full >= 32 * budget


@pytest.mark.parametrize("bad,match,exc", [
    (dict(z=torch.randn(2, 3)), "shape \\(B, T, D\\)", ValueError),
    (dict(z=torch.ones(2, 3, 4, dtype=torch.long)), "floating-point", TypeError),
    (dict(codebooks=torch.randn(2, 5, 7, 4)), "T=3 tokens", ValueError),
    (dict(codebooks=torch.randn(3, 7, 5)), "dim", ValueError),
    (dict(metric="hamming"), "metric", ValueError),
    (dict(backend="cuda"), "backend", ValueError),
    (dict(groups=torch.tensor([0, 2])), "groups must lie in \\[0, 2\\)", ValueError),
    (dict(groups=torch.tensor([0.0, 1.0])), "integer tensor", TypeError),
    (dict(groups=torch.tensor([0])), "shape \\(B,\\)", ValueError),
    (dict(groups=None), "groups is required", ValueError),
    (dict(memory_budget=0), "memory_budget", ValueError),
])
def test_bad_input_gives_clear_errors(bad, match, exc):
    args = dict(z=torch.randn(2, 3, 4), codebooks=torch.randn(2, 3, 7, 4), groups=torch.tensor([0, 1]))
    args.update(bad)
    with pytest.raises(exc, match=match):
        nearest_codeword(args.pop("z"), args.pop("codebooks"), **args)


def test_triton_backend_on_cpu_without_the_interpreter_is_refused_clearly(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend='triton' needs"):
        nearest_codeword(torch.randn(1, 2, 3), torch.randn(4, 3), backend="triton")
    with pytest.raises(ValueError, match="float64"):
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        nearest_codeword(torch.randn(1, 2, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64),
                         backend="triton")


def test_nan_and_inf_are_refused_inside_the_op():
    z = torch.randn(2, 3, 4)
    z[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        nearest_codeword(z, torch.randn(5, 4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        nearest_group(z, torch.randn(2, 1, 5, 4))
    assert nearest_codeword(z, torch.randn(5, 4), check_finite=False).indices.shape == (2, 3)


@settings(max_examples=80, deadline=None)
@given(st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]), st.integers(1, 3000),
       st.lists(st.tuples(st.integers(0, 2**31), st.sampled_from([float("nan"), float("inf"), -float("inf")])),
                max_size=3), st.floats(1e-3, 1e4))
def test_all_finite_agrees_with_isfinite(dtype, n, bad, scale):
    from vqswitch.kernels import all_finite

    z = (torch.randn(n, generator=torch.Generator().manual_seed(n)) * scale).to(dtype)
    for pos, v in bad:
        z[pos % n] = v
    assert all_finite(z.reshape(1, n, 1)) == bool(torch.isfinite(z).all())


def test_all_finite_takes_extreme_finite_values():
    from vqswitch.kernels import all_finite

    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        info = torch.finfo(dtype)
        assert all_finite(torch.tensor([info.min, info.max, info.tiny, -0.0], dtype=dtype))
        assert not all_finite(torch.tensor([info.min, float("nan")], dtype=dtype))


@pytest.mark.slow
def test_finite_check_stays_within_budget_measured():
    """Regression: torch.isfinite(z).all() allocated ~1.6x |z| beside the search's budget."""
    from torch.profiler import ProfilerActivity, profile

    budget = 1 << 20
    z = torch.randn(256, 64, 64)  # 4 MiB of input, 4x the budget
    cb = torch.randn(64, 128, 64)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        nearest_codeword(z, cb, memory_budget=budget)
        nearest_group(z, cb[None], memory_budget=budget)
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < biggest <= budget, biggest
    z[3, 2, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        nearest_codeword(z, cb, memory_budget=budget)


# --- the gather path of fixed-group search (many groups, few images each) ---

def many_group_problems():
    """Up to 12 groups for up to 9 images: many groups hold one image or none; fp32 and fp64."""
    return problems(max_b=9, max_t=5, max_k=30, max_d=8, max_m=12, dtypes=(torch.float32, torch.float64))


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(many_group_problems(), st.sampled_from(METRICS), st.sampled_from([1, 500, 10**9]))
def test_gather_path_agrees_with_bucket_path(problem, metric, budget):
    z, cb, groups = problem
    bi, bd = torch_search.search_fixed_groups(z, cb, groups, metric, budget, path="bucket")
    gi, gd = torch_search.search_fixed_groups(z, cb, groups, metric, budget, path="gather")
    assert gi.shape == bi.shape == z.shape[:2] and gi.dtype == torch.int64
    assert gd.dtype == bd.dtype == z.dtype  # float64 stays float64, float32 stays float32
    clear = _near_tie_free(z.double(), cb.double(), groups, metric, gi)
    assert torch.equal(gi[clear], bi[clear])
    # each reported distance is the chosen code's exact distance, and the minimum
    d = reference.distances(z.double(), cb.double(), groups, metric)
    chosen = d.gather(-1, gi.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(gd.double(), chosen, rtol=1e-5, atol=1e-5)
    assert torch.allclose(chosen, d.min(-1).values, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ai, _ = torch_search.search_fixed_groups(z, cb, groups, metric, budget, path="gather")
    assert torch.equal(ai, gi)


def test_gather_path_breaks_ties_toward_the_lowest_index():
    code = torch.tensor([0.6, -0.8, 0.0])
    book = torch.stack([torch.tensor([5.0, 5.0, 5.0]), code, code, torch.tensor([9.0, 0, 0]), code])
    cb = torch.stack([book, book.flip(0)]).unsqueeze(1)  # group 1: codes 0, 2, 3 tie
    z = code.expand(4, 2, 3).contiguous()
    i, _ = torch_search.search_fixed_groups(z, cb, torch.tensor([0, 1, 1, 0]), "l2", 1, path="gather")
    assert i.tolist() == [[1, 1], [0, 0], [0, 0], [1, 1]]


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_auto_path_chooses_a_path_and_agrees_with_both(shared, device_type):
    """"auto" only chooses how to search, never what is found: one group present is always one block (bucket);
    every choice is a real path; the default search equals both explicit paths and the reference."""
    for batch in (1, 2, 8, 64, 256):
        for present in range(1, min(batch, 64) + 1):
            path = torch_search.choose_path(batch, present, shared, device_type)
            assert path in ("bucket", "gather") and (present > 1 or path == "bucket")
    g = torch.Generator().manual_seed(3)
    z, cb = torch.randn(8, 4, 3, generator=g), torch.randn(8, 1 if shared else 4, 5, 3, generator=g)
    for groups in (torch.arange(8), torch.zeros(8, dtype=torch.long), torch.tensor([0, 0, 0, 0, 0, 0, 1, 7])):
        res = nearest_codeword(z, cb, groups, "l2", backend="torch")
        ref_idx, _ = reference.nearest(z, cb, groups, "l2")
        assert torch.equal(res.indices, ref_idx)
        for path in ("bucket", "gather"):
            i, d = torch_search.search_fixed_groups(z, cb, groups, "l2", path=path)
            assert torch.equal(i, res.indices) and torch.equal(d, res.distances)
    with pytest.raises(ValueError, match="path must be one of"):
        torch_search.search_fixed_groups(z, cb, torch.arange(8), "l2", path="fast")


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_gather_path_memory_stays_within_budget_measured(metric):
    """Peak allocation of any op stays within the budget on the gather path, for shared and
    token-specific books, while gathering the whole batch's books at once would be far larger."""
    from torch.profiler import ProfilerActivity, profile

    budget = 1 << 20
    g = torch.Generator().manual_seed(4)
    z = torch.randn(32, 64, 16, generator=g)
    shared_cb = torch.randn(32, 1, 2048, 16, generator=g)  # (B, T, K) distances: 16 MiB
    token_cb = torch.randn(16, 64, 128, 16, generator=g)  # 32 images' (T, K, D) books: 16 MiB
    groups = torch.arange(32)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        i, _ = torch_search.search_fixed_groups(z, shared_cb, groups, metric, budget, path="gather")
        j, _ = torch_search.search_fixed_groups(z, token_cb, groups % 16, metric, budget, path="gather")
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < biggest <= budget, biggest
    assert 32 * 64 * 2048 * 4 >= 16 * budget and 32 * 64 * 128 * 16 * 4 >= 16 * budget
    assert torch.equal(i, torch_search.search_fixed_groups(z, shared_cb, groups, metric, budget, path="bucket")[0])
    assert torch.equal(j, torch_search.search_fixed_groups(z, token_cb, groups % 16, metric, budget, path="bucket")[0])


# --- codebook norms (kernels/norms.py), computed in chunks ---

from vqswitch.kernels import norms  # noqa: E402


@settings(max_examples=50, deadline=None)
@given(st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]), st.integers(1, 3),
       st.integers(1, 4), st.integers(1, 50), st.integers(1, 9),
       st.sampled_from(["contiguous", "expanded", "transposed"]),
       st.sampled_from(["l2", "cosine"]), st.integers(1, 64))
def test_codebook_norms_in_chunks_match_the_direct_computation(dtype, M, T, K, D, layout, metric, chunk):
    g = torch.Generator().manual_seed(M * 100 + K)
    base = torch.randn(M, 1 if layout == "expanded" else T, K, D, generator=g)
    base[..., 0, :] = 0  # a zero code: cosine clamps its norm
    if layout == "expanded":  # one token book seen by every token (stride 0)
        cb = base.to(dtype).expand(M, T, K, D)
    elif layout == "transposed":
        cb = base.transpose(0, 1).contiguous().to(dtype).transpose(0, 1)
    else:
        cb = base.to(dtype)
    real, norms.CHUNK_ELEMENTS = norms.CHUNK_ELEMENTS, chunk
    try:
        norms.clear_norm_cache()
        sq, inv = norms.codebook_norms(cb, metric)
    finally:
        norms.CHUNK_ELEMENTS = real
        norms.clear_norm_cache()
    want_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    n = torch.linalg.vector_norm(cb.to(want_dtype), dim=-1)
    assert sq.dtype == want_dtype and sq.shape == (M, T, K)
    if metric == "cosine":
        want_inv = 1.0 / n.clamp_min(1e-12)
        assert torch.allclose(inv, want_inv, rtol=1e-6) and torch.allclose(sq, (n * want_inv).square(), rtol=1e-6)
    else:
        assert inv.numel() == 0 and torch.allclose(sq, n.square(), rtol=1e-6)


@pytest.mark.slow
def test_codebook_norms_of_half_books_hold_no_full_precision_copy_measured():
    """Regression: the norms of bf16 books were computed on a float32 copy of the whole codebook."""
    from torch.profiler import ProfilerActivity, profile

    cb = torch.randn(4, 32, 512, 64).to(torch.bfloat16)  # 8 MiB of books; an fp32 copy is 16 MiB
    norms.clear_norm_cache()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        sq, _ = norms.codebook_norms(cb, "l2")
    norms.clear_norm_cache()
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert biggest <= max(sq.numel() * 4, 2 * norms.CHUNK_ELEMENTS * 4), biggest
    assert biggest < cb.numel() * 4 // 2


_RSS_PROBE = r"""
import re, sys, torch
from vqswitch.kernels import nearest_codeword
def field(name):
    return int(re.search(name + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024
torch.set_num_threads(1)
metric = sys.argv[1]
z = torch.rand(512, 256, 128)  # 64 MiB of tokens
cb = torch.rand(4, 256, 16, 128)
groups = torch.arange(512) % 4
nearest_codeword(z[:2], cb, groups[:2], metric, memory_budget=1 << 20)  # lazy set-up, small
with torch.no_grad():
    open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to the current RSS
    before = field("VmRSS")
    nearest_codeword(z, cb, groups, metric, memory_budget=1 << 20)
    print((field("VmHWM") - before) / z.numel() / 4)
"""


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_bucket_path_copies_z_a_chunk_at_a_time_measured(metric):
    """Regressions: sorting images into the token-major copy went through index_select on a transposed
    view, which first made all of z contiguous (two z-sized copies at once: MaskGIT B=256 peaked at
    156 MiB against 113 MiB allowed); then the whole sorted copy of z was held (98 MiB). The bucket path
    now copies at most a quarter of the budget of images at a time: with z 64x the budget, the peak
    resident growth is a few % of z (outputs, norms, chunks; measured 3-4%)."""
    import os
    import subprocess
    import sys

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, metric], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    growth_in_z = float(out.stdout.strip().splitlines()[-1])
    assert growth_in_z < 0.25, growth_in_z


@settings(max_examples=40, deadline=None)
@given(many_group_problems(), st.sampled_from(METRICS), st.sampled_from(["auto", "bucket", "gather"]),
       st.sampled_from([1, 500, 10**9]))
@pytest.mark.slow
def test_search_never_writes_to_its_inputs(problem, metric, path, budget):
    """The search works in place on its own buffers only: z, the codebooks and groups come back bitwise
    unchanged on every path (in-place normalisation and running minima must never alias an input)."""
    z, cb, groups = problem
    before = [t.clone() for t in (z, cb, groups)]
    torch_search.search_fixed_groups(z, cb, groups, metric, budget, path=path)
    torch_search.search_all_groups(z, cb, metric, budget)
    nearest_codeword(z, cb, groups, metric, memory_budget=budget)
    for t, b in zip((z, cb, groups), before):
        assert torch.equal(t, b)


def test_norms_are_computed_once_per_codebook_version_measured():
    """A second search of an unchanged codebook does not compute its norms again (it allocates at least their
    size less); an in-place update (an optimizer step) is seen: the norms are recomputed and the codes found
    are the new codebook's."""
    g = torch.Generator().manual_seed(7)
    cb = torch.nn.Parameter(torch.randn(2, 4, 8192, 6, generator=g))
    z = torch.randn(5, 4, 6, generator=g)
    groups = torch.arange(5) % 2
    norm_bytes = cb[..., 0].numel() * 4
    nearest_codeword(z, torch.randn(1, 4, 3, 6), None)  # lazy one-time set-up
    norms.clear_norm_cache()
    first = measure(lambda: nearest_codeword(z, cb.detach(), groups))
    again = measure(lambda: nearest_codeword(z, cb.detach(), groups))
    assert first.allocated - again.allocated >= norm_bytes, (first.allocated, again.allocated, norm_bytes)
    assert torch.equal(first.result.indices, again.result.indices)
    with torch.no_grad():
        cb.mul_(-1.0).add_(0.5)
    updated = measure(lambda: nearest_codeword(z, cb.detach(), groups))
    assert updated.allocated - again.allocated >= norm_bytes
    ref_idx, _ = reference.nearest(z.double(), cb.detach().double(), groups, "l2")
    assert torch.equal(updated.result.indices, ref_idx)
    assert not torch.equal(updated.result.indices, first.result.indices)
    norms.clear_norm_cache()


def test_norms_of_a_training_codebook_are_held_once_measured():
    """Regression: every optimizer step bumps the codebook's version and used to add a cache entry; stale
    versions (never hit again) stayed until evicted, holding up to 4x the norms of a large codebook. Six steps
    now leave the norms of the latest version only (and the small one's), and every step sees its update."""
    g = torch.Generator().manual_seed(8)
    cb = torch.nn.Parameter(torch.randn(3, 4, 4096, 6, generator=g))
    other = torch.randn(2, 4, 16, 6, generator=g)
    z = torch.randn(5, 4, 6, generator=g)
    norm_bytes = cb[..., 0].numel() * 4
    nearest_codeword(z, torch.randn(1, 4, 3, 6), None)  # lazy one-time set-up
    norms.clear_norm_cache()  # nothing allocated by an earlier measured call is freed below (see measure.py)

    def train():
        for _ in range(6):
            with torch.no_grad():
                cb.add_(0.01)  # what an optimizer step does
            res = nearest_codeword(z, cb.detach(), torch.arange(5) % 3)
            nearest_codeword(z, other, torch.arange(5) % 2)
            ref_idx, _ = reference.nearest(z.double(), cb.detach().double(), torch.arange(5) % 3, "l2")
            assert torch.equal(res.indices, ref_idx)

    steps = measure(train)
    assert norm_bytes <= steps.retained <= norm_bytes * 1.5, (steps.retained, norm_bytes)
    norms.clear_norm_cache()
