"""Entropy coding of STSCQ codes: learned per-(group, token) code probabilities driving a range coder.

An :class:`EntropyModel` holds integer counts: ``code_counts`` (M, T', K) -- how often code k was used
at token t of group m (T' = T token-specific, T' = 1 token-shared) -- and ``group_counts`` (M,). The
model of a symbol is its smoothed count::

    P(group = m)                    = (group_counts[m] + s)     / (sum_m' group_counts[m'] + M * s)
    P(index = k | group m, token t) = (code_counts[m, t', k] + s) / (sum_k' code_counts[m, t', k'] + K * s)

with ``t' = t`` (token-specific) or ``t' = 0`` (token-shared) and smoothing ``s > 0``, so every code keeps
a nonzero probability and every valid batch of codes can be coded.

Stream (``encode`` -> bytes): ONE ``constriction.stream.queue.RangeEncoder`` stream for the whole batch,
image after image: the image's group symbol, then its T token indices, token t coded with the model
(group, t). It is the coder's sequence of 32-bit words, each little-endian, so a stream is always a
whole number of 4-byte words and an empty batch is ``b""``. There is no header: the caller stores the
batch size (and which model was used, see :meth:`EntropyModel.fingerprint`).

Symbols that cost 0 bits are not coded at all: the group symbol when M == 1 and the token indices when
K == 1 (with M == K == 1 every stream is ``b""``).

Determinism: the coder is driven only by float64 rows ``count + s`` (one IEEE addition per element from
the integer tables; no sums, no logs, no torch float ops). constriction rescales each row and rounds it
to an exactly invertible 24-bit fixed-point model in deterministic Rust code (IEEE arithmetic), so the
encoder and decoder -- on any machine, with the same constriction release -- build bit-identical models
through the same code path (:meth:`EntropyModel._token_models`). ``perfect=False`` is fixed: it is part of
the format.

Overhead over the ideal code length (:meth:`EntropyModel.information_bits`, summed over the batch):
    * sealing the range coder and padding to whole 32-bit words: at most 64 bits per stream (measured
      0..32 bits with exactly representable models; it is per STREAM, not per image);
    * the 24-bit fixed-point rounding of probabilities: tiny relative overhead for ordinary rows (well
      under 0.1 %); a symbol whose smoothed probability is below 2**-24 costs at most ~24 bits instead of
      its ideal -log2 p (that only helps), and the mass given to such symbols costs the others a little.

Decoding is strict: a stream is accepted only if it is exactly the stream ``encode`` writes for the
decoded codes (it is re-encoded and compared), so truncated, padded or altered data raises
:class:`EntropyDecodeError` unless the alteration happens to be another valid stream.

Speed and memory: each (group, token) row becomes a concrete constriction model (about 4 bytes per code),
built when a group is first used and kept in a bounded LRU cache (256 MiB per EntropyModel), so coding
costs ~1 us per symbol once warm. Measured on 2 shared CPU cores: M=16, T=128, K=1024, 64 images: encode
+ decode ~30 ms cold; M=1, T=256, K=8192: ~50 ms cold and ~26 MB beyond the count table. ``decode`` costs
about twice ``encode`` (it re-encodes to check the stream).

Work bound: a stream of P bytes holds at most ``max(MAX_VALUES_PER_BYTE * P, 2**20)`` token values (B*T;
``vqswitch.codes.check_value_count``), so what a hostile stream can make :meth:`EntropyModel.decode` do is bounded
by its length before anything is decoded or allocated. :meth:`EntropyModel.encode` raises
:class:`EntropyDensityError` rather than write a stream beyond that bound (codes so predictable that they cost
under 1/4 bit per token; the codec then stores fixed-length codes).

Limits: K and M at most ``2**20`` (constriction's 24-bit models need room for every symbol); counts at
most ``2**53`` (exact in float64); smoothing in [1e-12, 1e12] (so that every row sum stays a finite, normal
float64 for the coder).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ._checks import check_bool, check_int, check_real
from ._io import atomic_write_bytes
from .codebooks import add_code_counts
from .codes import Codes, check_value_count
from .formats import ENTROPY_FILE as FILE_NAME
from .formats import ENTROPY_FORMAT as FORMAT
from .formats import ENTROPY_FORMAT_VERSION as FORMAT_VERSION

__all__ = ["EntropyModel", "EntropyDecodeError", "EntropyDensityError", "FILE_NAME", "MAX_VALUES_PER_BYTE"]

MAX_ALPHABET = 2**20  # largest K and M
MAX_COUNT = 2**53  # largest count (exact in float64)
MIN_SMOOTHING, MAX_SMOOTHING = 1e-12, 1e12  # keeps every row's sum finite and normal for the coder
_MODEL_CACHE_BYTES = 256 * 2**20  # per-EntropyModel cache of built constriction models (~4 bytes per code)
_SAFETENSORS_MAX_HEADER = 100 * 2**20
MAX_VALUES_PER_BYTE = 32  # token values a stream may hold per byte (beyond 2**20): bounds decoding work


class EntropyDecodeError(ValueError):
    """The bytes given to :meth:`EntropyModel.decode` are not a valid stream for this model and batch size."""


class EntropyDensityError(ValueError):
    """:meth:`EntropyModel.encode`: the codes would take more than ``MAX_VALUES_PER_BYTE`` token values per stream
    byte (beyond 2**20 values), which :meth:`EntropyModel.decode` refuses; store them at fixed length instead."""


# ---------------------------------------------------------------------------------------------- helpers
def _constriction():
    """(queue, model) modules of constriction; ImportError with a hint if it is missing."""
    try:
        import constriction
    except ImportError as e:  # pragma: no cover - constriction is a declared dependency
        raise ImportError("vqswitch.entropy needs the 'constriction' package (pip install constriction)") from e
    return constriction.stream.queue, constriction.stream.model


def _int_array(name: str, value) -> np.ndarray:
    """A torch tensor or numpy array of integers -> a C-contiguous int64 numpy copy (TypeError otherwise)."""
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got dtype {value.dtype}")
        arr = value.detach().cpu().numpy()
    elif isinstance(value, np.ndarray):
        arr = value
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray of integers, got {type(value).__name__}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} has values too large for int64")
    return np.ascontiguousarray(arr, dtype=np.int64).copy()


def _codes_arrays(groups, indices, num_groups: int, num_tokens: int, codebook_size: int):
    """Validate (groups (B,), indices (B, T)) and return int64 numpy copies; ValueError/TypeError by name."""
    g = _int_array("groups", groups)
    idx = _int_array("indices", indices)
    if g.ndim != 1:
        raise ValueError(f"groups must have shape (B,), got {g.shape}")
    if idx.ndim != 2 or idx.shape[1] != num_tokens:
        raise ValueError(f"indices must have shape (B, T={num_tokens}), got {idx.shape}")
    if idx.shape[0] != g.shape[0]:
        raise ValueError(f"groups has B={g.shape[0]} images but indices has {idx.shape[0]}")
    for name, arr, hi in (("groups", g, num_groups), ("indices", idx, codebook_size)):
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= hi):
            raise ValueError(f"{name} must lie in [0, {hi}), got values in [{int(arr.min())}, {int(arr.max())}]")
    return g, idx


def _words_to_bytes(words: np.ndarray) -> bytes:
    return np.ascontiguousarray(words, dtype="<u4").tobytes()


# ---------------------------------------------------------------------------------------------- model
class EntropyModel:
    """Integer code counts -> smoothed probabilities -> range coding of (group, token codes) per image.

    Args:
        code_counts: (M, T', K) integer torch tensor or numpy array, values in [0, 2**53]; T' == num_tokens
            (token-specific) or 1 (token-shared).
        group_counts: (M,) integer tensor or array, values in [0, 2**53].
        num_tokens: T, tokens per image (int >= 1).
        smoothing: s, a float in [1e-12, 1e12] added to every count.
    Attributes: num_groups M, num_tokens T, codebook_size K, token_specific (T' == T; with T == 1 the two
        layouts are the same model and it reads True), smoothing, code_counts (M, T', K) and
        group_counts (M,) as int64 CPU tensors (copies: the model itself is immutable).
    Raises: TypeError for non-integer tables or a non-int/non-float argument; ValueError for wrong shapes,
        negative or too large counts, K or M above 2**20, or smoothing outside [1e-12, 1e12].
    """

    def __init__(self, code_counts, group_counts, *, num_tokens: int, smoothing: float = 0.5):
        self.num_tokens = check_int("num_tokens", num_tokens, 1)
        self.smoothing = check_real("smoothing", smoothing, MIN_SMOOTHING, MAX_SMOOTHING)
        counts = _int_array("code_counts", code_counts)
        gcounts = _int_array("group_counts", group_counts)
        if counts.ndim != 3:
            raise ValueError(f"code_counts must have shape (M, T', K), got {counts.shape}")
        m, tp, k = counts.shape
        if tp not in (self.num_tokens, 1):
            raise ValueError(f"code_counts must have T'={self.num_tokens} (token-specific) or 1 (token-shared) "
                             f"rows per group, got shape {counts.shape}")
        if m < 1 or k < 1:
            raise ValueError(f"code_counts needs M >= 1 groups and K >= 1 codes, got shape {counts.shape}")
        if m > MAX_ALPHABET or k > MAX_ALPHABET:
            raise ValueError(f"code_counts shape {counts.shape}: M and K must be at most {MAX_ALPHABET}")
        if gcounts.shape != (m,):
            raise ValueError(f"group_counts must have shape (M,) = ({m},), got {gcounts.shape}")
        for name, arr in (("code_counts", counts), ("group_counts", gcounts)):
            if arr.size and (int(arr.min()) < 0 or int(arr.max()) > MAX_COUNT):
                raise ValueError(f"{name} must lie in [0, 2**53], got values in [{int(arr.min())}, {int(arr.max())}]")
        counts.setflags(write=False)
        gcounts.setflags(write=False)
        self._counts, self._gcounts = counts, gcounts
        self.num_groups, self.codebook_size = m, k
        self.token_specific = tp == self.num_tokens
        self._cache: OrderedDict = OrderedDict()
        self._cache_bytes = 0
        self._lock = threading.Lock()
        self._group_model = None

    # ------------------------------------------------------------------ tables
    @property
    def code_counts(self) -> torch.Tensor:
        """(M, T', K) int64 CPU tensor: a copy of the code counts."""
        return torch.from_numpy(self._counts.copy())

    @property
    def group_counts(self) -> torch.Tensor:
        """(M,) int64 CPU tensor: a copy of the group counts."""
        return torch.from_numpy(self._gcounts.copy())

    def __repr__(self) -> str:
        kind = "token-specific" if self.token_specific else "token-shared"
        return (f"EntropyModel(M={self.num_groups}, T={self.num_tokens}, K={self.codebook_size}, {kind}, "
                f"smoothing={self.smoothing!r})")

    def __eq__(self, other) -> bool:
        """Same tables (shapes and values), smoothing and num_tokens."""
        if not isinstance(other, EntropyModel):
            return NotImplemented
        return (self.num_tokens == other.num_tokens and self.smoothing == other.smoothing
                and self._counts.shape == other._counts.shape and np.array_equal(self._counts, other._counts)
                and np.array_equal(self._gcounts, other._gcounts))

    __hash__ = None

    def __getstate__(self) -> dict:
        """Pickle / deepcopy the tables only (the caches, lock and constriction models are rebuilt)."""
        return {"code_counts": self._counts, "group_counts": self._gcounts, "num_tokens": self.num_tokens,
                "smoothing": self.smoothing}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["code_counts"], state["group_counts"], num_tokens=state["num_tokens"],
                      smoothing=state["smoothing"])

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_quantizer(cls, quantizer, *, smoothing: float = 0.5) -> "EntropyModel":
        """The model of a quantizer's recorded usage: ``quantizer.usage`` (M, T', K) and ``group_counts`` (M,).

        Raises TypeError if ``quantizer`` is not a SwitchableTokenQuantizer; the constructor's errors.
        """
        from .quantizer import SwitchableTokenQuantizer

        if not isinstance(quantizer, SwitchableTokenQuantizer):
            raise TypeError(f"quantizer must be a SwitchableTokenQuantizer, got {type(quantizer).__name__}")
        return cls(quantizer.usage, quantizer.group_counts, num_tokens=quantizer.num_tokens, smoothing=smoothing)

    @classmethod
    def fit(cls, quantizer, latents, *, batch_size: int = 256, smoothing: float = 0.5,
            progress: bool = False) -> "EntropyModel":
        """Count the codes ``quantizer.encode`` gives for ``latents`` and build the model from those counts.

        Args:
            quantizer: a SwitchableTokenQuantizer; run in eval mode without gradients (its training mode is
                restored after), its ``usage``/``group_counts`` buffers are not touched.
            latents: (N, T, D) float tensor (coded ``batch_size`` images at a time), or an iterable of
                (B, T, D) float tensors.
            batch_size: images per quantizer call for a tensor ``latents`` (int >= 1).
            progress: show a tqdm progress bar.
        Raises: TypeError for a non-quantizer, non-tensor latents/batches; the quantizer's errors for
            batches of the wrong shape; the constructor's errors.
        """
        from .quantizer import SwitchableTokenQuantizer

        if not isinstance(quantizer, SwitchableTokenQuantizer):
            raise TypeError(f"quantizer must be a SwitchableTokenQuantizer, got {type(quantizer).__name__}")
        batch_size = check_int("batch_size", batch_size, 1)
        if isinstance(latents, torch.Tensor):
            if latents.dim() != 3:
                raise ValueError(f"latents must have shape (N, T, D), got {tuple(latents.shape)}")
            batches = (latents[i:i + batch_size] for i in range(0, latents.shape[0], batch_size))
            total = -(-latents.shape[0] // batch_size)
        else:
            try:
                batches = iter(latents)
            except TypeError:
                raise TypeError(f"latents must be a (N, T, D) tensor or an iterable of (B, T, D) tensors, "
                                f"got {type(latents).__name__}") from None
            total = len(latents) if hasattr(latents, "__len__") else None
        from tqdm.auto import tqdm

        counter = _Counter(quantizer.num_groups, quantizer.num_tokens, quantizer.codebook_size,
                           quantizer.token_specific)
        device = quantizer.codebooks.device
        was_training = quantizer.training
        quantizer.eval()
        try:
            with torch.no_grad():
                for z in tqdm(batches, total=total, disable=not progress, desc="entropy model", unit="batch"):
                    if not isinstance(z, torch.Tensor):
                        raise TypeError(f"each latents batch must be a (B, T, D) tensor, got {type(z).__name__}")
                    codes = quantizer.encode(z.to(device))
                    counter.add(codes.groups, codes.indices)
        finally:
            quantizer.train(was_training)
        return cls(counter.codes, counter.groups, num_tokens=quantizer.num_tokens, smoothing=smoothing)

    @classmethod
    def from_codes(cls, codes, *, num_tokens: int, token_specific: bool = True,
                   smoothing: float = 0.5) -> "EntropyModel":
        """The model of the counts of some codes: a :class:`~vqswitch.codes.Codes` or a non-empty list of them
        (all with T == num_tokens and the same K and M).

        Raises TypeError for anything else; ValueError for an empty list or mismatched T, K or M.
        """
        num_tokens = check_int("num_tokens", num_tokens, 1)
        check_bool("token_specific", token_specific)
        items = [codes] if isinstance(codes, Codes) else codes
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"codes must be a Codes or a list of Codes, got {type(codes).__name__}")
        if not items:
            raise ValueError("codes must hold at least one Codes (K and M come from them)")
        for c in items:
            if not isinstance(c, Codes):
                raise TypeError(f"codes must be a Codes or a list of Codes, got an item of type {type(c).__name__}")
        k, m = items[0].codebook_size, items[0].num_groups
        for c in items:
            if c.num_tokens != num_tokens:
                raise ValueError(f"codes have T={c.num_tokens} tokens per image but num_tokens={num_tokens}")
            if (c.codebook_size, c.num_groups) != (k, m):
                raise ValueError(f"codes mix (K, M)=({c.codebook_size}, {c.num_groups}) with ({k}, {m})")
        counter = _Counter(m, num_tokens, k, token_specific)
        for c in items:
            counter.add(c.groups, c.indices)
        return cls(counter.codes, counter.groups, num_tokens=num_tokens, smoothing=smoothing)

    # ------------------------------------------------------------------ coding models
    def _group_coder_model(self):
        """The concrete constriction model of the group symbol (M > 1 only)."""
        if self._group_model is None:
            _, cmodel = _constriction()
            rows = self._gcounts.astype(np.float64) + self.smoothing
            self._group_model = cmodel.Categorical(rows, perfect=False)
        return self._group_model

    def _token_models(self, g: int) -> list:
        """Group g's T' concrete constriction Categorical models, one per token row, built from the float64
        rows ``code_counts[g] + s``. Encoder and decoder both get their models here; a bounded LRU cache
        (about 4 bytes per code) keeps the recently used groups."""
        with self._lock:
            hit = self._cache.get(g)
            if hit is not None:
                self._cache.move_to_end(g)
                return hit
        _, cmodel = _constriction()
        rows = self._counts[g].astype(np.float64) + self.smoothing  # (T', K)
        models = [cmodel.Categorical(row, perfect=False) for row in rows]
        size = rows.size * 4
        with self._lock:
            if size <= _MODEL_CACHE_BYTES:
                while self._cache and self._cache_bytes + size > _MODEL_CACHE_BYTES:
                    self._cache.popitem(last=False)
                    self._cache_bytes -= size  # every group of a model has the same size
                if g not in self._cache:
                    self._cache[g] = models
                    self._cache_bytes += size
        return models

    def _encode_arrays(self, groups: np.ndarray, indices: np.ndarray) -> bytes:
        """Validated int64 arrays -> stream bytes (the one place the stream is written)."""
        code_groups, code_tokens = self.num_groups > 1, self.codebook_size > 1
        if groups.shape[0] == 0 or not (code_groups or code_tokens):
            return b""
        queue, _ = _constriction()
        enc = queue.RangeEncoder()
        idx32 = indices.astype(np.int32)
        for b, g in enumerate(groups.tolist()):
            if code_groups:
                enc.encode(g, self._group_coder_model())
            if code_tokens:
                models = self._token_models(g)
                if self.token_specific:
                    for model, symbol in zip(models, idx32[b].tolist()):
                        enc.encode(symbol, model)
                else:
                    enc.encode(idx32[b], models[0])
        return _words_to_bytes(enc.get_compressed())

    # ------------------------------------------------------------------ public coding
    def encode(self, groups, indices) -> bytes:
        """Range-code a batch into one byte string (the format in the module docstring).

        Args:
            groups: (B,) integer torch tensor or numpy array, values in [0, M).
            indices: (B, T) integer torch tensor or numpy array, values in [0, K).
        Returns: bytes, a whole number of 32-bit little-endian words (``b""`` for B == 0).
        Raises: TypeError for non-integer inputs; ValueError naming the argument for wrong shapes or
            out-of-range values; :class:`EntropyDensityError` (a ValueError) for a stream that would hold more
            token values than the format allows per byte (the module docstring's work bound).
        """
        g, idx = _codes_arrays(groups, indices, self.num_groups, self.num_tokens, self.codebook_size)
        data = self._encode_arrays(g, idx)
        try:
            check_value_count(g.shape[0], self.num_tokens, len(data), per_byte=MAX_VALUES_PER_BYTE)
        except ValueError as err:
            raise EntropyDensityError(f"these codes are too predictable for an entropy stream: {err}") from None
        return data

    def decode(self, data, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``batch_size`` images from a stream written by :meth:`encode` with an equal model.

        Args:
            data: bytes, bytearray or memoryview.
            batch_size: B, the number of images in the stream (int >= 0); B*T may be at most
                ``max(MAX_VALUES_PER_BYTE * len(data), 2**20)``, checked before decoding anything.
        Returns: (groups (B,) int64, indices (B, T) int64) CPU tensors.
        Raises: TypeError for data that is not bytes-like or a non-int batch_size, ValueError for a negative
            batch_size; EntropyDecodeError (a ValueError) for anything that is not exactly the stream of
            ``batch_size`` images this model writes: a length that is not a whole number of 32-bit words,
            data the coder rejects, or data (e.g. trailing words) that differs from the re-encoded stream.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, got {type(data).__name__}")
        batch_size = check_int("batch_size", batch_size, 0)
        try:
            data = bytes(data)
        except Exception as e:  # e.g. a memoryview of a non-contiguous buffer
            raise EntropyDecodeError(f"cannot read the stream as bytes: {e}") from e
        if len(data) % 4:
            raise EntropyDecodeError(f"entropy stream length {len(data)} is not a whole number of 32-bit words")
        try:
            check_value_count(batch_size, self.num_tokens, len(data), per_byte=MAX_VALUES_PER_BYTE)
        except ValueError as err:
            raise EntropyDecodeError(f"entropy stream refused: {err}") from None
        try:
            groups, indices = self._decode_words(data, batch_size)
            canonical = self._encode_arrays(groups, indices)
        except (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError):
            raise
        except EntropyDecodeError:
            raise
        except BaseException as e:  # constriction errors (AssertionError, ValueError, pyo3 panics, ...)
            raise EntropyDecodeError(f"invalid entropy stream: {type(e).__name__}: {e}") from e
        if canonical != data:
            raise EntropyDecodeError(
                f"invalid entropy stream for {batch_size} images: it is not the stream this model writes for the "
                f"decoded codes ({len(data)} bytes given, {len(canonical)} expected; corrupted, truncated, "
                "trailing data or a different model)")
        return torch.from_numpy(groups), torch.from_numpy(indices)

    def _decode_words(self, data: bytes, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode without the canonical-stream check: (groups (B,), indices (B, T)) int64 arrays."""
        B, T = batch_size, self.num_tokens
        groups = np.zeros(B, dtype=np.int64)
        indices = np.zeros((B, T), dtype=np.int64)
        code_groups, code_tokens = self.num_groups > 1, self.codebook_size > 1
        if B == 0 or not (code_groups or code_tokens):
            return groups, indices
        queue, _ = _constriction()
        dec = queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        for b in range(B):
            g = int(dec.decode(self._group_coder_model())) if code_groups else 0
            if not 0 <= g < self.num_groups:
                raise EntropyDecodeError(f"decoded group {g} outside [0, {self.num_groups})")
            groups[b] = g
            if code_tokens:
                models = self._token_models(g)
                if self.token_specific:
                    indices[b] = [dec.decode(model) for model in models]
                else:
                    indices[b] = dec.decode(models[0], T)
        if code_tokens and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise EntropyDecodeError(f"decoded token index outside [0, {self.codebook_size})")
        return groups, indices

    def information_bits(self, groups, indices) -> torch.Tensor:
        """Ideal code length of each image under the smoothed model: -log2 P(group) - sum_t log2 P(index_t).

        Args: groups (B,) and indices (B, T) integer tensors/arrays, as :meth:`encode`.
        Returns: (B,) float64 CPU tensor of bits (0 for the group term when M == 1, for tokens when K == 1).
        Raises: the same errors as :meth:`encode`.
        """
        g, idx = _codes_arrays(groups, indices, self.num_groups, self.num_tokens, self.codebook_size)
        s = self.smoothing
        bits = np.zeros(g.shape[0], dtype=np.float64)
        if self.num_groups > 1:
            gtotal = float(self._gcounts.sum(dtype=np.float64)) + self.num_groups * s
            bits += np.log2(gtotal) - np.log2(self._gcounts[g].astype(np.float64) + s)
        if self.codebook_size > 1 and g.shape[0]:
            tok = np.arange(self.num_tokens) if self.token_specific else np.zeros(self.num_tokens, dtype=np.int64)
            totals = self._counts.sum(axis=-1, dtype=np.float64) + self.codebook_size * s  # (M, T')
            c = self._counts[g[:, None], tok[None, :], idx].astype(np.float64) + s  # (B, T)
            bits += (np.log2(totals[g[:, None], tok[None, :]]) - np.log2(c)).sum(axis=1)
        return torch.from_numpy(bits)

    # ------------------------------------------------------------------ identity and files
    def _canonical_bytes(self) -> bytes:
        m, tp, k = self._counts.shape
        head = struct.pack("<16sIQQQQd", FORMAT.encode(), FORMAT_VERSION, m, tp, k, self.num_tokens, self.smoothing)
        return head + self._counts.astype("<i8").tobytes() + self._gcounts.astype("<i8").tobytes()

    def check_fits(self, quantizer, *, name: str = "entropy_model") -> None:
        """Raise ValueError (naming ``name``) unless this model's (M, T, K) are ``quantizer``'s."""
        have = (self.num_groups, self.num_tokens, self.codebook_size)
        want = (quantizer.num_groups, quantizer.num_tokens, quantizer.codebook_size)
        if have != want:
            raise ValueError(f"{name} is for (M, T, K) = {have}, the quantizer has {want}; build it with "
                             "EntropyModel.from_quantizer")

    def fingerprint(self) -> str:
        """sha256 hex digest of (format, version, M, T', K, T, smoothing as float64, code_counts and group_counts
        as little-endian int64): equal for equal models on any machine."""
        return hashlib.sha256(self._canonical_bytes()).hexdigest()

    def save(self, path) -> None:
        """Write the model to the safetensors file ``path`` atomically (a failed write leaves the old file).

        Tensors "code_counts" (M, T', K) int64 and "group_counts" (M,) int64; string metadata ``format``,
        ``format_version``, ``num_tokens``, ``smoothing`` (repr of the float, exact) and ``fingerprint``.
        Raises OSError from writing.
        """
        from safetensors.torch import save

        meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "num_tokens": str(self.num_tokens),
                "smoothing": repr(self.smoothing), "fingerprint": self.fingerprint()}
        blob = save({"code_counts": self.code_counts, "group_counts": self.group_counts}, metadata=meta)
        atomic_write_bytes(path, blob)

    @classmethod
    def load(cls, path) -> "EntropyModel":
        """Read a file written by :meth:`save`.

        Raises OSError from reading; ValueError for a file that is not a vqswitch entropy model (not
        safetensors, wrong format or version, missing/extra tensors, bad metadata, shapes or dtypes) or whose
        stored fingerprint does not match its tables (tampered or corrupted).
        """
        data = Path(os.fspath(path)).read_bytes()
        meta = _safetensors_metadata(data, path)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a vqswitch entropy model (format {meta.get('format')!r})")
        if meta.get("format_version") != str(FORMAT_VERSION):
            raise ValueError(f"{path}: unsupported entropy model format_version {meta.get('format_version')!r} "
                             f"(this reader knows {FORMAT_VERSION})")
        try:
            num_tokens = int(meta["num_tokens"])
            smoothing = float(meta["smoothing"])
            stored = meta["fingerprint"]
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: bad entropy model metadata ({type(e).__name__}: {e})") from None
        from safetensors.torch import load

        try:
            tensors = load(data)
        except Exception as e:
            raise ValueError(f"{path} is not a readable safetensors file: {e}") from None
        if set(tensors) != {"code_counts", "group_counts"}:
            raise ValueError(f"{path}: expected tensors code_counts and group_counts, got {sorted(tensors)}")
        for name, t in tensors.items():
            if t.dtype != torch.int64:
                raise ValueError(f"{path}: tensor {name} must be int64, got {t.dtype}")
        try:
            model = cls(tensors["code_counts"], tensors["group_counts"], num_tokens=num_tokens, smoothing=smoothing)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: invalid entropy model: {e}") from None
        if model.fingerprint() != stored:
            raise ValueError(f"{path}: stored fingerprint {stored!r} does not match the tables "
                             f"({model.fingerprint()}); the file is corrupted or was modified")
        return model


def _safetensors_metadata(data: bytes, path) -> dict:
    """The ``__metadata__`` dict of a safetensors file's bytes; ValueError if the header is unreadable."""
    if len(data) < 8:
        raise ValueError(f"{path} is not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(len(data) - 8, _SAFETENSORS_MAX_HEADER):
        raise ValueError(f"{path} is not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{path} is not a safetensors file (unreadable header)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} has no entropy model metadata")
    return meta


class _Counter:
    """Accumulates (M, T', K) code counts and (M,) group counts from batches of codes (int64, on the CPU)."""

    def __init__(self, num_groups: int, num_tokens: int, codebook_size: int, token_specific: bool):
        self.shape = (num_groups, num_tokens if token_specific else 1, codebook_size)
        self.codes = torch.zeros(self.shape, dtype=torch.long)
        self.groups = torch.zeros(num_groups, dtype=torch.long)

    def add(self, groups: torch.Tensor, indices: torch.Tensor) -> None:
        """groups (B,) and indices (B, T) int64 (already validated by Codes)."""
        add_code_counts(self.codes, self.groups, groups.detach().cpu().long(), indices.detach().cpu().long())
