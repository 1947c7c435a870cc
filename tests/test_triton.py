"""The Triton kernel against the float64 reference and the torch path, per metric and dtype.

Without a GPU these run on Triton's CPU interpreter (TRITON_INTERPRET=1, set by conftest.py before
triton is imported). Two things the interpreter cannot show, stated honestly:
- it runs bf16/fp16 ``tl.dot`` wrongly, so the launcher upcasts half tiles to fp32 when interpreting:
  on CPU, half inputs test the kernel's logic on the rounded values, not the native half ``tl.dot``
  (that path is covered by the GPU tests below, which skip without CUDA);
- it accepts ``tl.dot`` tile shapes a GPU rejects, so ``test_block_shapes_are_legal_on_a_gpu`` checks
  the launcher only ever uses tiles a GPU takes (powers of two, at least 16);
- its ``tl.argmin`` always returns the leftmost minimum (NumPy), whatever ``tie_break_left`` says,
  while a GPU's fast variant returns any of them: ties inside one code tile are observable only on a
  GPU (the tie test runs there on CUDA tensors); on CPU, ``test_kernel_asks_for_leftmost_ties`` guards
  the kernel source instead.
"""
import pytest
import torch

pytest.importorskip("triton")

from vqswitch import SwitchableTokenQuantizer  # noqa: E402
from vqswitch.kernels import nearest_codeword, nearest_group, norms, triton_search  # noqa: E402

import reference  # noqa: E402

pytestmark = pytest.mark.triton
METRICS = ["l2", "cosine", "dot"]
ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"

# (B, T, M, token_specific, K, D): odd K and D, T=1, B=1, M=1, shared and token-specific
SHAPES = [
    (1, 1, 1, True, 5, 3),
    (3, 4, 1, True, 70, 12),
    (5, 3, 3, True, 37, 20),
    (4, 5, 2, False, 131, 7),
    (2, 2, 4, False, 9, 64),
]


def _problem(B, T, M, specific, K, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, D, generator=g).to(dtype)  # random, never zeros
    cb = torch.randn(M, T if specific else 1, K, D, generator=g).to(dtype)
    groups = torch.randint(0, M, (B,), generator=g)
    return z.to(DEVICE), cb.to(DEVICE), groups.to(DEVICE)


def _gap(z, cb, groups, metric, idx):
    """How far the chosen codes' true distance (fp64, on the given values) is above the true minimum."""
    d = reference.distances(z.cpu(), cb.cpu(), groups.cpu(), metric)
    chosen = d.gather(-1, idx.cpu().unsqueeze(-1)).squeeze(-1)
    return chosen - d.min(-1).values, d


# bfloat16 takes the half-precision path float16 takes: the fast tier runs float16, the full suite both
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, pytest.param(torch.bfloat16, marks=pytest.mark.slow)])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("shape", SHAPES,
                         ids=lambda s: "B{}T{}M{}{}K{}D{}".format(s[0], s[1], s[2], "s" if s[3] else "h", s[4], s[5]))
def test_fixed_groups_matches_reference(shape, metric, dtype):
    z, cb, groups = _problem(*shape, dtype)
    tri = nearest_codeword(z, cb, groups, metric, backend="triton")
    ref = nearest_codeword(z, cb, groups, metric, backend="torch")
    assert tri.indices.dtype == torch.int64 and tri.distances.dtype == torch.float32
    gap, d = _gap(z, cb, groups, metric, tri.indices)
    ref_gap, _ = _gap(z, cb, groups, metric, ref.indices)
    # error bound relative to what plain torch achieves on the same dtype, plus fp32 rounding
    scale = d.abs().amax(-1)
    assert (gap <= 2 * ref_gap + 1e-5 * (1 + scale)).all()
    # indices equal the reference exactly away from near-ties (products of the rounded values are exact)
    two = d.topk(min(2, d.shape[-1]), dim=-1, largest=False).values
    if d.shape[-1] > 1:
        clear = (two[..., -1] - two[..., 0]) > 1e-4 * (1 + scale)
    else:
        clear = torch.ones_like(gap, dtype=torch.bool)
    assert torch.equal(tri.indices.cpu()[clear], d.argmin(-1)[clear])
    # reported distances are the chosen codes' distances
    chosen = d.gather(-1, tri.indices.cpu().unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(tri.distances.cpu().double(), chosen, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("shape", SHAPES[2:], ids=lambda s: "B{}T{}M{}K{}D{}".format(s[0], s[1], s[2], s[4], s[5]))
def test_all_groups_matches_torch_path(shape, metric):
    z, cb, _ = _problem(*shape, torch.float32, seed=1)
    tri = nearest_group(z, cb, metric, backend="triton")
    ref = nearest_group(z, cb, metric, backend="torch")
    assert torch.allclose(tri.group_errors, ref.group_errors, rtol=1e-5, atol=1e-5)
    assert torch.equal(tri.groups, ref.groups)
    assert torch.equal(tri.indices, ref.indices)
    assert (tri.group_errors.gather(1, tri.groups[:, None]) <= tri.group_errors).all()


@pytest.mark.parametrize("metric", METRICS)
def test_ties_break_toward_lowest_index_across_tiles_and_splits(metric, monkeypatch):
    code = torch.tensor([0.6, -0.8, 0.0] + [0.0] * 13)
    cb = torch.randn(300, 16) * 0.01 + 5.0
    for k in (7, 8, 20, 150, 299):  # the same best code within a tile and in three K tiles
        cb[k] = code
    z = code.expand(2, 3, 16).contiguous()
    want = nearest_codeword(z.to(DEVICE), cb.to(DEVICE), metric=metric, backend="torch").indices
    got = nearest_codeword(z.to(DEVICE), cb.to(DEVICE), metric=metric, backend="triton").indices
    assert torch.equal(got, want)
    if metric != "dot":
        assert (got == 7).all()
    monkeypatch.setattr(triton_search, "_num_splits", lambda *a: 3)  # force a 3-way split of K
    got = nearest_codeword(z.to(DEVICE), cb.to(DEVICE), metric=metric, backend="triton").indices
    assert torch.equal(got, want)


def test_kernel_asks_for_leftmost_ties():
    import inspect

    src = inspect.getsource(triton_search)
    assert "tl.argmin(score, axis=1, tie_break_left=True)" in src
    assert "better = mine & (tile_min < best_val)" in src  # strict: earlier tiles keep ties


def test_split_k_matches_unsplit(monkeypatch):
    z, cb, groups = _problem(3, 2, 2, True, 200, 12, torch.float32, seed=3)
    one = nearest_codeword(z, cb, groups, backend="triton")
    monkeypatch.setattr(triton_search, "_num_splits", lambda *a: 4)
    four = nearest_codeword(z, cb, groups, backend="triton")
    assert torch.equal(one.indices, four.indices) and torch.equal(one.distances, four.distances)


def test_in_place_codebook_updates_are_seen():
    """The kernel reads norms that norms.py caches per codebook version (test_search.py measures the reuse): an
    in-place update (an optimizer step) between two searches is seen by the second."""
    norms.clear_norm_cache()
    z, cb, _ = _problem(2, 3, 1, True, 40, 8, torch.float32, seed=4)
    cb = torch.nn.Parameter(cb)
    first = nearest_codeword(z, cb.detach(), backend="triton")
    assert torch.equal(first.indices, nearest_codeword(z, cb.detach(), backend="triton").indices)
    with torch.no_grad():  # what an optimizer step does: an in-place update bumps the version counter
        cb.mul_(-1.0).add_(0.5)
    got = nearest_codeword(z, cb.detach(), backend="triton")
    want = nearest_codeword(z, cb.detach(), backend="torch")
    assert torch.equal(got.indices, want.indices) and not torch.equal(got.indices, first.indices)


@pytest.mark.slow
def test_norms_of_a_freed_codebook_never_serve_a_new_one_at_its_address():
    """Regression: a key of (address, version, shape) alone can match a new tensor the allocator put at
    a freed codebook's address; the storage weak reference rules that out. Codebooks of one size are freed
    and made again until the allocator hands an address back, and every search must use its own norms."""
    norms.clear_norm_cache()
    z = _problem(2, 3, 1, True, 40, 8, torch.float32, seed=5)[0]
    seen, reused = set(), 0
    for seed in range(20):
        cb = torch.randn(1, 3, 40, 8, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
        reused += cb.data_ptr() in seen
        seen.add(cb.data_ptr())
        got = nearest_codeword(z, cb, backend="triton")
        ref_idx, _ = reference.nearest(z.double().cpu(), cb.double().cpu(), torch.zeros(2, dtype=torch.long), "l2")
        assert torch.equal(got.indices.cpu(), ref_idx)
        del cb
    assert reused  # the allocator did reuse addresses, so the case was exercised


def test_norms_are_keyed_on_the_callers_codebook_not_a_converted_copy():
    """Regression: half codebooks with cosine were converted to fp32 before keying; the fresh copy
    (version 0) could match after an in-place update of the original."""
    norms.clear_norm_cache()
    z, cb, _ = _problem(2, 3, 1, True, 40, 8, torch.float16, seed=6)
    first = nearest_codeword(z, cb, metric="cosine", backend="triton")
    with torch.no_grad():
        cb.mul_(-1)
    got = nearest_codeword(z, cb, metric="cosine", backend="triton")
    want = nearest_codeword(z, cb, metric="cosine", backend="torch")
    assert torch.equal(got.indices, want.indices) and not torch.equal(got.indices, first.indices)


@pytest.mark.parametrize("dim", [1, 3, 8, 12, 16, 17, 64, 100, 256, 1000])
@pytest.mark.parametrize("rows", [1, 16, 17, 33, 10_000])
def test_block_shapes_are_legal_on_a_gpu(rows, dim):
    """tl.dot on a GPU needs power-of-two tiles of at least 16 on every side; the interpreter does not
    check this, so the heuristic is checked here."""
    r, k, d = triton_search.block_sizes(rows, dim)
    for size in (r, k, d):
        assert size >= 16 and size & (size - 1) == 0
    assert d <= 64  # larger D is looped over, keeping register tiles bounded


@pytest.mark.slow  # whole quantizer forwards on the interpreter
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("selection", ["nearest", "router"])
def test_quantizer_results_do_not_change_with_the_backend(metric, selection):
    torch.manual_seed(0)
    kw = dict(num_tokens=4, codebook_size=24, dim=12, num_groups=3, metric=metric, train_selection=selection,
              inference_selection=selection, router_hidden_dim=8)
    qt = SwitchableTokenQuantizer(backend="torch", **kw).to(DEVICE)
    qk = SwitchableTokenQuantizer(backend="triton", **kw).to(DEVICE)
    qk.load_state_dict(qt.state_dict())
    z = torch.randn(5, 4, 12, device=DEVICE)
    for mode in (True, False):
        a, b = qt.train(mode)(z), qk.train(mode)(z)
        assert torch.equal(a.indices, b.indices) and torch.equal(a.groups, b.groups)
        assert torch.equal(a.quantized, b.quantized)
        assert torch.allclose(a.loss, b.loss, rtol=1e-6, atol=1e-7)
    assert qt.encode(z) == qk.encode(z)


def test_auto_picks_triton_only_for_cuda_tensors():
    from vqswitch.kernels import resolve_backend

    cpu = torch.randn(1, 2, 3)
    assert resolve_backend("auto", cpu, cpu) == "torch"  # even when the interpreter is on
    if ON_GPU:
        gpu = cpu.cuda()
        assert resolve_backend("auto", gpu, gpu) == "triton"
        assert resolve_backend("auto", gpu.double(), gpu.double()) == "torch"


# ------------------------------------------------------------------------------------------- GPU only
gpu = pytest.mark.skipif(not ON_GPU, reason="needs CUDA")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_native_half_dot_is_exact_on_rounded_values(dtype):
    z, cb, groups = _problem(64, 128, 4, True, 1024, 64, dtype, seed=5)
    tri = nearest_codeword(z, cb, groups, backend="triton")
    gap, d = _gap(z, cb, groups, "l2", tri.indices)
    assert (gap <= 1e-4 * (1 + d.abs().amax(-1))).all()


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("K,D,metric", [(4096, 12, "l2"), (262144, 256, "dot"), (1024, 256, "cosine")])
def test_gpu_paper_shapes_match_torch_path(K, D, metric):
    T = 1 if K > 100_000 else 32
    z, cb, groups = _problem(4, T, 1, T > 1, K, D, torch.float32, seed=6)
    tri = nearest_codeword(z, cb, groups, metric, backend="triton")
    ref = nearest_codeword(z, cb, groups, metric, backend="torch")
    gap, d = _gap(z, cb, groups, metric, tri.indices)
    assert (gap <= 1e-5 * (1 + d.abs().amax(-1))).all()
    assert (tri.indices == ref.indices).float().mean() > 0.99
