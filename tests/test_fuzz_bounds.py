"""Hostile bytes cost bounded memory and time: Codes.from_bytes and the VQSF container, on every input.

Each input is decoded under tracemalloc (numpy's buffers are traced) with a wall-clock limit. The memory bound is
what the formats promise: a stream of P payload bytes decodes to at most max(8 * P, 2**20) int64 values (fixed,
vqswitch.codes) or max(32 * P, 2**20) (entropy, vqswitch.entropy), so the allocation peak stays below
16 bytes per allowed value plus a few MiB of chunk scratch, however large the header's claims.
"""
from __future__ import annotations

import struct
import time
import tracemalloc
import zlib

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vqswitch import container
from vqswitch.codes import HEADER_SIZE, MAX_ZERO_BIT_VALUES, Codes
from vqswitch.entropy import MAX_VALUES_PER_BYTE, EntropyModel

SCRATCH = 12 * 2**20  # chunk scratch and small objects
SECONDS = 3.0  # per input, on a loaded 2-core machine

sizes = st.one_of(st.integers(1, 8), st.sampled_from([2**16, 2**20 + 1, 2**31, 2**32 - 1]))
counts = st.one_of(st.integers(0, 40), st.sampled_from([2**20, 10**8, 2**32 - 1]))


def _within_bounds(fn, payload_bytes: int, per_byte: int):
    """Run fn; assert its peak and time; return the exception it raised (or None)."""
    limit_values = max(per_byte * payload_bytes, MAX_ZERO_BIT_VALUES)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        fn()
        err = None
    except ValueError as e:  # the only failure allowed: a clear ValueError (CodecError is one)
        err = e
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    seconds = time.perf_counter() - t0
    assert peak <= 16 * limit_values + SCRATCH, f"peak {peak} bytes for a {payload_bytes}-byte payload"
    assert seconds <= SECONDS, f"{seconds:.2f} s"
    return err


def codes_stream(t, k, m, n, payload: bytes) -> bytes:
    head = struct.pack("<4sB5I", b"VQSC", 1, t, k, m, n, 0)[:HEADER_SIZE - 4]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=sizes, k=sizes, m=sizes, n=counts, payload=st.binary(max_size=64), fit=st.booleans())
def test_codes_from_bytes_is_bounded(t, k, m, n, payload, fit):
    if fit:  # a payload of exactly the length the header implies (all-zero: valid values), when small
        from vqswitch.bits import bits_per_image

        need = (n * bits_per_image(t, k, m) + 7) // 8
        payload = bytes(need) if need <= 2**16 else payload
    data = codes_stream(t, k, m, n, payload)
    _within_bounds(lambda: Codes.from_bytes(data), len(payload), 8)


def vqsf(mode, t, k, m, names, payload) -> bytes:
    body = struct.pack("<4sBB32s", b"VQSF", 1, mode, b"\0" * 32) + struct.pack("<HH", 0, 0)
    body += struct.pack("<IHHIII", len(names), 32, 32, t, k, m)
    body += b"".join(struct.pack("<H", len(x)) + x for x in names) + struct.pack("<Q", len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from([0, 1]), t=sizes, k=st.integers(1, 6), m=st.integers(1, 4),
       n=st.integers(1, 3000), payload=st.binary(max_size=64), zero=st.booleans())
def test_container_parse_and_decode_are_bounded(mode, t, k, m, n, payload, zero):
    if zero:
        payload = bytes(len(payload) // 4 * 4)
    data = vqsf(mode, t, k, m, [b""] * n, payload)
    model = EntropyModel(np.ones((m, 1, k), dtype=np.int64), np.ones(m, dtype=np.int64), num_tokens=t) \
        if t <= 2**16 else None

    def decode():
        header, body = container.parse(data)
        if header.mode == "fixed":
            container.unpack_fixed(body, header)
        elif model is not None:
            model.decode(body, header.count)

    _within_bounds(decode, len(payload), 8 if mode == 0 else MAX_VALUES_PER_BYTE)


def test_random_bytes_are_bounded():
    rng = np.random.default_rng(0)
    for size in (0, 3, 25, 26, 60, 77, 200, 4096):
        for _ in range(20):
            blob = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            for head in (b"VQSC\x01", b"VQSF\x01"):
                data = head + blob
                _within_bounds(lambda data=data: Codes.from_bytes(data), len(data), 8)
                _within_bounds(lambda data=data: container.parse(data), len(data), 8)
    assert torch.equal(Codes.from_bytes(Codes([0], [[1]], 2, 1).to_bytes()).indices, torch.tensor([[1]]))
