"""Tests of vqswitch.entropy: lossless range coding of STSCQ codes under a learned, smoothed count model."""
from __future__ import annotations

import copy
import hashlib
import math
import os
import pathlib
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import vqswitch.entropy as entropy
from vqswitch import Codes, SwitchableTokenQuantizer
from vqswitch.bits import bits_per_image
from vqswitch.entropy import FILE_NAME, EntropyDecodeError, EntropyModel

OVERHEAD_BITS = 64  # sealing + word padding, per stream (module docstring)
QUANT_REL = 0.01  # generous bound on the fixed-point rounding overhead, relative to the ideal length


# ---------------------------------------------------------------------------------------------- helpers
@st.composite
def model_and_codes(draw, max_b: int = 6):
    """(EntropyModel, groups (B,), indices (B, T)) with random shapes, counts and codes."""
    m = draw(st.integers(1, 4))
    t = draw(st.integers(1, 6))
    k = draw(st.integers(1, 40))
    token_specific = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0, 1, 10, 10**6, 2**40]))
    smoothing = draw(st.sampled_from([0.5, 1.0, 1e-6, 3.25, 1e-12]))
    b = draw(st.integers(0, max_b))
    rng = np.random.default_rng(seed)
    tp = t if token_specific else 1
    counts = rng.integers(0, 4, (m, tp, k)) * rng.integers(0, scale + 1, (m, tp, k))
    gcounts = rng.integers(0, scale + 1, m)
    model = EntropyModel(counts, gcounts, num_tokens=t, smoothing=smoothing)
    groups = rng.integers(0, m, b)
    indices = rng.integers(0, k, (b, t))
    return model, groups, indices


def sample_codes(model: EntropyModel, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw codes from the model's own smoothed distribution (so the ideal length is the entropy)."""
    rng = np.random.default_rng(seed)
    gc = model.group_counts.numpy() + model.smoothing
    groups = rng.choice(model.num_groups, size=batch, p=gc / gc.sum())
    counts = model.code_counts.numpy() + model.smoothing
    indices = np.empty((batch, model.num_tokens), dtype=np.int64)
    for b, g in enumerate(groups):
        for t in range(model.num_tokens):
            row = counts[g, t if model.token_specific else 0]
            indices[b, t] = rng.choice(model.codebook_size, p=row / row.sum())
    return groups, indices


def small_quantizer(token_specific=True, num_groups=2, seed=0) -> SwitchableTokenQuantizer:
    torch.manual_seed(seed)
    return SwitchableTokenQuantizer(num_tokens=4, codebook_size=8, dim=3, num_groups=num_groups,
                                    token_specific=token_specific, backend="torch")


def manual_counts(groups, indices, m, t, k, token_specific):
    counts = np.zeros((m, t if token_specific else 1, k), dtype=np.int64)
    for g, row in zip(np.asarray(groups), np.asarray(indices)):
        for tok, i in enumerate(row):
            counts[g, tok if token_specific else 0, i] += 1
    return counts, np.bincount(np.asarray(groups), minlength=m)


# ---------------------------------------------------------------------------------------------- round trip
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_and_codes())
def test_round_trip_is_exact(case):
    model, groups, indices = case
    data = model.encode(groups, indices)
    assert isinstance(data, bytes) and len(data) % 4 == 0
    g, idx = model.decode(data, len(groups))
    assert g.dtype == torch.int64 and idx.dtype == torch.int64
    assert g.shape == (len(groups),) and idx.shape == (len(groups), model.num_tokens)
    np.testing.assert_array_equal(g.numpy(), groups)
    np.testing.assert_array_equal(idx.numpy(), indices)
    # the actual length is the ideal one plus at most the documented overhead
    info = float(model.information_bits(groups, indices).sum())
    assert len(data) * 8 <= info * (1 + QUANT_REL) + OVERHEAD_BITS
    # deterministic: a second, equal model writes the same bytes
    twin = EntropyModel(model.code_counts, model.group_counts, num_tokens=model.num_tokens,
                        smoothing=model.smoothing)
    assert twin.encode(torch.as_tensor(groups), torch.as_tensor(indices)) == data


def test_round_trip_with_torch_inputs_and_tiny_model_cache(monkeypatch):
    monkeypatch.setattr(entropy, "_MODEL_CACHE_BYTES", 3 * 5 * 30 * 4)  # room for 3 groups' rows: evictions happen
    rng = np.random.default_rng(0)
    model = EntropyModel(torch.from_numpy(rng.integers(0, 9, (7, 5, 30))), torch.arange(7), num_tokens=5)
    groups, indices = torch.from_numpy(rng.integers(0, 7, 60)), torch.from_numpy(rng.integers(0, 30, (60, 5)))
    data = model.encode(groups.int(), indices.short())
    g, idx = model.decode(bytearray(data), 60)
    assert torch.equal(g, groups) and torch.equal(idx, indices)
    assert len(model._cache) <= 3


def test_large_codebook_round_trip():
    rng = np.random.default_rng(1)
    model = EntropyModel(rng.integers(0, 3, (1, 256, 8192)), np.array([5]), num_tokens=256)
    groups, indices = np.zeros(3, dtype=np.int64), rng.integers(0, 8192, (3, 256))
    g, idx = model.decode(model.encode(groups, indices), 3)
    np.testing.assert_array_equal(idx.numpy(), indices)
    assert g.tolist() == [0, 0, 0]


def test_golden_streams_and_fingerprint():
    """Fixed bytes: the format must not drift between machines or constriction releases."""
    m, t, k = 3, 4, 50
    counts = (np.arange(m * t * k).reshape(m, t, k) % 7) ** 3
    model = EntropyModel(counts, np.array([5, 0, 9]), num_tokens=t, smoothing=0.5)
    shared = EntropyModel(counts[:, :1], np.array([5, 0, 9]), num_tokens=t, smoothing=0.5)
    b = 40
    groups, indices = np.arange(b) % m, (np.arange(b * t).reshape(b, t) * 7919) % k
    data = model.encode(groups, indices)
    assert (len(data), hashlib.sha256(data).hexdigest()) == (
        164, "0e300d00aba684b82c795e48d98d28d6325498909b9cf253cd04095fb3fadc2f")
    data = shared.encode(groups, indices)
    assert (len(data), hashlib.sha256(data).hexdigest()) == (
        168, "5caff896d9ed49118747a2c04118c122da6567cdd0e99a46444e77413e2d9a9b")
    small = EntropyModel(np.arange(30).reshape(2, 3, 5) % 4, np.array([7, 2]), num_tokens=3, smoothing=0.25)
    assert small.fingerprint() == "5d0fac55a4c9e9e1c3800ff904386920cf78e899f1af8ff8953ae90ce2875e01"
    assert small.encode(np.array([0, 1, 1]), np.array([[0, 1, 2], [3, 4, 0], [4, 4, 4]])).hex() == "5db72802fd6f82b2"


# ---------------------------------------------------------------------------------------------- compression
def test_skewed_source_compresses_well_and_matches_information():
    m, t, k = 2, 16, 256
    counts = np.ones((m, t, k), dtype=np.int64)
    rng = np.random.default_rng(2)
    for g in range(m):
        for tok in range(t):
            counts[g, tok, rng.integers(k)] = 5000  # one code holds ~95% of each row
    model = EntropyModel(counts, np.array([900, 100]), num_tokens=t)
    groups, indices = sample_codes(model, 400, seed=3)
    data = model.encode(groups, indices)
    fixed = 400 * bits_per_image(t, k, m)
    assert len(data) * 8 < 0.7 * fixed
    info = float(model.information_bits(groups, indices).sum())
    assert abs(len(data) * 8 - info) <= QUANT_REL * info + OVERHEAD_BITS
    g, idx = model.decode(data, 400)
    np.testing.assert_array_equal(idx.numpy(), indices)


@pytest.mark.parametrize("k", [256, 1000])
def test_uniform_counts_stay_near_fixed_length(k):
    m, t, b = 4, 8, 200
    model = EntropyModel(np.full((m, t, k), 10), np.full(m, 3), num_tokens=t)
    rng = np.random.default_rng(4)
    groups, indices = rng.integers(0, m, b), rng.integers(0, k, (b, t))
    bits = len(model.encode(groups, indices)) * 8
    ideal = b * (t * math.log2(k) + math.log2(m))
    info = model.information_bits(groups, indices)
    np.testing.assert_allclose(info.numpy(), ideal / b, rtol=1e-12)
    fixed = b * bits_per_image(t, k, m)
    assert ideal <= fixed
    assert bits <= 1.02 * fixed + OVERHEAD_BITS
    assert abs(bits - ideal) <= 0.01 * ideal + OVERHEAD_BITS


def test_information_bits_by_hand():
    counts = np.array([[[3, 1, 0]], [[0, 0, 4]]])  # token-shared, M=2, K=3
    model = EntropyModel(counts, np.array([1, 3]), num_tokens=2, smoothing=0.5)
    bits = model.information_bits(np.array([1, 0]), np.array([[2, 0], [1, 1]]))
    img0 = -math.log2(3.5 / 5) - math.log2(4.5 / 5.5) - math.log2(0.5 / 5.5)
    img1 = -math.log2(1.5 / 5) - 2 * math.log2(1.5 / 5.5)
    assert bits.dtype == torch.float64 and bits.shape == (2,)
    np.testing.assert_allclose(bits.numpy(), [img0, img1], rtol=1e-12)


def test_single_group_and_single_code_cost_nothing():
    one_group = EntropyModel(np.array([[[1, 1]]]), np.array([10]), num_tokens=3)
    bits = one_group.information_bits(np.zeros(2, dtype=np.int64), np.array([[0, 1, 0], [1, 1, 1]]))
    np.testing.assert_allclose(bits.numpy(), [3.0, 3.0], rtol=1e-12)  # only the tokens, 1 bit each
    one_code = EntropyModel(np.zeros((4, 1, 1), dtype=np.int64), np.ones(4, dtype=np.int64), num_tokens=5)
    bits = one_code.information_bits(np.array([0, 3]), np.zeros((2, 5), dtype=np.int64))
    np.testing.assert_allclose(bits.numpy(), [2.0, 2.0], rtol=1e-12)  # only the group, 2 bits each
    nothing = EntropyModel(np.zeros((1, 1, 1), dtype=np.int64), np.zeros(1, dtype=np.int64), num_tokens=5)
    assert nothing.encode(np.zeros(7, dtype=np.int64), np.zeros((7, 5), dtype=np.int64)) == b""
    g, idx = nothing.decode(b"", 7)
    assert g.shape == (7,) and idx.shape == (7, 5) and not g.any() and not idx.any()
    with pytest.raises(EntropyDecodeError):
        nothing.decode(b"\0\0\0\0", 7)


def test_empty_batch():
    model = EntropyModel(np.ones((2, 3, 4), dtype=np.int64), np.ones(2, dtype=np.int64), num_tokens=3)
    assert model.encode(np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64)) == b""
    g, idx = model.decode(b"", 0)
    assert g.shape == (0,) and idx.shape == (0, 3)
    assert model.information_bits(np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64)).shape == (0,)
    with pytest.raises(EntropyDecodeError):
        model.decode(b"\1\0\0\0", 0)


# ---------------------------------------------------------------------------------------------- strict decoding
def _decode_or_error(model: EntropyModel, data: bytes, batch: int) -> None:
    """decode must return valid codes whose stream is exactly ``data``, or raise EntropyDecodeError."""
    try:
        g, idx = model.decode(data, batch)
    except EntropyDecodeError:
        return
    assert g.shape == (batch,) and idx.shape == (batch, model.num_tokens)
    assert g.dtype == torch.int64 and idx.dtype == torch.int64
    if batch:
        assert 0 <= int(g.min()) and int(g.max()) < model.num_groups
        assert 0 <= int(idx.min()) and int(idx.max()) < model.codebook_size
    assert model.encode(g, idx) == data  # only canonical streams are accepted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_and_codes(max_b=4), st.binary(max_size=48), st.integers(0, 6))
def test_fuzz_random_bytes(case, data, batch):
    model, _, _ = case
    _decode_or_error(model, data, batch)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_and_codes(), st.data())
def test_fuzz_mutated_streams(case, draw):
    model, groups, indices = case
    data = bytearray(model.encode(groups, indices))
    kind = draw.draw(st.sampled_from(["flip", "truncate", "append", "delete", "batch"]))
    batch = len(groups)
    if kind == "flip" and data:
        for _ in range(draw.draw(st.integers(1, 3))):
            pos = draw.draw(st.integers(0, len(data) - 1))
            data[pos] ^= 1 << draw.draw(st.integers(0, 7))
    elif kind == "truncate" and data:
        del data[draw.draw(st.integers(0, len(data) - 1)):]
    elif kind == "append":
        data += draw.draw(st.binary(min_size=1, max_size=9))
    elif kind == "delete" and data:
        del data[draw.draw(st.integers(0, len(data) - 1))]
    else:
        batch = draw.draw(st.integers(0, 8))
    _decode_or_error(model, bytes(data), batch)


def test_specific_corruptions_are_refused():
    rng = np.random.default_rng(5)
    model = EntropyModel(rng.integers(0, 50, (3, 6, 20)), np.array([1, 2, 3]), num_tokens=6)
    groups, indices = rng.integers(0, 3, 10), rng.integers(0, 20, (10, 6))
    data = model.encode(groups, indices)
    for bad in (data[:-1], data[:-4], data + b"\0\0\0\0", data + data[-4:], b"", data[:3]):
        with pytest.raises(EntropyDecodeError):
            model.decode(bad, 10)
    with pytest.raises(EntropyDecodeError):
        model.decode(data, 11)  # more images than the stream holds
    other = EntropyModel(rng.integers(0, 50, (3, 6, 20)), np.array([1, 2, 3]), num_tokens=6)
    try:  # a different model either rejects the stream or reads other codes, never these
        g, idx = other.decode(data, 10)
        assert not (np.array_equal(g.numpy(), groups) and np.array_equal(idx.numpy(), indices))
    except EntropyDecodeError:
        pass
    assert issubclass(EntropyDecodeError, ValueError)


def test_decode_argument_errors():
    model = EntropyModel(np.ones((2, 1, 4), dtype=np.int64), np.ones(2, dtype=np.int64), num_tokens=3)
    with pytest.raises(TypeError, match="data"):
        model.decode("abcd", 1)
    with pytest.raises(TypeError, match="batch_size"):
        model.decode(b"", 1.0)
    with pytest.raises(ValueError, match="batch_size"):
        model.decode(b"", -1)


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(code_counts=np.ones((2, 3, 4))), TypeError, "code_counts"),
    (dict(code_counts=torch.ones(2, 3, 4, dtype=torch.bool)), TypeError, "code_counts"),
    (dict(code_counts=[[[1, 2]]]), TypeError, "code_counts"),
    (dict(code_counts=np.ones((2, 4), dtype=np.int64)), ValueError, "code_counts"),
    (dict(code_counts=np.ones((2, 2, 4), dtype=np.int64)), ValueError, "T'"),
    (dict(code_counts=-np.ones((2, 3, 4), dtype=np.int64)), ValueError, "code_counts"),
    (dict(code_counts=np.ones((2, 3, 0), dtype=np.int64)), ValueError, "K >= 1"),
    (dict(code_counts=np.full((2, 3, 4), 2**53 + 1, dtype=np.int64)), ValueError, "code_counts"),
    (dict(code_counts=np.ones((1, 1, 2**20 + 1), dtype=np.int8), group_counts=np.ones(1, dtype=np.int64)),
     ValueError, "at most"),
    (dict(group_counts=np.ones(3, dtype=np.int64)), ValueError, "group_counts"),
    (dict(group_counts=np.array([1, -1])), ValueError, "group_counts"),
    (dict(group_counts=np.ones(2)), TypeError, "group_counts"),
    (dict(num_tokens=0), ValueError, "num_tokens"),
    (dict(num_tokens=3.0), TypeError, "num_tokens"),
    (dict(smoothing=0.0), ValueError, "smoothing"),
    (dict(smoothing=-1.0), ValueError, "smoothing"),
    (dict(smoothing=float("nan")), ValueError, "smoothing"),
    (dict(smoothing=float("inf")), ValueError, "smoothing"),
    (dict(smoothing=True), TypeError, "smoothing"),
    (dict(smoothing="0.5"), TypeError, "smoothing"),
])
def test_constructor_validation(kwargs, error, match):
    args = dict(code_counts=np.ones((2, 3, 4), dtype=np.int64), group_counts=np.ones(2, dtype=np.int64),
                num_tokens=3, smoothing=0.5)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        EntropyModel(args.pop("code_counts"), args.pop("group_counts"), **args)


def test_encode_validation():
    model = EntropyModel(np.ones((2, 3, 4), dtype=np.int64), np.ones(2, dtype=np.int64), num_tokens=3)
    good_g, good_i = np.array([0, 1]), np.array([[0, 1, 2], [3, 3, 3]])
    for groups, indices, error, match in [
        (np.array([0, 2]), good_i, ValueError, "groups"),
        (np.array([-1, 0]), good_i, ValueError, "groups"),
        (good_g, np.array([[0, 1, 4], [0, 0, 0]]), ValueError, "indices"),
        (good_g, np.array([[0, 1], [0, 0]]), ValueError, "indices"),
        (good_g[:, None], good_i, ValueError, "groups"),
        (good_g[:1], good_i, ValueError, "groups"),
        (good_g.astype(float), good_i, TypeError, "groups"),
        (good_g, torch.zeros(2, 3), TypeError, "indices"),
        ([0, 1], good_i, TypeError, "groups"),
    ]:
        with pytest.raises(error, match=match):
            model.encode(groups, indices)
        with pytest.raises(error, match=match):
            model.information_bits(groups, indices)


def test_attributes_equality_and_immutability():
    counts = np.arange(24).reshape(2, 3, 4)
    model = EntropyModel(counts, np.array([4, 5]), num_tokens=3, smoothing=0.25)
    assert (model.num_groups, model.num_tokens, model.codebook_size) == (2, 3, 4)
    assert model.token_specific and model.smoothing == 0.25
    assert model.code_counts.dtype == torch.int64 and model.group_counts.dtype == torch.int64
    shared = EntropyModel(counts[:, :1], np.array([4, 5]), num_tokens=3)
    assert not shared.token_specific and shared.code_counts.shape == (2, 1, 4)
    model.code_counts[0, 0, 0] = 99  # a copy: the model does not change
    counts[0, 0, 0] = 99  # nor when the caller's array changes
    assert int(model.code_counts[0, 0, 0]) == 0
    same = EntropyModel(torch.arange(24).reshape(2, 3, 4), torch.tensor([4, 5]), num_tokens=3, smoothing=0.25)
    assert model == same and model.fingerprint() == same.fingerprint()
    variants = [
        EntropyModel(np.arange(24).reshape(2, 3, 4), np.array([4, 5]), num_tokens=3, smoothing=0.5),
        EntropyModel(np.arange(24).reshape(2, 3, 4), np.array([4, 6]), num_tokens=3, smoothing=0.25),
        EntropyModel(np.arange(24).reshape(2, 3, 4) + 1, np.array([4, 5]), num_tokens=3, smoothing=0.25),
        EntropyModel(np.arange(8).reshape(2, 1, 4), np.array([4, 5]), num_tokens=3, smoothing=0.25),
        EntropyModel(np.arange(8).reshape(2, 1, 4), np.array([4, 5]), num_tokens=5, smoothing=0.25),
    ]
    prints = {v.fingerprint() for v in variants} | {model.fingerprint()}
    assert len(prints) == len(variants) + 1
    assert all(v != model for v in variants) and variants[3] != variants[4]
    assert model != "not a model"
    assert set(entropy.__all__) == {"EntropyModel", "EntropyDecodeError", "EntropyDensityError", "FILE_NAME",
                                    "MAX_VALUES_PER_BYTE"}
    assert FILE_NAME == "entropy_model.safetensors"


# ---------------------------------------------------------------------------------------------- files
def _model(seed=0) -> EntropyModel:
    rng = np.random.default_rng(seed)
    return EntropyModel(rng.integers(0, 1000, (3, 5, 16)), rng.integers(0, 100, 3), num_tokens=5, smoothing=1 / 3)


def test_save_load_round_trip(tmp_path):
    model = _model()
    path = tmp_path / "sub" / FILE_NAME
    model.save(path)
    loaded = EntropyModel.load(path)
    assert loaded == model and loaded.fingerprint() == model.fingerprint()
    assert loaded.smoothing == 1 / 3  # repr-exact
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert sorted(f.keys()) == ["code_counts", "group_counts"]
    assert meta == {"format": "vqswitch-entropy", "format_version": "1", "num_tokens": "5",
                    "smoothing": repr(1 / 3), "fingerprint": model.fingerprint()}
    groups, indices = np.array([0, 2]), np.arange(10).reshape(2, 5)
    assert loaded.decode(model.encode(groups, indices), 2)[1].tolist() == indices.tolist()
    shared = EntropyModel(np.ones((1, 1, 3), dtype=np.int64), np.ones(1, dtype=np.int64), num_tokens=7)
    shared.save(tmp_path / "shared.safetensors")
    assert EntropyModel.load(tmp_path / "shared.safetensors") == shared


def test_pickle_and_deepcopy():
    model = _model()
    groups, indices = np.array([1, 0]), np.arange(10).reshape(2, 5) % 16
    data = model.encode(groups, indices)  # fills the caches first
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert twin == model and twin.fingerprint() == model.fingerprint()
        assert twin.decode(data, 2)[1].tolist() == indices.tolist()


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / FILE_NAME
    old = _model(0)
    old.save(path)
    before = path.read_bytes()

    def failing_write(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_bytes", failing_write)
    with pytest.raises(OSError, match="disk full"):
        _model(1).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert EntropyModel.load(path) == old
    assert os.listdir(tmp_path) == [FILE_NAME]  # no temporary file left behind


def test_tampered_and_invalid_files_are_refused(tmp_path):
    model = _model()
    path = tmp_path / FILE_NAME
    model.save(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))

    tampered = dict(tensors, code_counts=tensors["code_counts"].clone())
    tampered["code_counts"][0, 0, 0] += 1
    save_file(tampered, str(tmp_path / "tampered.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="fingerprint"):
        EntropyModel.load(tmp_path / "tampered.safetensors")

    save_file(tensors, str(tmp_path / "smooth.safetensors"), metadata=dict(meta, smoothing="0.5"))
    with pytest.raises(ValueError, match="fingerprint"):
        EntropyModel.load(tmp_path / "smooth.safetensors")

    cases = {
        "format": (tensors, dict(meta, format="other")),
        "version": (tensors, dict(meta, format_version="2")),
        "metadata": (tensors, {k: v for k, v in meta.items() if k != "num_tokens"}),
        "smoothing": (tensors, dict(meta, smoothing="abc")),
        "tensors": (dict(tensors, extra=torch.zeros(1)), meta),
        "int64": (dict(tensors, group_counts=tensors["group_counts"].int()), meta),
        "shape": (dict(tensors, group_counts=torch.zeros(4, dtype=torch.long)), meta),
    }
    for name, (ts, md) in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        save_file(ts, str(bad), metadata=md)
        with pytest.raises(ValueError):
            EntropyModel.load(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError):
        EntropyModel.load(tmp_path / "junk.safetensors")
    with pytest.raises(OSError):
        EntropyModel.load(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------------------------------------- builders
@pytest.mark.parametrize("token_specific", [True, False])
def test_from_quantizer_uses_recorded_usage(token_specific):
    q = small_quantizer(token_specific)
    q.train()
    q(torch.randn(20, 4, 3))
    assert int(q.group_counts.sum()) == 20
    model = EntropyModel.from_quantizer(q, smoothing=0.75)
    assert torch.equal(model.code_counts, q.usage) and torch.equal(model.group_counts, q.group_counts)
    assert model.token_specific == token_specific and model.num_tokens == 4 and model.smoothing == 0.75
    with pytest.raises(TypeError, match="quantizer"):
        EntropyModel.from_quantizer(object())


@pytest.mark.parametrize("token_specific, num_groups", [(True, 2), (False, 3), (True, 1)])
def test_fit_counts_the_quantizer_codes(token_specific, num_groups):
    q = small_quantizer(token_specific, num_groups)
    q.train()
    usage_before, groups_before = q.usage.clone(), q.group_counts.clone()
    latents = torch.randn(37, 4, 3)
    model = EntropyModel.fit(q, latents, batch_size=8, smoothing=0.5)
    assert q.training  # mode restored
    assert torch.equal(q.usage, usage_before) and torch.equal(q.group_counts, groups_before)
    q.eval()
    codes = q.encode(latents)
    counts, gcounts = manual_counts(codes.groups, codes.indices, num_groups, 4, 8, token_specific)
    np.testing.assert_array_equal(model.code_counts.numpy(), counts)
    np.testing.assert_array_equal(model.group_counts.numpy(), gcounts)
    assert int(model.code_counts.sum()) == 37 * 4
    batches = [latents[:10], latents[10:11], latents[11:]]
    assert EntropyModel.fit(q, batches, progress=True) == model
    assert EntropyModel.fit(q, iter(batches)) == model
    from_codes = EntropyModel.from_codes([codes[:5], codes[5:]], num_tokens=4, token_specific=token_specific)
    assert from_codes == model
    g, idx = model.decode(model.encode(codes.groups, codes.indices), 37)
    assert Codes(g, idx, 8, num_groups) == codes


def test_fit_and_from_codes_errors():
    q = small_quantizer()
    with pytest.raises(TypeError, match="latents"):
        EntropyModel.fit(q, 5)
    with pytest.raises(TypeError, match="batch"):
        EntropyModel.fit(q, [np.zeros((2, 4, 3), dtype=np.float32)])
    with pytest.raises(ValueError, match="latents"):
        EntropyModel.fit(q, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="batch_size"):
        EntropyModel.fit(q, torch.zeros(2, 4, 3), batch_size=0)
    with pytest.raises(TypeError, match="quantizer"):
        EntropyModel.fit("q", torch.zeros(2, 4, 3))
    codes = Codes(torch.zeros(2, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), 8, 2)
    other_k = Codes(torch.zeros(2, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), 9, 2)
    with pytest.raises(ValueError, match="at least one"):
        EntropyModel.from_codes([], num_tokens=4)
    with pytest.raises(ValueError, match="num_tokens"):
        EntropyModel.from_codes(codes, num_tokens=5)
    with pytest.raises(ValueError, match="mix"):
        EntropyModel.from_codes([codes, other_k], num_tokens=4)
    with pytest.raises(TypeError, match="Codes"):
        EntropyModel.from_codes([codes, "x"], num_tokens=4)
    model = EntropyModel.from_codes(codes, num_tokens=4, token_specific=False, smoothing=2.0)
    assert model.code_counts.shape == (2, 1, 8) and int(model.code_counts[0, 0, 0]) == 8
    assert model.group_counts.tolist() == [2, 0] and model.smoothing == 2.0
