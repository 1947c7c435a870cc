"""A user's own VQ model, described to vqswitch: the pretrained CIFAR VQ-VAE of tests/fixtures/vqvae-cifar.

This file is *user code*, not part of the vqswitch library: it shows what a user with a VQ model of their own writes.

* The architecture as plain ``nn.Module`` s, with the parameter names of the published state dict (a classic
  VQ-VAE: convolutional encoder, 1x1 pre-quantization conv, one global 512 x 128 codebook, convolutional
  decoder; fully convolutional with downsampling 4, so a 64 x 64 image gives a 16 x 16 grid of 256 tokens).
  The residual blocks keep the original code's quirk: they start with an *in-place* ReLU, so the skip
  connection carries relu(x), not x (without it the model loses 9 dB on faces).
* :func:`build` / :func:`load_vqvae`: load the weights (``torch.load(..., weights_only=True)``).
* :func:`describe`: the few lines that tell vqswitch where the quantizer and codebook are, how images become
  latents and latents images, the pixel range (x/255 - 0.5, i.e. [-0.5, 0.5]) and the latent layout.

Use it by path (``vqswitch demo --model examples/vqvae_cifar.py:build``) or by import::

    model = build("tests/fixtures/vqvae-cifar/vqvae.pt")          # already described to vqswitch
    model = swap_quantizer(model, num_groups=4, codebook_size=64)
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "vqvae-cifar" / "vqvae.pt"
PIXEL_RANGE = (-0.5, 0.5)  # images are x/255 - 0.5
IMAGE_SIZE = 64  # what the faces use; any multiple of 4 works (the model was trained on 32 x 32 CIFAR)


class ResidualBlock(nn.Module):
    """relu(x) + conv_2(relu(conv_1(relu(x)))): the in-place ReLU of the original makes the skip carry relu(x)."""

    def __init__(self, channels: int = 128, hidden: int = 64):
        super().__init__()
        self._block = nn.ModuleDict({"conv_1": nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
                                     "conv_2": nn.Conv2d(hidden, channels, 1, bias=False)})

    def forward(self, x):
        x = F.relu(x)
        return x + self._block["conv_2"](F.relu(self._block["conv_1"](x)))


class ResidualStack(nn.Module):
    def __init__(self, channels: int = 128, hidden: int = 64, count: int = 2):
        super().__init__()
        self.residual_blocks = nn.ModuleDict({f"residual_{i}": ResidualBlock(channels, hidden) for i in range(count)})

    def forward(self, x):
        for block in self.residual_blocks.values():
            x = block(x)
        return F.relu(x)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self._blocks = nn.ModuleDict({"conv_1": nn.Conv2d(3, 64, 4, stride=2, padding=1),
                                      "conv_2": nn.Conv2d(64, 128, 4, stride=2, padding=1),
                                      "conv_3": nn.Conv2d(128, 128, 3, padding=1),
                                      "residual": ResidualStack()})

    def forward(self, x):
        b = self._blocks
        x = F.relu(b["conv_1"](x))
        x = F.relu(b["conv_2"](x))
        return b["residual"](b["conv_3"](x))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self._blocks = nn.ModuleDict({"conv_1": nn.Conv2d(128, 128, 3, padding=1),
                                      "residual": ResidualStack(),
                                      "conv_t_1": nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),
                                      "conv_t_2": nn.ConvTranspose2d(64, 3, 4, stride=2, padding=1)})

    def forward(self, z):
        b = self._blocks
        x = b["residual"](b["conv_1"](z))
        return b["conv_t_2"](F.relu(b["conv_t_1"](x)))


class VectorQuantizer(nn.Module):
    """Snaps each position of z (B, D, H, W) to its nearest code (l2) in one K x D codebook.

    Returns (z_q (B, D, H, W) with straight-through gradients, loss, indices (B, H, W)).
    """

    def __init__(self, num_codes: int = 512, dim: int = 128, beta: float = 0.25):
        super().__init__()
        self.codebook = nn.Embedding(num_codes, dim)
        self.beta = beta

    def forward(self, z):
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        e = self.codebook.weight
        distances = (flat ** 2).sum(1, keepdim=True) - 2 * flat @ e.t() + (e ** 2).sum(1)
        indices = distances.argmin(1)
        q = self.codebook(indices).view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
        loss = F.mse_loss(q, z.detach()) + self.beta * F.mse_loss(z, q.detach())
        return z + (q - z).detach(), loss, indices.view(z.shape[0], z.shape[2], z.shape[3])


class VQVAE(nn.Module):
    """forward(images (B, 3, H, W) in [-0.5, 0.5]) -> (reconstruction, VQ loss)."""

    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.pre_vq_conv = nn.Conv2d(128, 128, 1)
        self.vq_vae = VectorQuantizer()
        self.decoder = Decoder()

    def encode(self, images):
        return self.pre_vq_conv(self.encoder(images))

    def forward(self, images):
        z_q, loss, _ = self.vq_vae(self.encode(images))
        return self.decoder(z_q), loss


def describe():
    """Tell vqswitch about VQVAE (idempotent); returns the registered adapter."""
    from vqswitch.adapters import describe_model

    return describe_model(
        VQVAE, name="vqvae-cifar",
        quantizer="vq_vae",                                 # where the quantizer sits; its nn.Embedding is found
        encode=lambda model, images: model.encode(images),  # images -> latents (B, 128, H/4, W/4)
        decode=lambda model, z_q: model.decoder(z_q),       # quantized latents -> images
        pixel_range=PIXEL_RANGE, layout="(B, D, H, W)", image_size=IMAGE_SIZE,
        output=lambda z_q, loss, indices: (z_q, loss, indices),  # what VQVAE.forward unpacks from vq_vae(z)
    )


def load_vqvae(path: str | Path = DEFAULT_WEIGHTS) -> VQVAE:
    """The pretrained VQ-VAE from a state-dict file, in eval mode, on the CPU."""
    model = VQVAE()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def build(path: str | Path = DEFAULT_WEIGHTS) -> VQVAE:
    """The pretrained VQ-VAE, already described to vqswitch: ``swap_quantizer(build(path), ...)`` just works."""
    describe()
    return load_vqvae(path)


def to_pixels(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, 3, H, W) -> float in the model's range, x/255 - 0.5."""
    return images_uint8.float() / 255.0 - 0.5
