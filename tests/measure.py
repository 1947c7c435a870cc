"""Memory a call allocates, measured with the torch profiler (CPU tensors): tests assert ceilings on it instead of
inspecting private caches and buffers.

Allocations are those made while the call runs. Frees during the call count for blocks allocated during it, and
also for blocks allocated during an EARLIER profiled call (the profiler remembers their sizes; other blocks freed
during the call are not seen). Such frees can only lower ``peak`` and ``retained``, so a ceiling asserted on them
never fails because of them, but a test of what a call retains should first drop what earlier measured calls left
(e.g. ``clear_norm_cache()``). ``allocated`` counts allocations only and is exact.
"""
from __future__ import annotations

from typing import NamedTuple

from torch.profiler import ProfilerActivity, profile


class Memory(NamedTuple):
    """Bytes: ``peak`` the most held at once, ``retained`` still held at the end, ``allocated`` the sum of every
    allocation; ``result`` what the call returned."""

    peak: int
    retained: int
    allocated: int
    result: object


def measure(fn) -> Memory:
    """Run ``fn()`` under the profiler and sum its allocator events in time order."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    # the kineto events (ns timestamps, signed sizes) are ~50x faster to read than prof.events()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = allocated = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
        allocated += max(0, e.nbytes())
    return Memory(peak, live, allocated, result)
