"""Stages 1-2 with and without the latent cache: wall time of the same run, and the speed-up.

    python benchmarks/bench_finetune_cache.py [--images 256] [--steps 40] [--batch-size 32] [--size 64]

The tokenizer is a random-weight MaskGIT-VQGAN (vqswitch's own) at ``--size`` pixels with the published model's
channel layout shrunk in width; data are procedural faces. Both runs do the same optimizer steps on the same batches;
the cached run pays one encoder pass over the data set up front (included in its time). Prints a table and writes
JSON to benchmarks/results/finetune_cache.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def run(cache: bool, args) -> tuple[float, dict]:
    from vqswitch.adapters import swap_quantizer
    from vqswitch.adapters.models.maskgit_vqgan import MaskGitVQGAN
    from vqswitch.data import procedural_faces
    from vqswitch.train import FinetuneConfig, Finetuner, StageConfig

    torch.manual_seed(0)
    base = MaskGitVQGAN(resolution=args.size, hidden_channels=32, channel_mult=(1, 1, 2, 2), num_res_blocks=2,
                        z_channels=64, quantized_embed_dim=64, num_embeddings=256).eval()
    model = swap_quantizer(base, num_groups=4, codebook_size=64, router_hidden_dim=32)
    data = procedural_faces(args.images, size=args.size, seed=0)
    stage = StageConfig(steps=args.steps, lr=1e-3, batch_size=args.batch_size)
    config = FinetuneConfig(stages=(1, 2), stage1=stage, stage2=stage, cache_latents=cache, progress=False,
                            log_every=0)
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        out = Finetuner(model, data, d, config).run()
        seconds = time.perf_counter() - start
    return seconds, {k: v.clone() for k, v in out.quantize.quantizer.state_dict().items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "finetune_cache.json"))
    args = p.parse_args(argv)
    t_enc, s_enc = run(False, args)
    t_cache, s_cache = run(True, args)
    same = all(torch.allclose(s_enc[k].float(), s_cache[k].float(), atol=1e-5) for k in s_enc)
    rows = [("encoder every step", t_enc), ("latent cache", t_cache)]
    print(f"stages 1+2, {args.steps} steps each, batch {args.batch_size}, {args.images} images of {args.size}px, "
          f"{torch.get_num_threads()} threads")
    print(f"{'method':<20} {'seconds':>9} {'speed-up':>9}")
    for name, t in rows:
        print(f"{name:<20} {t:>9.2f} {t_enc / t:>8.2f}x")
    print(f"same quantizer weights (atol 1e-5): {same}")
    result = {"args": vars(args), "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "seconds_encoder": t_enc, "seconds_cache": t_cache,
              "speedup": t_enc / t_cache, "same_weights": same}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
