"""Image data for fine-tuning and the demo: procedural faces, an image-folder loader, batching and image grids.

Everything here yields images as float tensors of shape (3, H, W) (one image) or (B, 3, H, W) (a batch), with
pixel values in a ``pixel_range`` chosen by the caller: ``(0.0, 1.0)`` for MaskGIT-VQGAN / TiTok, ``(-1.0, 1.0)``
for diffusers' ``VQModel``.

**Procedural faces** (:func:`procedural_faces`, :class:`ProceduralFaces`, :func:`face_attributes`) need no download:
cartoon faces drawn from random identity attributes (face shape, skin tone, hair colour and style, eyes, eyebrows,
nose, mouth, ears, glasses, beard, clothes, background), rendered with torch over the whole batch at once with
analytically anti-aliased edges (each shape is a signed distance; a pixel's coverage is its distance ramped over one
pixel). Faces are aligned like aligned face datasets (eyes at nearly fixed positions, small per-image shift, roll and
scale), so a token position means the same part of the face in every image -- the structure token-specific codebooks
use -- and images of one identity look alike -- the structure codebook groups use. Image ``i`` of seed ``s`` is
identity ``i % num_identities``; its identity attributes depend only on ``(s, identity)`` and its per-image jitter
(pose, lighting, gaze, eye opening, smile, background shade) only on ``(s, i)``, never on how many images are drawn or
in which order.

**Image folders** (:class:`ImageFolder`) are read with Pillow, which is imported only when a file is read, so
``import vqswitch`` stays light. Unreadable files never stop a run half-way: each is skipped, recorded in
``ImageFolder.skipped`` and reported by one :class:`UnreadableImageWarning`.

:func:`iterate_batches` batches any of these, a tensor, a list of image tensors or any iterable of image tensors;
:func:`save_image_grid` writes a batch as one PNG (atomically).
"""
from __future__ import annotations

import functools
import math
import numbers
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ._io import atomic_path
from .metrics import parse_pairs, resolve_pair_image

__all__ = ["procedural_faces", "ProceduralFaces", "face_attributes", "DEFAULT_NUM_IDENTITIES", "HAIR_STYLES",
           "ImageFolder", "UnreadableImageWarning", "IMAGE_EXTENSIONS", "iterate_batches", "save_image_grid",
           "save_labelled_grid", "label_band_height",
           "FaceFolder", "FaceData", "load_face_folder", "split_identities", "draw_pairs"]

DEFAULT_NUM_IDENTITIES = 128
HAIR_STYLES = ("none", "short", "long", "fringe")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


# ------------------------------------------------------------------------------------------------ argument checks


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_pixel_range(pixel_range) -> tuple[float, float]:
    if isinstance(pixel_range, (str, bytes)) or not isinstance(pixel_range, Sequence) or len(pixel_range) != 2:
        raise TypeError(f"pixel_range must be a pair (low, high), got {pixel_range!r}")
    lo, hi = pixel_range
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"pixel_range must hold two real numbers, got {pixel_range!r}")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise ValueError(f"pixel_range must be finite with low < high, got {pixel_range!r}")
    return lo, hi


def _check_root(root) -> Path:
    """An image folder argument: a str or PathLike naming an existing folder (TypeError / ValueError otherwise)."""
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str or PathLike, got {type(root).__name__}")
    path = Path(root)
    if not path.is_dir():
        raise ValueError(f"root {str(path)!r} is not an existing folder")
    return path


def _check_index(value, length: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"index must be an int, got {type(value).__name__}")
    value = int(value)
    if not -length <= value < length:
        raise IndexError(f"index {value} out of range for a dataset of {length} images")
    return value % length


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(entropy)))


# ------------------------------------------------------------------------------------------------ face attributes

# Palettes (RGB in [0, 1]). Each identity draws from these, then jitters slightly.
_SKIN = ((0.98, 0.87, 0.78), (0.95, 0.80, 0.69), (0.90, 0.73, 0.60), (0.82, 0.62, 0.47),
         (0.68, 0.49, 0.35), (0.54, 0.38, 0.26), (0.40, 0.27, 0.19))
_HAIR = ((0.07, 0.06, 0.06), (0.22, 0.14, 0.09), (0.40, 0.26, 0.15), (0.58, 0.30, 0.14),
         (0.85, 0.72, 0.46), (0.66, 0.65, 0.64), (0.72, 0.38, 0.20))
_IRIS = ((0.30, 0.18, 0.09), (0.14, 0.09, 0.06), (0.25, 0.45, 0.72), (0.30, 0.52, 0.32),
         (0.50, 0.40, 0.22), (0.45, 0.50, 0.55))
_BACKGROUND = ((0.82, 0.84, 0.87), (0.55, 0.68, 0.82), (0.80, 0.76, 0.66), (0.42, 0.55, 0.45),
               (0.30, 0.31, 0.36), (0.86, 0.70, 0.72), (0.62, 0.58, 0.74), (0.93, 0.90, 0.80))
_FRAMES = ((0.05, 0.05, 0.05), (0.35, 0.20, 0.10), (0.70, 0.70, 0.72))
_HAIR_STYLE_P = (0.10, 0.35, 0.30, 0.25)

_ID_STREAM, _IMAGE_STREAM = 0x1D, 0x1A  # separate random streams for identities and images


def _pick(rng: np.random.Generator, palette, jitter: float) -> tuple:
    base = np.asarray(palette[int(rng.integers(len(palette)))])
    return tuple(float(c) for c in np.clip(base + rng.uniform(-jitter, jitter, 3), 0.0, 1.0))


@functools.lru_cache(maxsize=4096)
def _identity_attributes(seed: int, identity: int) -> tuple:
    """The identity-level attributes of ``(seed, identity)`` as a tuple of (key, value) pairs (cached, immutable)."""
    r = _rng(seed, _ID_STREAM, identity)
    u = r.uniform
    skin = _pick(r, _SKIN, 0.03)
    hair_colour = _pick(r, _HAIR, 0.03)
    style = HAIR_STYLES[int(r.choice(len(HAIR_STYLES), p=_HAIR_STYLE_P))]
    eye_y = -0.08 + u(-0.02, 0.02)
    brow_y = eye_y - u(0.11, 0.15)
    nose_tip = eye_y + u(0.22, 0.28)
    face_cy = eye_y + u(0.02, 0.06)
    if style == "fringe":
        hairline, hair_curve = brow_y - u(0.02, 0.05), u(0.0, 0.06)
    else:
        hairline, hair_curve = eye_y - u(0.30, 0.40), u(0.15, 0.30)
    lip_mix = u(0.35, 0.6)
    lip = tuple(float(0.9 * ((1 - lip_mix) * s + lip_mix * t)) for s, t in zip(skin, (0.75, 0.30, 0.32)))
    attrs = dict(
        face_width=u(0.42, 0.52), face_height=u(0.52, 0.62), face_cy=face_cy, face_shading=u(0.12, 0.22),
        skin=skin, blush=u(0.0, 0.25),
        hair_style=style, hair_colour=hair_colour, hairline=hairline, hair_curve=hair_curve,
        hair_extra=(u(0.04, 0.09), u(0.06, 0.12)), long_hair=(u(0.12, 0.18), u(0.25, 0.35)),
        eye_y=eye_y, eye_spacing=u(0.19, 0.24), eye_width=u(0.075, 0.095), eye_aspect=u(0.45, 0.65),
        iris_colour=_pick(r, _IRIS, 0.03),
        brow_y=brow_y, brow_length=u(0.08, 0.11), brow_thickness=u(0.018, 0.032), brow_tilt=u(-0.03, 0.03),
        nose_tip=nose_tip, nose_width=u(0.04, 0.06),
        mouth_y=nose_tip + u(0.12, 0.16), mouth_width=u(0.12, 0.17), lip_thickness=u(0.018, 0.03),
        smile=u(-0.01, 0.05), lip_colour=lip,
        ear_size=(u(0.06, 0.08), u(0.10, 0.13)), neck_width=u(0.45, 0.55),
        glasses=bool(r.random() < 0.25), glasses_colour=_pick(r, _FRAMES, 0.02),
        glasses_size=u(0.035, 0.05), glasses_thickness=u(0.010, 0.016),
        beard=bool(r.random() < 0.15),
        background=_pick(r, _BACKGROUND, 0.06), clothes_colour=tuple(float(c) for c in r.uniform(0.1, 0.9, 3)),
        shoulder_width=u(0.85, 1.05), shoulder_drop=u(0.55, 0.65),
    )
    return tuple((k, float(v) if isinstance(v, (float, np.floating)) else v) for k, v in attrs.items())


def face_attributes(seed: int, i: int, num_identities: int = DEFAULT_NUM_IDENTITIES) -> dict:
    """The attributes the procedural face ``i`` of ``seed`` is drawn from (a new dict; mutate freely).

    Args:
        seed: int >= 0.
        i: image index, int >= 0.
        num_identities: size of the identity set, int >= 1; image ``i`` shows identity ``i % num_identities``.
    Returns a dict with ``index``, ``seed``, ``identity`` (int in [0, num_identities)), the identity's attributes
    (shared by every image of that identity): ``face_width``, ``face_height``, ``face_cy``, ``skin`` (RGB tuple),
    ``hair_style`` (one of :data:`HAIR_STYLES`), ``hair_colour``, ``eye_y``, ``eye_spacing`` (half the distance
    between the eyes), ``eye_width``, ``iris_colour``, ``brow_*``, ``nose_*``, ``mouth_y``, ``mouth_width``,
    ``lip_colour``, ``glasses`` (bool), ``beard`` (bool), ``clothes_colour`` ..., and the per-image jitter:
    ``shift`` (dx, dy), ``angle`` (degrees), ``scale``, ``light_direction`` (radians), ``light_strength``,
    ``brightness``, ``gaze`` (gx, gy), ``eye_open``; ``smile``, ``brow_y`` and ``background`` are the identity's
    values plus a small per-image change. Lengths are in the face frame: the image spans [-1, 1] on each axis,
    x to the right, y downwards (before the per-image shift, roll and scale).
    Raises ``TypeError``/``ValueError`` naming the argument for a non-int or negative ``seed``/``i`` or
    ``num_identities < 1``.
    """
    seed = _check_int("seed", seed, 0)
    i = _check_int("i", i, 0)
    num_identities = _check_int("num_identities", num_identities, 1)
    identity = i % num_identities
    out = {"index": i, "seed": seed, "identity": identity}
    out.update(_identity_attributes(seed, identity))
    r = _rng(seed, _IMAGE_STREAM, i)
    u = r.uniform
    out.update(
        shift=(u(-0.035, 0.035), u(-0.035, 0.035)), angle=u(-4.0, 4.0), scale=u(0.96, 1.04),
        light_direction=u(0.0, 2 * math.pi), light_strength=u(0.0, 0.18), brightness=u(0.92, 1.08),
        gaze=(u(-0.3, 0.3), u(-0.15, 0.15)), eye_open=u(0.75, 1.0),
    )
    out["smile"] += u(-0.012, 0.012)
    out["brow_y"] += u(-0.012, 0.012)
    out["background"] = tuple(float(c) for c in np.clip(np.asarray(out["background"]) + u(-0.05, 0.05, 3), 0, 1))
    return out


# ------------------------------------------------------------------------------------------------ face rendering
#
# Rendering runs in numpy, whose elementwise operations are single-threaded: a face is a few hundred small
# operations, which lose more to thread synchronisation than they gain (and on a busy machine OpenMP barriers make
# them many times slower). Only exactly rounded operations (+ - * / sqrt, min/max, clip, where) touch the pixels and
# all trigonometry is done per image in Python, so an image comes out bit-identical in whichever batch it is drawn.


def _ellipse(u, v, cx, cy, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (exact sign, about unit gradient near the edge)."""
    qx, qy = (u - cx) / rx, (v - cy) / ry
    k0 = np.sqrt(qx * qx + qy * qy)
    k1x, k1y = qx / rx, qy / ry
    k1 = np.sqrt(k1x * k1x + k1y * k1y)
    return np.where(k1 > 1e-6, k0 * (k0 - 1) / np.maximum(k1, 1e-6), -np.minimum(rx, ry))


def _circle(u, v, cx, cy, r):
    dx, dy = u - cx, v - cy
    return np.sqrt(dx * dx + dy * dy) - r


def _capsule(u, v, ax, ay, bx, by, r):
    """Signed distance to the segment a-b thickened by r."""
    pax, pay, bax, bay = u - ax, v - ay, bx - ax, by - ay
    h = np.clip((pax * bax + pay * bay) / np.maximum(bax * bax + bay * bay, 1e-12), 0, 1)
    dx, dy = pax - bax * h, pay - bay * h
    return np.sqrt(dx * dx + dy * dy) - r


def _box(u, v, cx, cy, hx, hy):
    qx, qy = np.abs(u - cx) - hx, np.abs(v - cy) - hy
    ox, oy = np.maximum(qx, 0), np.maximum(qy, 0)
    return np.sqrt(ox * ox + oy * oy) + np.minimum(np.maximum(qx, qy), 0)


def _render(attrs: list[dict], size: int) -> np.ndarray:
    """Render a list of attribute dicts -> (B, 3, size, size) float32 array in [0, 1]."""
    B = len(attrs)
    f32 = np.float32

    def per_image(values, channels=None):
        return np.asarray(values, dtype=f32).reshape((B, 1, 1) if channels is None else (B, channels, 1, 1))

    def col(key, j=None):
        return per_image([t[key] if j is None else t[key][j] for t in attrs])

    def rgb(key, factor=1.0):
        return per_image([t[key] for t in attrs], 3) * f32(factor)

    def flag(pred):
        return per_image([1.0 if pred(t) else 0.0 for t in attrs])

    def const(r, g, b):
        return np.asarray([r, g, b], dtype=f32).reshape(1, 3, 1, 1)

    coords = (np.arange(size, dtype=f32) + f32(0.5)) * f32(2.0 / size) - f32(1.0)
    x, y = coords.reshape(1, 1, size), coords.reshape(1, size, 1)
    theta = [math.radians(t["angle"]) for t in attrs]
    cos, sin = per_image([math.cos(t) for t in theta]), per_image([math.sin(t) for t in theta])
    s = col("scale")
    xr, yr = x - col("shift", 0), y - col("shift", 1)
    u = (cos * xr + sin * yr) / s  # face-frame coordinates of every pixel, (B, size, size)
    v = (cos * yr - sin * xr) / s
    px = f32(2.0 / size) / s  # one pixel in face-frame units

    def cover(d):  # coverage of a pixel by the shape of signed distance d: a one-pixel ramp across the edge
        return np.clip(0.5 - d / px, 0, 1)

    img = np.ascontiguousarray(np.broadcast_to(rgb("background"), (B, 3, size, size)))

    def paint(alpha, colour):  # img += alpha * (colour - img), with one temporary
        diff = np.subtract(colour, img)
        diff *= alpha[:, None]
        np.add(img, diff, out=img)

    skin = rgb("skin")
    a, b, cy = col("face_width"), col("face_height"), col("face_cy")
    eye_y, eye_dx = col("eye_y"), col("eye_spacing")
    hair = rgb("hair_colour")

    # shoulders and clothes, long hair behind the head, neck, ears
    paint(cover(_ellipse(u, v, 0.0, cy + b + col("shoulder_drop"), col("shoulder_width"), 0.45)), rgb("clothes_colour"))
    long_hair = flag(lambda t: t["hair_style"] == "long")
    paint(cover(_ellipse(u, v, 0.0, cy + 0.2, a + col("long_hair", 0), b + col("long_hair", 1))) * long_hair, hair)
    paint(cover(_box(u, v, 0.0, cy + b * 0.8 + 0.25, a * col("neck_width"), 0.35)), skin * f32(0.82))
    ex, ey = col("ear_size", 0), col("ear_size", 1)
    for side in (-1.0, 1.0):
        paint(cover(_ellipse(u, v, side * a * 0.97, eye_y + 0.1, ex, ey)), skin * f32(0.92))

    # the face, shaded darker towards its rim
    d_face = _ellipse(u, v, 0.0, cy, a, b)
    face_alpha = cover(d_face)
    paint(face_alpha, skin)
    ua, vb = u / a, (v - cy) / b
    rim = np.clip((np.sqrt(ua * ua + vb * vb) - 0.55) / 0.45, 0, 1)
    img *= (1 - face_alpha * col("face_shading") * rim * rim * (3 - 2 * rim))[:, None]

    # cheeks
    for side in (-1.0, 1.0):
        soft = np.clip(1 - _circle(u, v, side * (eye_dx + 0.02), col("nose_tip") - 0.02, 0.0) / 0.09, 0, 1)
        paint(soft * soft * col("blush"), const(0.9, 0.4, 0.4))

    # beard: the face below a line that starts under the nose and rises towards the cheeks
    d_beard = np.maximum(d_face - 0.015, col("nose_tip") + 0.045 - 0.06 * ua * ua - v)
    paint(cover(d_beard) * 0.9 * flag(lambda t: t["beard"]), hair)

    # hair on top of the head, down to a hairline that drops towards the temples
    hairline = col("hairline") + col("hair_curve") * ua * ua
    d_cap = np.maximum(_ellipse(u, v, 0.0, cy - 0.05, a + col("hair_extra", 0), b + col("hair_extra", 1)),
                       v - hairline)
    paint(cover(d_cap) * flag(lambda t: t["hair_style"] != "none"), hair)

    # eyes: white, iris (clipped to the white, looking in the gaze direction), pupil; eyebrows
    rx = col("eye_width")
    ry = rx * col("eye_aspect") * col("eye_open")
    iris_r = rx * col("eye_aspect") * 0.9
    gx, gy = col("gaze", 0) * (rx - iris_r), col("gaze", 1) * ry
    for side in (-1.0, 1.0):
        cx = side * eye_dx
        d_eye = _ellipse(u, v, cx, eye_y, rx, ry)
        paint(cover(d_eye), const(0.94, 0.93, 0.91))
        paint(cover(np.maximum(_circle(u, v, cx + gx, eye_y + gy, iris_r), d_eye)), rgb("iris_colour"))
        paint(cover(np.maximum(_circle(u, v, cx + gx, eye_y + gy, iris_r * 0.45), d_eye)), const(0.04, 0.04, 0.05))
        # a thick segment above the eye, its outer end raised or lowered by the tilt
        inner, outer, by = cx - side * col("brow_length"), cx + side * col("brow_length"), col("brow_y")
        paint(cover(_capsule(u, v, inner, by, outer, by - col("brow_tilt"), col("brow_thickness"))), hair * f32(0.8))

    # nose: a soft shadow along one side, the nose bottom and two nostrils
    tip, nw = col("nose_tip"), col("nose_width")
    paint(cover(_capsule(u, v, 0.0, eye_y + 0.05, nw * 0.3, tip - 0.03, 0.012)) * 0.35, skin * f32(0.7))
    paint(cover(_ellipse(u, v, 0.0, tip, nw, 0.035)) * 0.6, skin * f32(0.88))
    for side in (-1.0, 1.0):
        paint(cover(_ellipse(u, v, side * nw * 0.55, tip + 0.01, 0.022, 0.014)) * 0.8, skin * f32(0.45))

    # mouth: a band around the parabola y = mouth_y - smile * (x / w)^2, thinner towards the corners
    mw, smile = col("mouth_width"), col("smile")
    um = u / mw
    slope = 2 * smile * um / mw
    dist = np.abs(v - (col("mouth_y") - smile * um * um)) / np.sqrt(1 + slope * slope)
    umc = np.clip(um, -1, 1)
    thick = col("lip_thickness") * (1 - 0.5 * umc * umc)
    paint(cover(np.maximum(dist - thick, np.abs(u) - mw)), rgb("lip_colour"))
    paint(cover(np.maximum(dist - 0.006, np.abs(u) - mw * 0.9)) * 0.6, const(0.3, 0.1, 0.1))

    # glasses: two rings, a bridge and the arms
    rg, th = rx + col("glasses_size"), col("glasses_thickness")
    d_gl = _capsule(u, v, -eye_dx + rg, eye_y, eye_dx - rg, eye_y, th)
    for side in (-1.0, 1.0):
        d_gl = np.minimum(d_gl, np.abs(_circle(u, v, side * eye_dx, eye_y, rg)) - th)
        d_gl = np.minimum(d_gl, _capsule(u, v, side * (eye_dx + rg), eye_y, side * a, eye_y - 0.02, th))
    paint(cover(d_gl) * flag(lambda t: t["glasses"]), rgb("glasses_colour"))

    # lighting: a directional gradient and a brightness over the whole picture
    lx = per_image([t["light_strength"] * math.cos(t["light_direction"]) for t in attrs])
    ly = per_image([t["light_strength"] * math.sin(t["light_direction"]) for t in attrs])
    img *= (col("brightness") * (1 + lx * x + ly * y))[:, None]
    assert img.dtype == f32
    return np.clip(img, 0, 1, out=img)


_CHUNK = 32  # images rendered at once at 64 x 64 (fewer when larger): every temporary stays cache-sized


def _faces(indices: Sequence[int], size: int, seed: int, pixel_range: tuple[float, float],
           num_identities: int) -> torch.Tensor:
    lo, hi = pixel_range
    out = torch.empty(len(indices), 3, size, size, dtype=torch.float32)
    chunk = max(1, _CHUNK * 64 * 64 // (size * size))
    for start in range(0, len(indices), chunk):
        attrs = [face_attributes(seed, i, num_identities) for i in indices[start:start + chunk]]
        out[start:start + len(attrs)] = torch.from_numpy(_render(attrs, size))
    if (lo, hi) != (0.0, 1.0):
        out.mul_(hi - lo).add_(lo)
    return out


def procedural_faces(n: int, size: int = 64, seed: int = 0, pixel_range=(0.0, 1.0),
                     num_identities: int = DEFAULT_NUM_IDENTITIES, start: int = 0) -> torch.Tensor:
    """Procedural faces ``start .. start + n - 1`` of ``seed`` as one tensor.

    Args:
        n: number of images, int >= 0.
        size: side in pixels, int >= 1.
        seed: int >= 0; the same seed gives bit-identical images.
        pixel_range: (low, high) floats, low < high: pixel values lie in [low, high].
        num_identities: int >= 1; image i shows identity ``i % num_identities`` (see :func:`face_attributes`).
        start: index of the first image, int >= 0; ``procedural_faces(n, start=k)[j]`` equals
            ``procedural_faces(k + n)[k + j]``.
    Returns a float32 tensor of shape (n, 3, size, size) on the CPU.
    Raises ``TypeError``/``ValueError`` naming the argument for bad values.
    """
    n = _check_int("n", n, 0)
    size = _check_int("size", size, 1)
    seed = _check_int("seed", seed, 0)
    start = _check_int("start", start, 0)
    num_identities = _check_int("num_identities", num_identities, 1)
    return _faces(range(start, start + n), size, seed, _check_pixel_range(pixel_range), num_identities)


class ProceduralFaces(torch.utils.data.Dataset):
    """A map-style Dataset of ``n`` procedural faces (see :func:`procedural_faces`), drawn on demand.

    ``dataset[i]`` is a float32 (3, size, size) tensor in ``pixel_range`` that depends only on ``(seed, i)`` (and
    ``num_identities``), never on access order; ``dataset[i]`` equals ``procedural_faces(n, size, seed, ...)[i]``.
    :meth:`get_batch` (and ``__getitems__``, which ``torch.utils.data.DataLoader`` uses) renders many at once.

    Attributes:
        identities: int64 tensor (n,), the identity of each image (``i % num_identities``).
    Raises ``TypeError``/``ValueError`` naming the argument for bad constructor values; indexing with a non-int
    raises ``TypeError``, out of range ``IndexError``.
    """

    def __init__(self, n: int, size: int = 64, seed: int = 0, pixel_range=(0.0, 1.0),
                 num_identities: int = DEFAULT_NUM_IDENTITIES):
        self.n = _check_int("n", n, 0)
        self.size = _check_int("size", size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.pixel_range = _check_pixel_range(pixel_range)
        self.num_identities = _check_int("num_identities", num_identities, 1)
        self.identities = torch.arange(self.n, dtype=torch.int64) % self.num_identities

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.get_batch([index])[0]

    def get_batch(self, indices: Iterable[int]) -> torch.Tensor:
        """Images ``indices`` (ints, negatives count from the end) as one float32 (len(indices), 3, size, size)."""
        if isinstance(indices, (torch.Tensor, np.ndarray)):
            indices = indices.tolist()
        idx = [_check_index(i, self.n) for i in indices]
        return _faces(idx, self.size, self.seed, self.pixel_range, self.num_identities)

    def __getitems__(self, indices) -> list[torch.Tensor]:
        return list(self.get_batch(indices).unbind(0))

    def attributes(self, index: int) -> dict:
        """:func:`face_attributes` of image ``index``."""
        return face_attributes(self.seed, _check_index(index, self.n), self.num_identities)

    def verification_pairs(self, num_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A face-verification pair list over this dataset: ``num_pairs`` pairs, the first ``num_pairs // 2``
        (rounded up) of one identity, the rest of two identities, each pair of two different images.

        Returns ``(pairs, same)``: int64 (num_pairs, 2) image indices and bool (num_pairs,), deterministic in
        ``seed``. Raises ``ValueError`` when no identity has two images (no same pair exists) or only one
        identity is present (no different pair exists) and such pairs are asked for.
        """
        num_pairs = _check_int("num_pairs", num_pairs, 0)
        seed = _check_int("seed", seed, 0)
        n_same = (num_pairs + 1) // 2
        n_diff = num_pairs - n_same
        members = {}
        for i, ident in enumerate(self.identities.tolist()):
            members.setdefault(ident, []).append(i)
        repeated = [m for m in members.values() if len(m) >= 2]
        if n_same and not repeated:
            raise ValueError(f"no identity has two images among n={self.n} with num_identities="
                             f"{self.num_identities}: use n > num_identities for same-identity pairs")
        if n_diff and len(members) < 2:
            raise ValueError(f"only one identity among n={self.n} images: no different-identity pairs exist")
        r = _rng(seed, 0x5A)
        pairs = []
        for _ in range(n_same):
            group = repeated[int(r.integers(len(repeated)))]
            a, b = r.choice(len(group), size=2, replace=False)
            pairs.append((group[int(a)], group[int(b)]))
        ids = self.identities.numpy()
        while len(pairs) < num_pairs:
            a, b = (int(k) for k in r.integers(self.n, size=2))
            if ids[a] != ids[b]:
                pairs.append((a, b))
        pairs_t = torch.tensor(pairs, dtype=torch.int64).view(-1, 2)
        same = torch.arange(num_pairs) < n_same
        return pairs_t, same


# ------------------------------------------------------------------------------------------------ image folders


class UnreadableImageWarning(UserWarning):
    """An image file could not be read and was skipped (one warning per file)."""


def _import_pil():
    try:
        from PIL import Image, ImageOps
    except ImportError as e:  # pragma: no cover - Pillow comes with the dev extras
        raise ImportError("reading and writing image files needs Pillow: pip install pillow") from e
    return Image, ImageOps


def _to_rgb(im):
    """A loaded PIL image -> mode "RGB" (8-bit); transparency is composited over white."""
    Image, _ = _import_pil()
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):  # 16-bit greyscale: keep its range
        arr = np.asarray(im, dtype=np.float64) / 257.0
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB") if im.mode != "RGB" else im


def _open_rgb(path: Path):
    """The whole RGB PIL image of ``path`` (decoded now, EXIF orientation applied); raises on any failure."""
    Image, ImageOps = _import_pil()
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        im = _to_rgb(im)
    w, h = im.size
    if w < 1 or h < 1:
        raise ValueError(f"empty image {w}x{h}")
    return im


def _fit_short_side(im, size: int):
    """``im`` resized (bicubic) so that its short side is ``size`` (unchanged when it already is)."""
    Image, _ = _import_pil()
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    return im


def _center_crop(im, size: int) -> torch.Tensor:
    """The centre ``size x size`` window of a PIL RGB image whose short side is ``size``: uint8 (3, size, size)."""
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    arr = np.asarray(im, dtype=np.uint8)[top:top + size, left:left + size]
    return torch.from_numpy(np.array(arr, dtype=np.uint8, order="C")).permute(2, 0, 1)


def _to_float(x: torch.Tensor, pixel_range: tuple[float, float]) -> torch.Tensor:
    """uint8 pixels -> float32 in ``pixel_range`` (0 -> low, 255 -> high)."""
    lo, hi = pixel_range
    return x.to(torch.float32).mul_((hi - lo) / 255.0).add_(lo)


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class ImageFolder(torch.utils.data.Dataset):
    """A map-style Dataset of every image file under ``root`` (recursively), square-cropped to ``size``.

    Files are those whose name ends with one of ``extensions`` (case-insensitive), in sorted order of their path
    relative to ``root`` (the same order on every machine). ``dataset[i]`` reads file ``i`` with Pillow (EXIF
    orientation applied, transparency composited over white, 16-bit greyscale kept to its range), converts it to
    RGB, resizes it so that its short side is ``size`` (bicubic, antialiased), crops ``size x size`` (the centre,
    or a random window with ``crop="random"``), flips it horizontally with probability 1/2 if ``flip``, and returns
    a float32 (3, size, size) tensor with pixel values in ``pixel_range``. The random window and flip depend only
    on ``(seed, epoch, i)``: call :meth:`set_epoch` each epoch for new ones.

    Unreadable files: reading is lazy, so a file that fails (corrupt, truncated, not an image, vanished) is found
    when first indexed. It is then recorded in ``skipped`` as ``(path, reason)``, reported by one
    :class:`UnreadableImageWarning`, never read again, and the next readable file in order (wrapping around) is
    returned in its place (with index ``i``'s crop and flip), so ``len`` and every index stay valid and a run never
    stops half-way. :meth:`validate` reads every file up front instead and drops the bad ones. With DataLoader
    workers, each worker has its own ``skipped``.

    Args:
        root: a folder (str or PathLike).
        size: output side in pixels, int >= 1.
        pixel_range: (low, high), low < high.
        crop: "center" or "random".
        flip: random horizontal flips (bool).
        extensions: file name endings to include, each starting with "." (a str or a sequence of str).
        seed: int >= 0, for crops and flips.
    Raises ``TypeError``/``ValueError`` naming the argument for bad values, and ``ValueError`` naming the folder
    when it does not exist or holds no file with one of ``extensions``, or (when found) when none is readable.
    """

    def __init__(self, root, size: int, pixel_range=(0.0, 1.0), crop: str = "center", flip: bool = False,
                 extensions=IMAGE_EXTENSIONS, seed: int = 0):
        self.root = _check_root(root)
        self.size = _check_int("size", size, 1)
        self.pixel_range = _check_pixel_range(pixel_range)
        if crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
        self.crop = crop
        if not isinstance(flip, bool):
            raise TypeError(f"flip must be a bool, got {type(flip).__name__}")
        self.flip = flip
        self.extensions = _check_extensions(extensions)
        self.seed = _check_int("seed", seed, 0)
        self.epoch = 0
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.lower().endswith(self.extensions):
                    found.append(Path(dirpath, name))
        self.paths: list[Path] = sorted(found, key=lambda p: p.relative_to(self.root).as_posix())
        if not self.paths:
            raise ValueError(f"folder {str(self.root)!r} holds no image file (looked for {', '.join(self.extensions)}, "
                             "recursively)")
        self.skipped: list[tuple[str, str]] = []
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Use the random crops and flips of ``epoch`` (int >= 0) from now on."""
        self.epoch = _check_int("epoch", epoch, 0)

    def _read(self, path: Path):
        """The RGB PIL image of ``path`` resized so that its short side is ``size``; raises on any failure."""
        return _fit_short_side(_open_rgb(path), self.size)

    def _skip(self, index: int, error: BaseException) -> None:
        reason = _reason(error)
        path = str(self.paths[index])
        self._bad.add(index)
        self.skipped.append((path, reason))
        warnings.warn(f"ImageFolder: skipping unreadable image {path} ({reason})", UnreadableImageWarning,
                      stacklevel=3)

    def __getitem__(self, index: int) -> torch.Tensor:
        index = _check_index(index, len(self.paths))
        _import_pil()  # a missing Pillow is an ImportError, never a skipped file
        im = None
        for k in range(len(self.paths)):
            j = (index + k) % len(self.paths)
            if j in self._bad:
                continue
            try:
                im = self._read(self.paths[j])
                break
            except Exception as e:  # noqa: BLE001 - any failure of one file skips that file, never the run
                self._skip(j, e)
        if im is None:
            raise ValueError(f"folder {str(self.root)!r} holds no readable image ({len(self.skipped)} unreadable "
                             f"files, see .skipped)")
        r = _rng(self.seed, self.epoch, index)
        w, h = im.size
        if self.crop == "random":
            left, top = int(r.integers(0, w - self.size + 1)), int(r.integers(0, h - self.size + 1))
        else:
            left, top = (w - self.size) // 2, (h - self.size) // 2
        arr = np.asarray(im, dtype=np.uint8)[top:top + self.size, left:left + self.size]
        if self.flip and r.random() < 0.5:
            arr = arr[:, ::-1]
        return _to_float(torch.from_numpy(np.array(arr, dtype=np.uint8, order="C")).permute(2, 0, 1),
                         self.pixel_range).contiguous()

    def validate(self) -> list[tuple[str, str]]:
        """Read every file now; drop the unreadable ones from ``paths`` (indices shift), recording each in
        ``skipped`` with one :class:`UnreadableImageWarning`. Returns the list of ``(path, reason)`` found by this
        call. Raises ``ValueError`` naming the folder when no file is readable."""
        _import_pil()
        found, keep = [], []
        for j, path in enumerate(self.paths):
            if j in self._bad:
                continue
            try:
                self._read(path)
                keep.append(path)
            except Exception as e:  # noqa: BLE001
                self._skip(j, e)
                found.append(self.skipped[-1])
        self._bad = set()
        self.paths = keep
        if not keep:
            raise ValueError(f"folder {str(self.root)!r} holds no readable image ({len(self.skipped)} unreadable "
                             f"files, see .skipped)")
        return found


# ------------------------------------------------------------------------------------------------ face folders


class FaceFolder(torch.utils.data.Dataset):
    """A map-style Dataset of face images in the one-folder-per-identity layout: ``root/<identity>/<image files>``
    (LFW, CelebA by identity, CASIA-WebFace), each image resized and centre-cropped to ``size x size``.

    Identities are the sub-folders of ``root`` in sorted order of name (hidden ones, starting with ".", ignored);
    within one, images are its files ending with one of ``extensions`` in sorted order of file name. Every file is
    read once at construction (decoded with Pillow, as :class:`ImageFolder` reads it), so a bad file is found
    before any run starts: unreadable, truncated or non-image files, images smaller than ``min_size`` on their short
    side, image files directly in ``root`` (no identity), other non-hidden files inside identity folders, and
    identity folders with no readable image are each recorded in ``skipped`` as ``(path, reason)`` and reported by
    one :class:`UnreadableImageWarning` (listing the first few), never a crash. With ``cache=True`` the resized
    images are kept as uint8 (3 bytes per output pixel), so each file is decoded exactly once.

    ``dataset[i]`` is a float32 (3, size, size) tensor in ``pixel_range`` (resized so that the short side is
    ``size``, bicubic, then the centre ``size x size`` window); :meth:`get_batch` returns many at once.

    Attributes:
        identities: list of identity folder names that kept at least one image, sorted.
        labels: int64 tensor (N,), ``identities[labels[i]]`` is the identity of image i.
        paths: list of N image Paths, grouped by identity in the order of ``identities``.
        skipped: list of ``(path, reason)`` (str, str).
    Args:
        root: the folder (str or PathLike).
        size: output side in pixels, int >= 1.
        pixel_range: (low, high), low < high.
        min_size: int >= 1; images whose short side is smaller are skipped.
        extensions: image file endings, each starting with "." (str or sequence of str).
        identities: optional collection of identity folder names to read (e.g. one side of
            :func:`split_identities`); the others are not read. Names with no folder raise ``ValueError``.
        cache: keep the decoded images in memory (bool).
    Raises ``TypeError``/``ValueError`` naming the argument for bad values, and ``ValueError`` naming the folder
    when it does not exist or no identity folder under it holds a readable image.
    """

    def __init__(self, root, size: int = 64, pixel_range=(0.0, 1.0), min_size: int = 1,
                 extensions=IMAGE_EXTENSIONS, identities=None, cache: bool = True):
        self.root = _check_root(root)
        self.size = _check_int("size", size, 1)
        self.pixel_range = _check_pixel_range(pixel_range)
        self.min_size = _check_int("min_size", min_size, 1)
        self.extensions = _check_extensions(extensions)
        if not isinstance(cache, bool):
            raise TypeError(f"cache must be a bool, got {type(cache).__name__}")
        folders = sorted((p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.name)
        if identities is not None:
            if isinstance(identities, (str, bytes)) or not isinstance(identities, Iterable):
                raise TypeError(f"identities must be a collection of folder names, got {type(identities).__name__}")
            wanted = {str(i) for i in identities}
            missing = sorted(wanted - {p.name for p in folders})
            if missing:
                raise ValueError(f"identities names {len(missing)} folder(s) not under {str(self.root)!r}: "
                                 f"{', '.join(missing[:5])}")
            folders = [p for p in folders if p.name in wanted]
        self.skipped: list[tuple[str, str]] = []
        self.identities: list[str] = []
        self.paths: list[Path] = []
        labels: list[int] = []
        cached: list[torch.Tensor] = []
        if identities is None:
            for p in sorted(self.root.iterdir(), key=lambda p: p.name):
                if p.is_file() and p.name.lower().endswith(self.extensions):
                    self.skipped.append((str(p), "image file directly in root: not inside an identity folder"))
        for folder in folders:
            kept = 0
            for p in sorted(folder.iterdir(), key=lambda p: p.name):
                if p.name.startswith("."):
                    continue
                if not p.is_file() or not p.name.lower().endswith(self.extensions):
                    what = "folder" if p.is_dir() else "file"
                    self.skipped.append((str(p), f"not an image file ({what}; image files end with "
                                                 f"{', '.join(self.extensions)})"))
                    continue
                try:
                    im = _open_rgb(p)
                    if min(im.size) < self.min_size:
                        raise ValueError(f"image {im.size[0]}x{im.size[1]} is smaller than min_size={self.min_size}")
                    if cache:
                        cached.append(_center_crop(_fit_short_side(im, self.size), self.size))
                except Exception as e:  # noqa: BLE001 - any failure of one file skips that file, never the run
                    self.skipped.append((str(p), _reason(e)))
                    continue
                self.paths.append(p)
                labels.append(len(self.identities))
                kept += 1
            if kept:
                self.identities.append(folder.name)
            else:
                self.skipped.append((str(folder), "identity folder with no readable image"))
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self._cache = torch.stack(cached) if cache and cached else None
        self._index = {p: i for i, p in enumerate(self.paths)}
        if self.skipped:
            shown = "; ".join(f"{p} ({r})" for p, r in self.skipped[:5])
            more = f"; and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            warnings.warn(f"FaceFolder: skipped {len(self.skipped)} path(s) under {str(self.root)!r} (see .skipped): "
                          f"{shown}{more}", UnreadableImageWarning, stacklevel=2)
        if not self.paths:
            raise ValueError(f"folder {str(self.root)!r} holds no identity folder with a readable image "
                             f"({len(self.skipped)} skipped paths, see the warning)")

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int) -> torch.Tensor:
        if self._cache is not None:
            return self._cache[index]
        return _center_crop(_fit_short_side(_open_rgb(self.paths[index]), self.size), self.size)

    def __getitem__(self, index: int) -> torch.Tensor:
        return _to_float(self._load(_check_index(index, len(self.paths))), self.pixel_range)

    def get_batch(self, indices: Iterable[int]) -> torch.Tensor:
        """Images ``indices`` (ints, negatives count from the end) as one float32 (len(indices), 3, size, size)
        tensor in ``pixel_range``. Without the cache a file that fails now (changed since construction) raises."""
        if isinstance(indices, (torch.Tensor, np.ndarray)):
            indices = indices.tolist()
        idx = [_check_index(i, len(self.paths)) for i in indices]
        if not idx:
            return torch.empty(0, 3, self.size, self.size)
        if self._cache is not None:
            return _to_float(self._cache[torch.tensor(idx, dtype=torch.int64)], self.pixel_range)
        return _to_float(torch.stack([self._load(i) for i in idx]), self.pixel_range)

    def __getitems__(self, indices) -> list[torch.Tensor]:
        return list(self.get_batch(indices).unbind(0))

    def index_of(self, name: str, number: int, ext: str = "jpg") -> int:
        """The dataset index of image ``number`` of identity ``name`` as a pairs file means it (LFW naming
        ``name/name_{number:04d}.{ext}`` when that file exists, else the number-th image file of the folder sorted by
        name, counting every file ending with ``extensions``, skipped ones included: see
        :func:`vqswitch.metrics.resolve_pair_image`).

        Raises ``FileNotFoundError`` when there is no such file, ``ValueError`` when it was skipped (with the
        reason) or its identity was left out of this dataset.
        """
        path = resolve_pair_image(self.root, name, number, ext, self.extensions)
        i = self._index.get(path)
        if i is None:
            reason = dict(self.skipped).get(str(path))
            if reason is not None:
                raise ValueError(f"{path} was skipped: {reason}")
            raise ValueError(f"{path} is not in this dataset (identity {name!r} was not selected)")
        return i


def _check_extensions(extensions) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = (extensions,)
    if not isinstance(extensions, Iterable):
        raise TypeError(f"extensions must be a str or a sequence of str, got {type(extensions).__name__}")
    extensions = tuple(extensions)
    if not extensions or not all(isinstance(e, str) for e in extensions):
        raise TypeError(f"extensions must be a non-empty sequence of str, got {extensions!r}")
    bad = [e for e in extensions if not e.startswith(".") or len(e) < 2]
    if bad:
        raise ValueError(f"extensions must each start with '.', like '.png', got {bad!r}")
    return tuple(e.lower() for e in extensions)


def split_identities(identities, test_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Split identities into train and test sets, so that no person is in both.

    Args:
        identities: a collection of identity names (str) or labels (int); duplicates count once, input order does not
            matter (they are sorted first), e.g. ``FaceFolder.identities``.
        test_fraction: float in (0, 1); the test set has ``round(test_fraction * n)`` identities, at least 1 and at
            most n - 1.
        seed: int >= 0; the split depends only on ``(set of identities, test_fraction, seed)``.
    Returns:
        ``(train, test)``: two disjoint sorted lists whose union is the set of identities.
    Raises ``TypeError`` for mixed or unsupported identity types, ``ValueError`` for fewer than 2 identities or a
    test_fraction outside (0, 1).
    """
    if isinstance(identities, (str, bytes)) or not isinstance(identities, Iterable):
        raise TypeError(f"identities must be a collection of names or int labels, got {type(identities).__name__}")
    items = list(identities.tolist() if isinstance(identities, (torch.Tensor, np.ndarray)) else identities)
    if all(isinstance(i, str) for i in items):
        unique = sorted(set(items))
    elif all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in items):
        unique = sorted({int(i) for i in items})
    else:
        raise TypeError("identities must be all str (names) or all int (labels)")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
        raise TypeError(f"test_fraction must be a float, got {type(test_fraction).__name__}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    seed = _check_int("seed", seed, 0)
    n = len(unique)
    if n < 2:
        raise ValueError(f"identities must hold at least 2 distinct identities to split, got {n}")
    n_test = min(n - 1, max(1, round(float(test_fraction) * n)))
    order = _rng(seed, 0x5B).permutation(n)
    test = sorted(unique[int(k)] for k in order[:n_test])
    train = sorted(unique[int(k)] for k in order[n_test:])
    return train, test


def _sample_pairs(count: int, total: int, draw, enumerate_all, r: np.random.Generator) -> list[tuple[int, int]]:
    """``count`` distinct unordered pairs (a < b) out of ``total``: by rejection (``draw()`` gives one uniformly
    random valid pair) when they are plentiful, else by enumerating all ``total`` (<= 2 * count) and choosing."""
    if 2 * count <= total:
        seen: set[tuple[int, int]] = set()
        out = []
        while len(out) < count:
            a, b = draw()
            key = (a, b) if a < b else (b, a)
            if key not in seen:
                seen.add(key)
                out.append(key)
        return out
    every = enumerate_all()
    pick = r.choice(len(every), size=count, replace=False)
    return [every[int(k)] for k in pick]


def draw_pairs(labels, num_pairs: int, folds: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a balanced face-verification pair list from identity labels (as LFW's pairs.txt is built).

    Half the pairs show one person (two different images of one identity; identities with one image give none),
    half two people; no unordered pair appears twice. The list is ordered in ``folds`` contiguous blocks of
    ``num_pairs / folds`` pairs, each holding equal numbers of same and different pairs (same first), so each fold
    of :func:`vqswitch.metrics.verification_accuracy` (``folds`` folds) is balanced.

    Args:
        labels: (N,) integer identity labels (tensor, array or list), e.g. ``FaceFolder.labels``.
        num_pairs: int >= 2 * folds, a multiple of ``2 * folds``.
        folds: int >= 1.
        seed: int >= 0; the pairs depend only on ``(labels, num_pairs, folds, seed)``.
    Returns:
        ``(pairs, same)``: int64 (num_pairs, 2) image indices (first < second) and bool (num_pairs,).
    Raises ``TypeError``/``ValueError`` naming the argument for bad values, and ``ValueError`` when the labels do
    not admit ``num_pairs / 2`` distinct same or different pairs (saying how many exist).
    """
    if isinstance(labels, (torch.Tensor, np.ndarray)):
        labels = labels.tolist()
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a 1-D tensor, array or list of int labels, got {type(labels).__name__}")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in labels):
        raise TypeError("labels must hold ints (identity labels)")
    folds = _check_int("folds", folds, 1)
    num_pairs = _check_int("num_pairs", num_pairs, 2 * folds)
    if num_pairs % (2 * folds):
        raise ValueError(f"num_pairs must be a multiple of 2 * folds = {2 * folds} so that every fold holds as many "
                         f"same as different pairs, got {num_pairs}")
    seed = _check_int("seed", seed, 0)
    lab = np.asarray(labels, dtype=np.int64)
    n = lab.shape[0]
    order = np.argsort(lab, kind="stable")  # images grouped by identity
    ids, starts, counts = np.unique(lab[order], return_index=True, return_counts=True)
    half = num_pairs // 2
    same_total = int((counts * (counts - 1) // 2).sum())
    diff_total = n * (n - 1) // 2 - same_total
    if same_total < half:
        raise ValueError(f"labels admit only {same_total} distinct same-identity pairs (identities with 2+ images: "
                         f"{int((counts >= 2).sum())}), fewer than num_pairs / 2 = {half}")
    if diff_total < half:
        raise ValueError(f"labels admit only {diff_total} distinct different-identity pairs ({len(ids)} identities), "
                         f"fewer than num_pairs / 2 = {half}")
    r = _rng(seed, 0x9A)
    cum_same = np.cumsum(counts * (counts - 1) // 2)  # identity g is drawn with weight C(counts[g], 2)
    group_of = np.empty(n, dtype=np.int64)
    group_of[order] = np.repeat(np.arange(len(ids)), counts)

    def draw_same():
        g = int(np.searchsorted(cum_same, int(r.integers(same_total)), side="right"))
        a, b = r.choice(int(counts[g]), size=2, replace=False)
        return int(order[starts[g] + a]), int(order[starts[g] + b])

    def all_same():
        return [(min(int(order[s + a]), int(order[s + b])), max(int(order[s + a]), int(order[s + b])))
                for s, c in zip(starts, counts) for a in range(c) for b in range(a + 1, c)]

    def draw_diff():
        a = int(r.integers(n))
        g = group_of[a]
        k = int(r.integers(n - counts[g]))  # one of the images outside a's identity, in grouped order
        k = k if k < starts[g] else k + int(counts[g])
        return a, int(order[k])

    def all_diff():  # only pairs across identities (grouped order: each image with every later group's images)
        out = []
        for s, c in zip(starts, counts):
            for a in order[s:s + c].tolist():
                out += [(a, b) if a < b else (b, a) for b in order[s + c:].tolist()]
        return out

    same_pairs = _sample_pairs(half, same_total, draw_same, all_same, r)
    diff_pairs = _sample_pairs(half, diff_total, draw_diff, all_diff, r)
    k = half // folds
    rows = []
    for f in range(folds):
        rows += same_pairs[f * k:(f + 1) * k] + diff_pairs[f * k:(f + 1) * k]
    pairs = torch.tensor(rows, dtype=torch.int64).view(-1, 2)
    same = torch.tensor(([True] * k + [False] * k) * folds, dtype=torch.bool)
    return pairs, same


class FaceData(NamedTuple):
    """Everything a face benchmark needs from one folder (:func:`load_face_folder`).

    images: float32 (N, 3, size, size) in pixel_range; labels: int64 (N,) indices into ``identities``;
    pairs: int64 (P, 2) image indices; same: bool (P,); folds: the number of contiguous verification folds of
    ``pairs``; identities: list of names; paths: list of N Paths; skipped: list of (path, reason);
    pairs_source: the pairs file's path (str) or "drawn".
    """

    images: torch.Tensor
    labels: torch.Tensor
    pairs: torch.Tensor
    same: torch.Tensor
    folds: int
    identities: list
    paths: list
    skipped: list
    pairs_source: str


def load_face_folder(root, size: int = 64, pixel_range=(0.0, 1.0), *, pairs="auto", num_pairs: int = 3000,
                     folds: int = 10, seed: int = 0, identities=None, min_size: int = 1, ext: str = "jpg",
                     extensions=IMAGE_EXTENSIONS) -> FaceData:
    """Read a one-folder-per-identity face folder with its verification pairs, in one call.

    Args:
        root, size, pixel_range, min_size, extensions, identities: as :class:`FaceFolder`.
        pairs: ``"auto"`` (``root/pairs.txt`` when it exists, else drawn), ``"draw"`` (always drawn by
            :func:`draw_pairs` from the identity labels), or the path of an LFW-style pairs file
            (:func:`vqswitch.metrics.parse_pairs`; ``name n`` resolved by :meth:`FaceFolder.index_of`).
        num_pairs, folds, seed: for drawn pairs (see :func:`draw_pairs`). With a pairs file, ``folds`` is the
            file's number of sets when it has 2 or more, else this argument.
        ext: the LFW file extension for pairs files (``name/name_0001.jpg``).
    Returns:
        :class:`FaceData`.
    Raises:
        as :class:`FaceFolder` and :func:`draw_pairs`; for a pairs file, as :func:`vqswitch.metrics.parse_pairs`,
        and ``ValueError`` / ``FileNotFoundError`` naming the file and line for an image that does not exist, was
        skipped, or belongs to an identity not selected.
    """
    data = FaceFolder(root, size, pixel_range, min_size=min_size, extensions=extensions, identities=identities)
    if isinstance(pairs, str) and pairs in ("auto", "draw"):
        file = data.root / "pairs.txt" if pairs == "auto" and (data.root / "pairs.txt").is_file() else None
    elif isinstance(pairs, (str, os.PathLike)):
        file = Path(pairs)
    else:
        raise TypeError(f"pairs must be 'auto', 'draw' or a pairs file path, got {type(pairs).__name__}")
    if file is None:
        pair_idx, same = draw_pairs(data.labels, num_pairs, folds=folds, seed=seed)
        source = "drawn"
    else:
        entries, sets = parse_pairs(file)
        rows = []
        for e in entries:
            try:
                rows.append((data.index_of(e.name1, e.index1, ext), data.index_of(e.name2, e.index2, ext)))
            except (FileNotFoundError, ValueError) as err:
                raise type(err)(f"{file}: line {e.line}: {err}") from None
        pair_idx = torch.tensor(rows, dtype=torch.int64).view(-1, 2)
        same = torch.tensor([e.same for e in entries], dtype=torch.bool)
        folds = sets if sets >= 2 else _check_int("folds", folds, 2)
        source = str(file)
    images = data.get_batch(range(len(data)))
    return FaceData(images, data.labels, pair_idx, same, folds, list(data.identities), list(data.paths),
                    list(data.skipped), source)


# ------------------------------------------------------------------------------------------------ batching


def _check_image_tensor(x, where: str) -> torch.Tensor:
    """One (3, H, W) image or a (B, 3, H, W) batch as (B, 3, H, W); clear errors otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where} must be a torch.Tensor image (3, H, W) or batch (B, 3, H, W), "
                        f"got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{where} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{where} must have shape (3, H, W) or (B, 3, H, W), got {tuple(x.shape)}")
    return x


def iterate_batches(data, batch_size: int, shuffle: bool = False, seed: int = 0,
                    drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Yield (B, 3, H, W) batches of images from ``data``.

    ``data`` is one of:
      * a (N, 3, H, W) float tensor;
      * a map-style ``torch.utils.data.Dataset`` (with ``__len__``) whose items are (3, H, W) float images
        (``ProceduralFaces`` and ``ImageFolder``; a ``get_batch``/``__getitems__`` method is used when present);
      * a list or tuple of float tensors, each one image (3, H, W) or a batch (B, 3, H, W);
      * any other iterable of such tensors (a generator, an ``IterableDataset``, a ``DataLoader``): streamed, the
        rows of its tensors regrouped into batches of ``batch_size``.

    Args:
        batch_size: int >= 1; every batch has ``batch_size`` images except possibly the last.
        shuffle: visit the images in a random order (a permutation drawn from ``seed``); needs a tensor, a
            Dataset or a list/tuple -- a streamed iterable cannot be shuffled.
        seed: int >= 0 for the permutation (pass e.g. ``base_seed + epoch`` for a new order per epoch).
        drop_last: drop a last batch smaller than ``batch_size``.
    Batches keep the images' device and dtype (promoted when they differ); all images of a batch must have the same
    H and W. Raises ``TypeError``/``ValueError`` naming the argument or the offending item (its position) for bad
    input, at the item where it is found.
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle must be a bool, got {type(shuffle).__name__}")
    if not isinstance(drop_last, bool):
        raise TypeError(f"drop_last must be a bool, got {type(drop_last).__name__}")
    seed = _check_int("seed", seed, 0)
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise ValueError(f"data as a tensor must have shape (N, 3, H, W), got {tuple(data.shape)}")
        _check_image_tensor(data, "data")
    if isinstance(data, (str, bytes)) or not (isinstance(data, (torch.Tensor, torch.utils.data.Dataset, Iterable))):
        raise TypeError(f"data must be a tensor, a Dataset or an iterable of image tensors, got {type(data).__name__}")
    map_style = isinstance(data, (torch.Tensor, list, tuple)) or (
        isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__")
        and not isinstance(data, torch.utils.data.IterableDataset))
    if map_style:
        return _iterate(data, batch_size, shuffle, seed, drop_last)
    if shuffle:
        raise ValueError("shuffle=True needs a tensor, a Dataset or a list/tuple; an iterable such as "
                         f"{type(data).__name__} is streamed in its own order (pass list(data) to shuffle it)")
    return _stream(data, batch_size, drop_last)


def _stack(parts: list[torch.Tensor], where: str) -> torch.Tensor:
    hw = parts[0].shape[-2:]
    for p in parts:
        if p.shape[-2:] != hw:
            raise ValueError(f"images of one batch must share H and W: {where} has {tuple(p.shape[-2:])}, "
                             f"an earlier image {tuple(hw)}")
    return torch.cat(parts, 0)


def _iterate(data, batch_size, shuffle, seed, drop_last) -> Iterator[torch.Tensor]:
    """Batches of a map-style source: a tensor, a list/tuple of image tensors or a Dataset with __len__."""
    if isinstance(data, torch.Tensor):
        n = data.shape[0]

        def fetch(idx):
            return data[torch.as_tensor(idx, dtype=torch.int64, device=data.device)]
    elif isinstance(data, (list, tuple)):
        items = [_check_image_tensor(x, f"data[{k}]") for k, x in enumerate(data)]
        rows = [(k, r) for k, x in enumerate(items) for r in range(x.shape[0])]
        n = len(rows)

        def fetch(idx):
            return _stack([items[rows[i][0]][rows[i][1]:rows[i][1] + 1] for i in idx], f"data item {rows[idx[-1]][0]}")
    else:
        n = len(data)
        batch_fn = getattr(data, "get_batch", None)

        def fetch(idx):
            if callable(batch_fn):
                out = batch_fn(idx)
                out = _check_image_tensor(out, f"data.get_batch({len(idx)} indices)")
                if out.shape[0] != len(idx):
                    raise ValueError(f"data.get_batch returned {out.shape[0]} images for {len(idx)} indices")
                return out
            parts = []
            for i in idx:
                x = data[i]
                if not isinstance(x, torch.Tensor) or x.dim() != 3:
                    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                    raise ValueError(f"data[{i}] must be one image tensor (3, H, W), got {shape}")
                parts.append(_check_image_tensor(x, f"data[{i}]"))
            return _stack(parts, f"data[{idx[-1]}]")

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist() if shuffle else list(range(n))
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield fetch(order[start:start + batch_size])


def _stream(data, batch_size, drop_last) -> Iterator[torch.Tensor]:
    pending: list[torch.Tensor] = []
    count = 0
    for k, x in enumerate(data):
        x = _check_image_tensor(x, f"item {k} of data")
        pending.append(x)
        count += x.shape[0]
        if count >= batch_size:
            batch = _stack(pending, f"item {k} of data")
            whole = count - count % batch_size
            yield from batch[:whole].split(batch_size)
            rest = batch[whole:]
            pending, count = ([rest] if rest.shape[0] else []), rest.shape[0]
    if count and not drop_last:
        yield _stack(pending, "the last item of data")


# ------------------------------------------------------------------------------------------------ image grids

_GRID_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP"}


def _grid_path(path) -> tuple[Path, str]:
    """(Path, Pillow format name) of an image-grid file name; TypeError/ValueError naming ``path``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or PathLike, got {type(path).__name__}")
    path = Path(path)
    fmt = _GRID_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"path must end with one of {', '.join(_GRID_FORMATS)}, got {str(path)!r}")
    return path, fmt


def _grid_pixels(name: str, images, pixel_range) -> torch.Tensor:
    """Float images (N, 1|3, H, W) or (1|3, H, W) in ``pixel_range`` -> uint8 (N, 3, H, W) on the CPU (clamped,
    NaN -> 0); TypeError/ValueError naming ``name`` (or pixel_range)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, 3, H, W) or (N, 1, H, W) with N >= 1, got {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {images.dtype}")
    lo, hi = _check_pixel_range(pixel_range)
    x = images.detach().to("cpu", torch.float32)
    x = ((x - lo) * (255.0 / (hi - lo))).nan_to_num_(0.0).clamp_(0, 255).round_().to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def save_image_grid(images: torch.Tensor, path, nrow: int = 8, pixel_range=(0.0, 1.0), padding: int = 2) -> Path:
    """Write ``images`` as one picture: a grid of ``nrow`` images per row, ``padding`` black pixels between and
    around them.

    Args:
        images: float tensor (N, C, H, W) or one image (C, H, W), C = 3 (RGB) or 1 (grey), any device; values are
            mapped from ``pixel_range`` to [0, 255] and clamped (NaN -> 0).
        path: file to write (str or PathLike); the format follows its suffix, .png (lossless, preferred), .jpg,
            .jpeg, .bmp or .webp. Written atomically (:func:`vqswitch._io.atomic_path`); folders are created.
        nrow: images per row, int >= 1 (fewer when N < nrow).
        pixel_range: (low, high), low < high.
        padding: int >= 0.
    Returns the path written. The picture is ``cols * W + (cols + 1) * padding`` wide and
    ``rows * H + (rows + 1) * padding`` high, with ``cols = min(nrow, N)`` and ``rows = ceil(N / nrow)``.
    Raises ``TypeError``/``ValueError`` naming the argument for bad input (including N = 0).
    """
    path, fmt = _grid_path(path)
    x = _grid_pixels("images", images, pixel_range)
    nrow = _check_int("nrow", nrow, 1)
    padding = _check_int("padding", padding, 0)
    Image, _ = _import_pil()
    n, _, h, w = x.shape
    cols, rows = min(nrow, n), -(-n // nrow)
    grid = torch.zeros(3, rows * h + (rows + 1) * padding, cols * w + (cols + 1) * padding, dtype=torch.uint8)
    for k in range(n):
        r, c = divmod(k, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[:, top:top + h, left:left + w] = x[k]
    picture = Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy())
    with atomic_path(path) as tmp:
        picture.save(tmp, format=fmt)
    return path


def save_labelled_grid(rows, path, scale: int = 4, pixel_range=(0.0, 1.0), padding: int = 2) -> Path:
    """Write rows of images, each under a text label, enlarged ``scale`` times by nearest-neighbour (every pixel
    becomes a ``scale`` x ``scale`` block), so small images can be looked at.

    Args:
        rows: a non-empty sequence of ``(label, images)``: label a str (one line, drawn in white with Pillow's
            default font on a black band above the row), images a float tensor (N, C, H, W), C = 3 or 1, values in
            ``pixel_range``; every row has the same H and W (N may differ).
        path: as :func:`save_image_grid` (written atomically; the format follows the suffix).
        scale: int >= 1; pixel_range: (low, high), low < high; padding: int >= 0 black pixels around each image.
    Returns the path written. With ``cols`` the largest N and ``band`` :func:`label_band_height` pixels, the
    picture is ``cols * W * scale + (cols + 1) * padding`` wide and ``len(rows) * (band + H * scale + padding) +
    padding`` high; row ``r``'s band starts at ``padding + r * (band + H * scale + padding)`` and its images
    ``band`` pixels lower. A label wider than the picture is cut off at its right edge.
    Raises ``TypeError``/``ValueError`` naming the argument for bad input.
    """
    path, fmt = _grid_path(path)
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
        raise ValueError("rows must be a non-empty sequence of (label, images) pairs")
    scale = _check_int("scale", scale, 1)
    padding = _check_int("padding", padding, 0)
    pictures, labels, size = [], [], None
    for r, row in enumerate(rows):
        if not isinstance(row, (tuple, list)) or len(row) != 2 or not isinstance(row[0], str):
            raise TypeError(f"rows[{r}] must be a (label: str, images: tensor) pair")
        if "\n" in row[0]:
            raise ValueError(f"rows[{r}]'s label must be one line")
        x = _grid_pixels(f"rows[{r}] images", row[1], pixel_range)
        if size is not None and tuple(x.shape[2:]) != size:
            raise ValueError(f"rows[{r}] images are {tuple(x.shape[2:])} pixels, rows[0] images {size}")
        size = tuple(x.shape[2:])
        labels.append(row[0])
        pictures.append(x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3))
    Image, _ = _import_pil()
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    band = label_band_height()
    h, w = pictures[0].shape[2:]
    cols = max(x.shape[0] for x in pictures)
    grid = torch.zeros(3, len(rows) * (band + h + padding) + padding, cols * w + (cols + 1) * padding,
                       dtype=torch.uint8)
    for r, x in enumerate(pictures):
        top = padding + r * (band + h + padding) + band
        for c in range(x.shape[0]):
            left = padding + c * (w + padding)
            grid[:, top:top + h, left:left + w] = x[c]
    picture = Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy())
    draw = ImageDraw.Draw(picture)
    for r, label in enumerate(labels):
        draw.text((padding + 1, padding + r * (band + h + padding) + 1), label, fill=(255, 255, 255), font=font)
    with atomic_path(path) as tmp:
        picture.save(tmp, format=fmt)
    return path


def label_band_height() -> int:
    """Height in pixels of the text band :func:`save_labelled_grid` draws above each row (Pillow's default font)."""
    from PIL import ImageFont

    _, top, _, bottom = ImageFont.load_default().getbbox("Ag|")
    return bottom + max(top, 0) + 3
