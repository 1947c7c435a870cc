"""Choosing and checking a torch device: the one place that says what "the default device" is and that an
accelerator asked for is really there (nothing falls back to the CPU silently)."""
from __future__ import annotations

import torch

__all__ = ["default_device", "check_device"]


def default_device() -> torch.device:
    """``cuda`` when ``torch.cuda.is_available()``, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(device, *, name: str = "device") -> torch.device:
    """``device`` (a str such as ``"cuda:1"`` / ``"cpu"`` / ``"meta"``, or a torch.device) as a torch.device,
    checked to exist on this machine.

    Raises TypeError for anything else; ValueError naming ``name`` for text torch does not parse, for CUDA when
    ``torch.cuda.is_available()`` is False (or an index past ``torch.cuda.device_count()``), and for MPS when it is
    unavailable.
    """
    if isinstance(device, bool) or not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a device name such as 'cuda', 'cuda:1' or 'cpu', or a torch.device, "
                        f"got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{name} {device!r} is not a device torch knows ({' '.join(str(err).split())[:200]})") \
            from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {str(dev)!r}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}, built {'with' if torch.backends.cuda.is_built() else 'without'} "
                             "CUDA); use cpu, or install a CUDA build of torch on a GPU machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {str(dev)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{name} {str(dev)!r}: MPS is not available on this machine")
    return dev
