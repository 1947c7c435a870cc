"""Reconstruction quality per image: :func:`psnr` and :func:`ssim` (Wang et al. 2004).

Images are ``(B, C, H, W)`` floating-point tensors (any float dtype; the math runs in float64) with values in
``[lo, lo + data_range]``, e.g. ``[0, 1]`` with ``data_range=1`` or ``[-1, 1]`` with ``data_range=2``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_image_pair, check_int, check_real
from ._common import CHUNK, REDUCTIONS, apply_reduction

__all__ = ["psnr", "ssim"]


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image: ``10 * log10(data_range**2 / MSE)``.

    Args:
        x, y: (B, C, H, W) float tensors of the same shape and device (any float dtype), values in
            ``[lo, lo + data_range]``. Symmetric in x and y.
        data_range: the span of the pixel values (1 for [0, 1], 2 for [-1, 1], 255 for [0, 255]).
        reduction: ``"none"`` -> (B,) per-image PSNR; ``"mean"`` -> 0-dim mean of the per-image
            PSNRs (not the PSNR of the pooled MSE, which weights bad images less).
    Returns:
        float64 tensor on the inputs' device. MSE is taken over C, H, W in float64. Identical
        images give ``+inf`` (MSE 0), and then a ``"mean"`` over the batch is ``+inf`` too.
    Raises:
        TypeError for non-tensors, non-float dtypes or a non-number data_range; ValueError for a
        shape other than (B, C, H, W), mismatched shapes or devices, NaN/Inf pixels, data_range <= 0
        or an unknown reduction.
    """
    check_image_pair("x", x, "y", y)
    L = check_real("data_range", data_range, 0.0, min_open=True)
    check_choice("reduction", reduction, REDUCTIONS)
    return apply_reduction(psnr_unchecked(x, y, L), reduction)


def psnr_unchecked(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """:func:`psnr` with ``reduction="none"`` of arguments the caller has checked as :func:`psnr` checks them."""
    mse = torch.cat([(x[i:i + CHUNK].double() - y[i:i + CHUNK].double()).square().mean(dim=(1, 2, 3))
                     for i in range(0, x.shape[0], CHUNK)])
    return 10.0 * torch.log10(data_range * data_range / mse)


def _gaussian_window(window_size: int, sigma: float, device) -> torch.Tensor:
    """(window_size,) float64 Gaussian taps centred on the middle tap, summing to 1."""
    r = torch.arange(window_size, dtype=torch.float64, device=device) - (window_size - 1) / 2
    g = torch.exp(-r.square() / (2 * sigma * sigma))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, reduction: str = "mean") -> torch.Tensor:
    """Structural similarity (Wang, Bovik, Sheikh and Simoncelli 2004), per image.

    With a normalised ``window_size x window_size`` Gaussian window ``w`` (std ``sigma``; 11 and 1.5
    as in the paper), at every position where the window fits inside the image ('valid' region,
    no padding), per channel::

        mu_x = sum w x,  sigma_x^2 = sum w x^2 - mu_x^2,  sigma_xy = sum w x y - mu_x mu_y
        SSIM = (2 mu_x mu_y + C1) (2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2))

    with ``C1 = (k1 * data_range)**2`` and ``C2 = (k2 * data_range)**2``; the SSIM map is averaged
    over channels and positions. Variances are the window-weighted (biased) ones, as in Wang et
    al.'s reference code; unlike that code, images are not downsampled first.

    Args:
        x, y: (B, C, H, W) float tensors of the same shape and device, any float dtype (computed in
            float64), any number of channels (grayscale C=1, RGB C=3, ...), H and W >= window_size.
        data_range: the span of the pixel values (1 for [0, 1], 2 for [-1, 1]).
        window_size: odd int >= 1; sigma, k1, k2: numbers > 0.
        reduction: ``"none"`` -> (B,); ``"mean"`` -> 0-dim mean of the per-image values.
    Returns:
        float64 tensor on the inputs' device, each value in [-1, 1]; exactly 1 for identical
        images. Symmetric in x and y.
    Raises:
        TypeError / ValueError as :func:`psnr`, plus ValueError for images smaller than the window
        or an even/non-positive window_size.
    """
    check_image_pair("x", x, "y", y)
    L = check_real("data_range", data_range, 0.0, min_open=True)
    ws = check_int("window_size", window_size, 1)
    if ws % 2 == 0:
        raise ValueError(f"window_size must be odd, got {ws}")
    sigma = check_real("sigma", sigma, 0.0, min_open=True)
    k1 = check_real("k1", k1, 0.0, min_open=True)
    k2 = check_real("k2", k2, 0.0, min_open=True)
    check_choice("reduction", reduction, REDUCTIONS)
    check_ssim_window(x, ws)
    return apply_reduction(ssim_unchecked(x, y, L, ws, sigma, k1, k2), reduction)


def check_ssim_window(x: torch.Tensor, window_size: int) -> None:
    """ValueError unless the (B, C, H, W) images ``x`` are at least ``window_size`` pixels high and wide."""
    H, W = x.shape[-2:]
    if H < window_size or W < window_size:
        raise ValueError(f"images of {H}x{W} pixels are smaller than the {window_size}x{window_size} SSIM window; "
                         "use larger images or a smaller window_size")


def ssim_unchecked(x: torch.Tensor, y: torch.Tensor, data_range: float, ws: int = 11, sigma: float = 1.5,
                   k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """:func:`ssim` with ``reduction="none"`` of arguments the caller has checked as :func:`ssim` checks them."""
    L = data_range
    B, C, H, W = x.shape
    g = _gaussian_window(ws, sigma, x.device)
    gh, gv = g.view(1, 1, 1, ws), g.view(1, 1, ws, 1)
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    out = []
    for i in range(0, B, CHUNK):
        a, b = x[i:i + CHUNK].double(), y[i:i + CHUNK].double()
        n = a.shape[0]
        maps = torch.stack([a, b, a * a, b * b, a * b], dim=1).reshape(-1, 1, H, W)  # (n*5*C, 1, H, W)
        m = F.conv2d(F.conv2d(maps, gh), gv).view(n, 5, C, H - ws + 1, W - ws + 1)
        mu_x, mu_y, e_xx, e_yy, e_xy = m.unbind(1)
        mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
        num = (2 * mu_xy + c1) * (2 * (e_xy - mu_xy) + c2)
        den = (mu_xx + mu_yy + c1) * ((e_xx - mu_xx) + (e_yy - mu_yy) + c2)
        out.append((num / den).mean(dim=(1, 2, 3)))
    return torch.cat(out)
