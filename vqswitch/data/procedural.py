"""Procedural faces: cartoon faces drawn from random identity attributes, no download needed.

:func:`procedural_faces`, :class:`ProceduralFaces` and :func:`face_attributes` draw faces from random identity
attributes (face shape, skin tone, hair colour and style, eyes, eyebrows, nose, mouth, ears, glasses, beard,
clothes, background), rendered over the whole batch at once with analytically anti-aliased edges (each shape is a
signed distance; a pixel's coverage is its distance ramped over one pixel). Faces are aligned like aligned face
datasets (eyes at nearly fixed positions, small per-image shift, roll and scale), so a token position means the same
part of the face in every image -- the structure token-specific codebooks use -- and images of one identity look
alike -- the structure codebook groups use. Image ``i`` of seed ``s`` is identity ``i % num_identities``; its
identity attributes depend only on ``(s, identity)`` and its per-image jitter (pose, lighting, gaze, eye opening,
smile, background shade) only on ``(s, i)``, never on how many images are drawn or in which order.

Images are float32 tensors (3, H, W) or (B, 3, H, W) with pixel values in a ``pixel_range`` chosen by the caller:
``(0.0, 1.0)`` for MaskGIT-VQGAN / TiTok, ``(-1.0, 1.0)`` for diffusers' ``VQModel``.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from .._checks import check_int, check_range_pair
from ._common import check_index, rng

__all__ = ["procedural_faces", "ProceduralFaces", "face_attributes", "DEFAULT_NUM_IDENTITIES", "HAIR_STYLES"]

DEFAULT_NUM_IDENTITIES = 128
HAIR_STYLES = ("none", "short", "long", "fringe")


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
    r = rng(seed, _ID_STREAM, identity)
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
    seed = check_int("seed", seed, 0)
    i = check_int("i", i, 0)
    num_identities = check_int("num_identities", num_identities, 1)
    identity = i % num_identities
    out = {"index": i, "seed": seed, "identity": identity}
    out.update(_identity_attributes(seed, identity))
    r = rng(seed, _IMAGE_STREAM, i)
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
    n = check_int("n", n, 0)
    size = check_int("size", size, 1)
    seed = check_int("seed", seed, 0)
    start = check_int("start", start, 0)
    num_identities = check_int("num_identities", num_identities, 1)
    return _faces(range(start, start + n), size, seed, check_range_pair("pixel_range", pixel_range), num_identities)


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
        self.n = check_int("n", n, 0)
        self.size = check_int("size", size, 1)
        self.seed = check_int("seed", seed, 0)
        self.pixel_range = check_range_pair("pixel_range", pixel_range)
        self.num_identities = check_int("num_identities", num_identities, 1)
        self.identities = torch.arange(self.n, dtype=torch.int64) % self.num_identities

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.get_batch([index])[0]

    def get_batch(self, indices: Iterable[int]) -> torch.Tensor:
        """Images ``indices`` (ints, negatives count from the end) as one float32 (len(indices), 3, size, size)."""
        if isinstance(indices, (torch.Tensor, np.ndarray)):
            indices = indices.tolist()
        idx = [check_index(i, self.n) for i in indices]
        return _faces(idx, self.size, self.seed, self.pixel_range, self.num_identities)

    def __getitems__(self, indices) -> list[torch.Tensor]:
        return list(self.get_batch(indices).unbind(0))

    def attributes(self, index: int) -> dict:
        """:func:`face_attributes` of image ``index``."""
        return face_attributes(self.seed, check_index(index, self.n), self.num_identities)

    def verification_pairs(self, num_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A face-verification pair list over this dataset: ``num_pairs`` pairs, the first ``num_pairs // 2``
        (rounded up) of one identity, the rest of two identities, each pair of two different images.

        Returns ``(pairs, same)``: int64 (num_pairs, 2) image indices and bool (num_pairs,), deterministic in
        ``seed``. Raises ``ValueError`` when no identity has two images (no same pair exists) or only one
        identity is present (no different pair exists) and such pairs are asked for.
        """
        num_pairs = check_int("num_pairs", num_pairs, 0)
        seed = check_int("seed", seed, 0)
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
        r = rng(seed, 0x5A)
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

