"""Tests of vqswitch.codes: the Codes container and its fixed-length bitstream."""
import math
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vqswitch._io
from vqswitch.bits import bits_per_image
from vqswitch.codes import HEADER_SIZE, Codes

BIG = [1, 2, 3, 255, 256, 257, 2**31 - 1, 2**31, 2**32 - 1]


@st.composite
def codes_strategy(draw, max_b=6):
    t = draw(st.integers(1, 40))
    k = draw(st.one_of(st.integers(1, 5000), st.sampled_from(BIG)))
    m = draw(st.one_of(st.integers(1, 300), st.sampled_from(BIG)))
    b = draw(st.integers(0, max_b))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups = rng.integers(0, m, size=b, dtype=np.int64)
    indices = rng.integers(0, k, size=(b, t), dtype=np.int64)
    if b and draw(st.booleans()):  # hit the extremes of both fields
        groups[0], groups[-1] = m - 1, 0
        indices[0, 0], indices[-1, -1] = k - 1, 0
    return Codes(torch.from_numpy(groups), torch.from_numpy(indices), k, m)


def make(b=3, t=5, k=300, m=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Codes(torch.randint(0, m, (b,), generator=g), torch.randint(0, k, (b, t), generator=g), k, m)


def restamp(data: bytes) -> bytes:
    """Recompute the CRC so that a crafted stream passes the CRC check."""
    crc = zlib.crc32(data[HEADER_SIZE:], zlib.crc32(data[: HEADER_SIZE - 4]))
    return data[: HEADER_SIZE - 4] + struct.pack("<I", crc) + data[HEADER_SIZE:]


def stream(t, k, m, n, payload: bytes, version=1, magic=b"VQSC") -> bytes:
    return restamp(struct.pack("<4sB5I", magic, version, t, k, m, n, 0) + payload)


# ---------------------------------------------------------------- round trip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(codes_strategy())
def test_round_trip_property(c):
    data = c.to_bytes()
    bits = bits_per_image(c.num_tokens, c.codebook_size, c.num_groups)
    assert len(data) == HEADER_SIZE + math.ceil(len(c) * bits / 8)
    back = Codes.from_bytes(data)
    assert back == c
    assert back.groups.dtype == torch.int64 and back.indices.dtype == torch.int64
    assert back.indices.shape == (len(c), c.num_tokens)
    assert Codes.from_bytes(bytearray(data)) == c
    assert Codes.from_bytes(memoryview(data)) == c


def test_header_size_and_golden_stream():
    # T=2, K=5 (3 bits), M=3 (2 bits): 2 + 2*3 = 8 bits per image.
    c = Codes(torch.tensor([2, 1]), torch.tensor([[4, 1], [0, 3]]), codebook_size=5, num_groups=3)
    head = b"VQSC" + b"\x01" + struct.pack("<IIII", 2, 5, 3, 2)
    # image 0: 10 100 001, image 1: 01 000 011 (group first, MSB-first)
    payload = bytes([0b10100001, 0b01000011])
    expected = head + struct.pack("<I", zlib.crc32(head + payload)) + payload
    assert HEADER_SIZE == 25
    assert c.to_bytes() == expected
    assert Codes.from_bytes(expected) == c


def test_golden_stream_with_padding_and_no_image_padding():
    # T=1, K=5 (3 bits), M=3 (2 bits): 5 bits per image, images packed back to back.
    c = Codes(torch.tensor([2, 1]), torch.tensor([[4], [3]]), 5, 3)
    # 10 100 | 01 011 | 000000 padding
    assert c.to_bytes()[HEADER_SIZE:] == bytes([0b10100010, 0b11000000])
    c3 = Codes(torch.tensor([2, 1, 0]), torch.tensor([[4], [3], [1]]), 5, 3)
    # 10 100 | 01 011 | 00 001 | 0: 15 bits + 1 padding bit
    assert c3.to_bytes()[HEADER_SIZE:] == bytes([0b10100010, 0b11000010])
    assert Codes.from_bytes(c3.to_bytes()) == c3


@pytest.mark.parametrize("k,m,bits", [(4096, 1, 1536), (1024, 16, 1284), (256, 256, 1032)])
def test_titok_s_configs(k, m, bits):
    c = make(b=2, t=128, k=k, m=m)
    assert c.bits_per_image == bits
    assert c.num_bits == 2 * bits
    data = c.to_bytes()
    assert len(data) == HEADER_SIZE + math.ceil(2 * bits / 8)
    assert Codes.from_bytes(data, num_tokens=128, codebook_size=k, num_groups=m) == c


def test_zero_bit_codes_k1_m1():
    c = Codes(torch.zeros(4, dtype=torch.long), torch.zeros(4, 7, dtype=torch.long), 1, 1)
    assert c.bits_per_image == 0 and c.num_bits == 0
    data = c.to_bytes()
    assert len(data) == HEADER_SIZE
    assert Codes.from_bytes(data) == c


def test_empty_batch_round_trip():
    c = Codes(torch.empty(0, dtype=torch.long), torch.empty(0, 9, dtype=torch.long), 1000, 5)
    assert len(c) == 0 and c.num_bits == 0 and c.num_tokens == 9
    data = c.to_bytes()
    assert len(data) == HEADER_SIZE
    back = Codes.from_bytes(data)
    assert back == c and back.indices.shape == (0, 9)


def test_huge_codebook_values_exact():
    k = m = 2**32 - 1
    c = Codes(torch.tensor([k - 1, 0, 12345]), torch.tensor([[k - 1, 0], [1, 2**31], [2**31 - 1, 7]]), k, m)
    assert c.bits_per_image == 3 * 32
    assert Codes.from_bytes(c.to_bytes()) == c


def test_to_bytes_rejects_values_beyond_u32_header():
    c = Codes(torch.tensor([0]), torch.tensor([[2**32]]), 2**32 + 1, 1)
    with pytest.raises(ValueError, match="codebook_size=4294967297 does not fit"):
        c.to_bytes()


# ---------------------------------------------------------------- corrupt streams


def test_not_bytes_like():
    with pytest.raises(TypeError, match="bytes-like"):
        Codes.from_bytes("VQSC")
    with pytest.raises(TypeError, match="bytes-like"):
        Codes.from_bytes([1, 2, 3])


def test_too_short():
    with pytest.raises(ValueError, match=r"too short: 3 bytes < 25-byte header"):
        Codes.from_bytes(b"VQS")
    with pytest.raises(ValueError, match="too short: 0 bytes"):
        Codes.from_bytes(b"")


def test_wrong_magic():
    data = stream(1, 2, 1, 1, b"\x80", magic=b"PNG\x00")
    with pytest.raises(ValueError, match="not a vqswitch codes stream"):
        Codes.from_bytes(data)


def test_unsupported_version():
    with pytest.raises(ValueError, match="unsupported codes format version 2"):
        Codes.from_bytes(stream(1, 2, 1, 1, b"\x80", version=2))


@pytest.mark.parametrize("t,k,m,name", [(0, 2, 1, "T"), (1, 0, 1, "K"), (1, 2, 0, "M")])
def test_zero_header_fields(t, k, m, name):
    with pytest.raises(ValueError, match=f"invalid codes header: {name}=0"):
        Codes.from_bytes(stream(t, k, m, 1, b"\x80"))


def test_wrong_payload_length():
    data = make(b=2, t=3, k=256, m=1).to_bytes()  # 2 * 24 bits = 6 payload bytes
    assert len(data) == 31
    with pytest.raises(ValueError, match=r"truncated.*expected 31 bytes for N=2 images, got 30"):
        Codes.from_bytes(data[:-1])
    with pytest.raises(ValueError, match=r"trailing bytes.*expected 31 bytes for N=2 images, got 32"):
        Codes.from_bytes(data + b"\x00")
    with pytest.raises(ValueError, match="trailing bytes"):
        Codes.from_bytes(restamp(data + b"\x00"))  # a valid CRC does not excuse extra bytes


def test_crc_mismatch():
    data = bytearray(make().to_bytes())
    data[-1] ^= 0x01
    with pytest.raises(ValueError, match="corrupted"):
        Codes.from_bytes(bytes(data))
    data = bytearray(make().to_bytes())
    data[HEADER_SIZE - 1] ^= 0x80  # the CRC field itself
    with pytest.raises(ValueError, match="corrupted"):
        Codes.from_bytes(bytes(data))


def test_nonzero_padding():
    # T=1, K=8 (3 bits), M=1 (0 bits): one image is 3 bits, 5 padding bits.
    assert Codes.from_bytes(stream(1, 8, 1, 1, bytes([0b10100000]))).indices.tolist() == [[5]]
    with pytest.raises(ValueError, match="nonzero padding"):
        Codes.from_bytes(stream(1, 8, 1, 1, bytes([0b10100001])))


def test_decoded_group_out_of_range():
    # M=3 (2 bits) can carry 3, which is not a valid group.
    with pytest.raises(ValueError, match=r"group index 3 >= num_groups M=3"):
        Codes.from_bytes(stream(1, 2, 3, 1, bytes([0b11000000])))


def test_decoded_index_out_of_range():
    # K=5 (3 bits) can carry 7.
    with pytest.raises(ValueError, match=r"token index 7 >= codebook_size K=5"):
        Codes.from_bytes(stream(1, 5, 1, 1, bytes([0b11100000])))


def test_expected_configuration():
    data = make(b=1, t=4, k=1024, m=16).to_bytes()
    assert Codes.from_bytes(data, num_tokens=4, codebook_size=1024, num_groups=16) == make(b=1, t=4, k=1024, m=16)
    with pytest.raises(ValueError, match=r"made for T=4,K=1024,M=16 but the caller expects K=4096"):
        Codes.from_bytes(data, codebook_size=4096)
    with pytest.raises(ValueError, match=r"made for T=4,K=1024,M=16 but the caller expects T=128,M=1"):
        Codes.from_bytes(data, num_tokens=128, num_groups=1)


def test_every_single_bit_flip_is_detected():
    data = make(b=3, t=5, k=300, m=7).to_bytes()
    for bit in range(len(data) * 8):
        bad = bytearray(data)
        bad[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(ValueError):
            Codes.from_bytes(bytes(bad))


@settings(max_examples=100, deadline=None)
@given(codes_strategy(), st.data())
def test_random_bit_flip_raises(c, data):
    raw = c.to_bytes()
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    bad = bytearray(raw)
    bad[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ValueError):
        Codes.from_bytes(bytes(bad))


def test_every_truncation_raises():
    data = make(b=4, t=9, k=1000, m=5).to_bytes()
    for n in range(len(data)):
        with pytest.raises(ValueError, match="too short|wrong length"):
            Codes.from_bytes(data[:n])


# ---------------------------------------------------------------- constructor


def test_constructor_converts_to_int64():
    c = Codes([1, 0], np.array([[3, 2, 1], [0, 0, 4]], dtype=np.int32), 5, 2)
    assert c.groups.dtype == torch.int64 and c.indices.dtype == torch.int64
    assert c.groups.tolist() == [1, 0] and c.indices.tolist() == [[3, 2, 1], [0, 0, 4]]
    assert (c.batch_size, c.num_tokens, len(c)) == (2, 3, 2)
    assert c.bits_per_image == 3 * 3 + 1 and c.num_bits == 20


@pytest.mark.parametrize(
    "groups,indices,k,m,exc,match",
    [
        (torch.tensor([0.0]), torch.tensor([[1]]), 4, 2, TypeError, "groups must hold integers"),
        (torch.tensor([0]), torch.tensor([[1.5]]), 4, 2, TypeError, "indices must hold integers"),
        (torch.tensor([True]), torch.tensor([[1]]), 4, 2, TypeError, "groups must hold integers"),
        (torch.tensor([[0]]), torch.tensor([[1]]), 4, 2, ValueError, r"groups must be 1-D"),
        (torch.tensor([0]), torch.tensor([1]), 4, 2, ValueError, r"indices must be 2-D"),
        (torch.tensor([0, 1]), torch.tensor([[1]]), 4, 2, ValueError, r"B=2 images but indices has 1"),
        (torch.tensor([0]), torch.zeros(1, 0, dtype=torch.long), 4, 2, ValueError, "T >= 1"),
        (torch.tensor([0]), torch.tensor([[1]]), 0, 2, ValueError, "codebook_size"),
        (torch.tensor([0]), torch.tensor([[1]]), 4, 0, ValueError, "num_groups"),
        (torch.tensor([0]), torch.tensor([[1]]), 4.0, 2, TypeError, "codebook_size"),
        (torch.tensor([2]), torch.tensor([[1]]), 4, 2, ValueError, r"groups must lie in \[0, num_groups=2\), got 2"),
        (torch.tensor([-1]), torch.tensor([[1]]), 4, 2, ValueError, r"groups must lie in .*got -1"),
        (torch.tensor([0]), torch.tensor([[4]]), 4, 2, ValueError,
         r"indices must lie in \[0, codebook_size=4\), got 4"),
        (torch.tensor([0]), torch.tensor([[-3]]), 4, 2, ValueError, r"indices must lie in .*got -3"),
    ],
)
def test_constructor_validation(groups, indices, k, m, exc, match):
    with pytest.raises(exc, match=match):
        Codes(groups, indices, k, m)


def test_frozen_and_unhashable():
    c = make()
    with pytest.raises(AttributeError):
        c.codebook_size = 3
    with pytest.raises(TypeError):
        hash(c)


# ---------------------------------------------------------------- container ops


def test_equality():
    c = make()
    assert c == make() and not (c != make())
    assert c != make(seed=1)
    assert c != Codes((c.groups + 1) % 7, c.indices, 300, 7)  # groups alone differ
    assert c != Codes(c.groups, c.indices.flip(1), 300, 7)  # indices alone differ
    assert c != Codes(c.groups, c.indices, 301, 7)
    assert c != Codes(c.groups, c.indices, 300, 8)
    assert c != c[:2]
    assert c != "codes" and (c == c.groups) is False


def test_getitem():
    c = make(b=5)
    one = c[1]
    assert len(one) == 1 and one.groups.tolist() == [c.groups[1].item()]
    assert one.indices.tolist() == [c.indices[1].tolist()]
    assert c[-1] == c[4:5]
    assert c[np.int64(2)] == c[2:3]
    assert c[torch.tensor(3)] == c[3:4]
    assert c[1:4].indices.tolist() == c.indices[1:4].tolist() and c[1:4].codebook_size == 300
    sel = c[torch.tensor([4, 0, 4])]
    assert sel.groups.tolist() == [c.groups[4].item(), c.groups[0].item(), c.groups[4].item()]
    mask = torch.tensor([True, False, True, False, False])
    assert c[mask] == Codes.cat([c[0], c[2]])
    assert len(c[5:]) == 0 and c[5:].num_tokens == c.num_tokens
    with pytest.raises(IndexError):
        c[5]


def test_cat():
    c = make(b=6)
    assert Codes.cat([c[:2], c[2:2], c[2:]]) == c
    assert Codes.cat([c]) == c
    with pytest.raises(ValueError, match="at least one"):
        Codes.cat([])
    with pytest.raises(ValueError, match=r"T,K,M=5,301,7 onto T,K,M=5,300,7"):
        Codes.cat([c, Codes(c.groups, c.indices, 301, 7)])
    with pytest.raises(ValueError, match="T,K,M=4,300,7"):
        Codes.cat([c, Codes(c.groups, c.indices[:, :4], 300, 7)])
    with pytest.raises(ValueError, match="T,K,M=5,300,8"):
        Codes.cat([c, Codes(c.groups, c.indices, 300, 8)])
    with pytest.raises(TypeError, match="expects Codes"):
        Codes.cat([c, c.indices])


def test_to_device():
    c = make()
    moved = c.to("cpu")
    assert moved == c and moved.indices.device.type == "cpu" and moved is not c


# ---------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path):
    c = make(b=4, t=16, k=1024, m=16)
    path = tmp_path / "sub" / "codes.vqsc"
    c.save(path)
    assert path.read_bytes() == c.to_bytes()
    assert Codes.load(path) == c
    assert Codes.load(str(path), num_tokens=16, codebook_size=1024, num_groups=16) == c
    with pytest.raises(ValueError, match="expects M=1"):
        Codes.load(path, num_groups=1)
    assert sorted(p.name for p in path.parent.iterdir()) == ["codes.vqsc"]


def test_failing_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "codes.vqsc"
    old = make(seed=0)
    old.save(path)
    old_bytes = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(vqswitch._io.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        make(b=5, seed=1).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert Codes.load(path) == old
    assert sorted(os.listdir(tmp_path)) == ["codes.vqsc"]


# ---------------------------------------------------------------- hostile streams: bounded memory and time (issue 15)


def _bounded(fn, *, max_bytes: int, max_seconds: float):
    """Run ``fn()``; return what it returned or raised, asserting its Python/numpy allocation peak and time."""
    import time
    import tracemalloc

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as err:  # noqa: BLE001 - returned for the caller to check
        out = err
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    assert peak <= max_bytes, f"peak {peak} bytes > {max_bytes}"
    assert elapsed <= max_seconds, f"took {elapsed:.2f} s > {max_seconds}"
    return out


@pytest.mark.parametrize("t,k,m,n,payload", [
    (1, 1, 1, 10**8, b""),  # 0 bits per image: 25 bytes claiming 10**8 images
    (1, 1, 1, 2**32 - 1, b""),  # was a numpy MemoryError
    (2**32 - 1, 1, 2, 8, b"\x00"),  # 1 bit per image but 2**32 - 1 free tokens each
    (2**20, 1, 1, 2, b""),
])
def test_a_tiny_stream_cannot_claim_many_zero_bit_values(t, k, m, n, payload):
    data = stream(t, k, m, n, payload)
    err = _bounded(lambda: Codes.from_bytes(data), max_bytes=2**20, max_seconds=2.0)
    assert isinstance(err, ValueError) and not isinstance(err, MemoryError), err
    assert "N*T" in str(err) and str(n) in str(err)


def test_zero_bit_streams_up_to_the_limit_round_trip_and_to_bytes_refuses_beyond():
    from vqswitch.codes import MAX_ZERO_BIT_VALUES

    c = Codes(torch.zeros(4, dtype=torch.long), torch.zeros(4, MAX_ZERO_BIT_VALUES // 4, dtype=torch.long), 1, 1)
    assert Codes.from_bytes(c.to_bytes()) == c
    n = MAX_ZERO_BIT_VALUES + 1  # stride-0 tensors: no memory
    big = Codes(torch.zeros(1).long().expand(n), torch.zeros(1, 1).long().expand(n, 1), 1, 1)
    with pytest.raises(ValueError, match="N\\*T"):
        big.to_bytes()


def test_decoding_a_valid_stream_allocates_about_its_output():
    c = make(b=400, t=256, k=1024, m=16, seed=3)  # ~128 KB stream, 0.8 MB of int64 output
    data = c.to_bytes()
    out = _bounded(lambda: Codes.from_bytes(data), max_bytes=2 * 8 * 400 * 257 + 4 * 2**20, max_seconds=5.0)
    assert out == c


def test_constructor_names_a_missing_or_non_numeric_argument():
    with pytest.raises(TypeError, match="indices must be .*got NoneType"):
        Codes(torch.tensor([0]), None, 4, 2)
    with pytest.raises(TypeError, match="groups must be .*got str"):
        Codes("abc", torch.tensor([[1]]), 4, 2)
    with pytest.raises(TypeError, match="groups must be .*got bytes"):
        Codes(b"ab", torch.tensor([[1]]), 4, 2)
    with pytest.raises(TypeError, match="indices must be .*"):
        Codes(torch.tensor([0]), [[object()]], 4, 2)


@pytest.mark.parametrize("indices", [np.array([[2**63 + 5]], dtype=np.uint64), [[2**63 + 5]]])
def test_a_value_beyond_int64_is_quoted_as_it_is(indices):
    with pytest.raises(ValueError, match=r"indices .*9223372036854775813") as info:
        Codes(torch.tensor([0]), indices, 4, 2)
    assert "-9223372036854775803" not in str(info.value)
