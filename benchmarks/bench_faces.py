"""Real faces: the paper's experiment at small scale, on real photographs, a real pretrained tokenizer and a real
face-recognition model.

    python benchmarks/bench_faces.py --data ../shared/data/celeba-faces-64 \\
        --model ../shared/models/vqvae-cifar/vqvae.pt --out OUT [--eval-data DIR ...] [--quick] [--seed 0]
        [--builder examples/vqvae_cifar.py:build] [--baseline-k 16,32,64,128] [--stscq-m 1,4,16] [--stscq-k 16,32,64]
        [--no-progress]

Protocol (every row starts from the same pretrained tokenizer, whose encoder stays frozen):

1. ``--data`` is a face folder, one sub-folder per identity. Its identities are split (seeded) into training and
   test identities, so no person is in both. Images are resized to ``image_size`` (64) and mapped to the model's
   pixel range. Unreadable or undersized files are reported and skipped.
2. The tokenizer comes from ``--builder`` (``module:function`` or ``path/file.py:function``; default the
   user-code example ``examples/vqvae_cifar.py:build``) called with ``--model``. It must be a model a vqswitch
   adapter recognises (the generic adapter: see README "Bring your own VQ model").
3. Rows, all evaluated on the same test images:

   * **as it comes**: the tokenizer untouched (its own K0-code global codebook, through the exact M=1 drop-in swap);
   * **baseline K**: a global codebook reduced to K codes (k-means of training latents), M = 1, token-shared; stage 1
     trains the codebook for as many steps as STSCQ's stages 1 and 2 together, then stage 3 fine-tunes the decoder
     with exactly STSCQ's stage-3 budget (steps, learning rate, batches);
   * **STSCQ M, K**: M groups of K codes; stage 1 (token-shared group codebooks + router), stage 2 (token-specific
     copies + router), stage 3 (the decoder alone). Stages 1 and 2 read cached encoder latents.
4. Metrics per row (and per ``--eval-data`` set): bits per image T*ceil(log2 K) + ceil(log2 M), bpp, PSNR (mean of
   per-image PSNRs on [0, 1] pixels), SSIM, IDS (cosine of dlib face embeddings of original and reconstruction;
   mean +/- std over images) and face-verification accuracy on reconstructed pairs (both images reconstructed;
   10-fold, threshold chosen on the other 9 folds; mean +/- std over folds). The originals' verification accuracy
   is the ceiling. Pairs are balanced same/different, drawn with a fixed seed from the test identities, or read
   from a folder's ``pairs.txt`` (LFW format).
5. The verdict is computed from the rows: each STSCQ point against the baseline curve interpolated at the same bpp,
   for PSNR (paired SE over test images) and for verification accuracy (SE from the fold spread).

Writes into ``--out``: ``results.json`` (everything, atomically), ``table.md`` and ``table.txt``,
``psnr_vs_bpp.png`` and ``verification_vs_bpp.png``, ``reconstructions.png`` (a few test faces per row), and every
fine-tuned model under ``models/<row>/`` (``vqswitch.adapters.save_swapped`` format); while it runs, every
finished row is in ``results.partial.json``. ``--quick`` is a smoke run
(under 3 minutes on 2 cores) whose numbers mean nothing.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from vqswitch import formats
from vqswitch._checks import check_int, check_real
from vqswitch.experiments.faces import batches, format_number, from_pixel_range, to_pixel_range
from vqswitch.experiments.rate_distortion import Setting, compute_verdict, finetune_setting, machine_info, outcome

HERE = Path(__file__).resolve().parent

__all__ = ["FaceConfig", "FULL", "QUICK", "settings_for", "run_benchmark", "format_table", "main"]

DEFAULT_BUILDER = str(HERE.parent / "examples" / "vqvae_cifar.py") + ":build"


# ------------------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class FaceConfig:
    """Sizes, budgets and settings of one run.

    image_size: faces are resized to this square size (pixels); test_fraction: share of identities held out;
    max_identities: use at most this many identities of ``--data`` (None: all); max_train_images /
    max_test_images: caps (None: all; the test cap samples images evenly across test identities);
    pairs: verification pairs drawn per set (half same, half different); folds: verification folds;
    init_images: training images whose latents seed the k-means initialisation of every quantizer;
    stage*_steps / batch_size / lrs: fine-tuning budget (identical stage 3 for every row);
    baseline_k, stscq_m, stscq_k: the settings; grid_images: test faces shown per row in reconstructions.png.
    """

    image_size: int = 64
    test_fraction: float = 0.2
    max_identities: int | None = None
    max_train_images: int | None = None
    max_test_images: int | None = 500
    pairs: int = 600
    folds: int = 10
    init_images: int = 1024
    stage1_steps: int = 150
    stage2_steps: int = 150
    stage3_steps: int = 150
    batch_size: int = 32
    stage12_lr: float = 1e-3
    stage3_lr: float = 2e-4
    baseline_k: tuple = (16, 32, 64, 128)
    stscq_m: tuple = (1, 4, 16)
    stscq_k: tuple = (16, 32, 64)
    grid_images: int = 8

    def check(self) -> "FaceConfig":
        """Validate (returns self); TypeError / ValueError naming the field."""
        for name in ("image_size", "pairs", "folds", "init_images", "batch_size", "grid_images"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("stage1_steps", "stage2_steps", "stage3_steps"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("max_identities", "max_train_images", "max_test_images"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=2)
        check_real("test_fraction", self.test_fraction, 0.0, 1.0, min_open=True, max_open=True)
        if self.folds < 2 or self.pairs < 2 * self.folds:
            raise ValueError(f"need folds >= 2 and pairs >= 2 * folds, got folds={self.folds}, pairs={self.pairs}")
        for name in ("baseline_k", "stscq_m", "stscq_k"):
            vals = getattr(self, name)
            if not vals:
                raise ValueError(f"{name} must be a non-empty sequence of ints >= 1, got {vals!r}")
            for i, v in enumerate(vals):
                check_int(f"{name}[{i}]", v, minimum=1)
        if len(self.baseline_k) < 2:
            raise ValueError("baseline_k needs at least 2 values (a curve to compare with)")
        return self

    def stage_steps(self, setting: Setting) -> dict:
        """{stage: steps}: a baseline (no stage 2) gets stage1 + stage2 steps in stage 1, so quantizer budgets match."""
        if setting.token_specific:
            return {1: self.stage1_steps, 2: self.stage2_steps, 3: self.stage3_steps}
        return {1: self.stage1_steps + self.stage2_steps, 3: self.stage3_steps}


FULL = FaceConfig()
QUICK = FaceConfig(max_identities=16, max_train_images=96, max_test_images=40, pairs=40, init_images=64,
                   stage1_steps=3, stage2_steps=3, stage3_steps=2, batch_size=8, baseline_k=(8, 16),
                   stscq_m=(1, 4), stscq_k=(8,), grid_images=4)


def settings_for(config: FaceConfig) -> list[Setting]:
    """The baselines (by K), then token-specific STSCQ (by M, then K)."""
    config.check()
    return ([Setting("baseline", 1, k, False) for k in sorted(config.baseline_k)]
            + [Setting("stscq", m, k, True) for m in sorted(config.stscq_m) for k in sorted(config.stscq_k)])


# ------------------------------------------------------------------------------------------------ inputs


def _even_subset(labels: torch.Tensor, cap: int | None, seed: int) -> torch.Tensor:
    """Indices of at most ``cap`` items, taken round-robin over labels in a seeded order (all when cap is None)."""
    n = labels.shape[0]
    if cap is None or n <= cap:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    by_label: dict = {}
    for i in order.tolist():
        by_label.setdefault(int(labels[i]), []).append(i)
    queues = [by_label[k] for k in sorted(by_label)]
    picked, depth = [], 0
    while len(picked) < cap:
        for q in queues:
            if depth < len(q) and len(picked) < cap:
                picked.append(q[depth])
        depth += 1
    return torch.tensor(sorted(picked))


@dataclass
class FaceSet:
    """Images (N, 3, S, S) in [0, 1], labels (N,), and verification pairs (P, 2) into them with same (P,) and the
    number of folds they are scored in."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    pairs: torch.Tensor
    same: torch.Tensor
    folds: int
    pairs_source: str
    skipped: list = field(default_factory=list)


def load_split(root, config: FaceConfig, seed: int) -> tuple[FaceSet, torch.Tensor, dict]:
    """``root`` -> (test FaceSet, training images (N, 3, S, S) in [0, 1], split info). Split by identity."""
    from vqswitch.data import FaceFolder, draw_pairs, split_identities

    folder = FaceFolder(root, size=config.image_size, pixel_range=(0.0, 1.0))
    names = list(folder.identities)
    if config.max_identities is not None and len(names) > config.max_identities:
        g = torch.Generator().manual_seed(seed)
        names = [names[i] for i in sorted(torch.randperm(len(names), generator=g)[:config.max_identities].tolist())]
    train_ids, test_ids = split_identities(names, test_fraction=config.test_fraction, seed=seed)
    labels = torch.as_tensor(folder.labels)
    ident = [folder.identities[int(lab)] for lab in labels.tolist()]
    train_set, test_set = set(train_ids), set(test_ids)
    train_idx = torch.tensor([i for i, n in enumerate(ident) if n in train_set], dtype=torch.long)
    test_idx = torch.tensor([i for i, n in enumerate(ident) if n in test_set], dtype=torch.long)
    train_idx = train_idx[_even_subset(labels[train_idx], config.max_train_images, seed)]
    test_idx = test_idx[_even_subset(labels[test_idx], config.max_test_images, seed + 1)]
    train = folder.get_batch(train_idx.tolist())
    test = folder.get_batch(test_idx.tolist())
    test_labels = labels[test_idx]
    pairs, same = draw_pairs(test_labels, config.pairs, folds=config.folds, seed=seed)
    info = {"folder": Path(root).name, "identities": len(names), "train_identities": len(train_ids),
            "test_identities": len(test_ids), "train_images": int(train.shape[0]), "test_images": int(test.shape[0]),
            "skipped": [f"{Path(p).parent.name}/{Path(p).name}: {why}" for p, why in folder.skipped]}
    return (FaceSet(f"{Path(root).name} (test identities)", test, test_labels, pairs, same, config.folds, "drawn",
                    list(folder.skipped)), train, info)


def load_eval_set(root, config: FaceConfig, seed: int) -> FaceSet:
    """An extra held-out folder: its ``pairs.txt`` when it has one (its sets are the folds), else pairs drawn from
    its identity folders."""
    from vqswitch.data import load_face_folder

    s = load_face_folder(root, config.image_size, (0.0, 1.0), pairs="auto", num_pairs=config.pairs,
                         folds=config.folds, seed=seed)
    return FaceSet(Path(root).name, s.images, s.labels, s.pairs, s.same, s.folds, s.pairs_source, list(s.skipped))


# ------------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def reconstruct(model, images: torch.Tensor, pixel_range) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A swapped model through its codes on images (N, 3, S, S) in [0, 1] -> (reconstructions in [0, 1], groups
    (N,), indices (N, T))."""
    from vqswitch.adapters import decode_codes, encode_codes

    model.eval()
    recons, groups, indices = [], [], []
    for s in batches(images.shape[0], 64):
        codes = encode_codes(model, to_pixel_range(images[s], pixel_range))
        recons.append(from_pixel_range(decode_codes(model, codes).float(), pixel_range).clamp(0.0, 1.0))
        groups.append(codes.groups.cpu())
        indices.append(codes.indices.cpu())
    return torch.cat(recons), torch.cat(groups), torch.cat(indices)


def identity_metrics(emb_orig: torch.Tensor, emb_rec: torch.Tensor, face_set: FaceSet) -> dict:
    """IDS (cosine of original vs reconstruction embeddings, per image) and verification accuracy on reconstructed
    pairs (both images reconstructed), from (N, E) embeddings."""
    from vqswitch.eval import identity_metrics as metrics

    m = metrics(emb_orig, emb_rec, face_set.pairs, face_set.same, folds=face_set.folds)
    return {"ids": m.ids, "ids_std": m.ids_std, "verification": m.accuracy, "verification_std": m.accuracy_std,
            "verification_se": m.verification.standard_error}


def evaluate_set(model, face_set: FaceSet, emb_orig: torch.Tensor, pixel_range, embed_fn) -> tuple[dict, torch.Tensor]:
    """One model on one face set -> (metrics dict, reconstructions (N, 3, S, S) in [0, 1])."""
    from vqswitch.eval import psnr, ssim

    recon, groups, _ = reconstruct(model, face_set.images, pixel_range)
    p = psnr(face_set.images, recon, 1.0, reduction="none")
    out = {"psnr": float(p.mean()), "psnr_per_image": [float(v) for v in p.tolist()],
           "ssim": float(ssim(face_set.images, recon, 1.0)),
           "group_counts": torch.bincount(groups, minlength=1).tolist()}
    out.update(identity_metrics(emb_orig, embed_fn(recon, f"embedding reconstructions: {face_set.name}"), face_set))
    return out, recon


# ------------------------------------------------------------------------------------------------ the run


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()


@torch.no_grad()
def _encode(model, images: torch.Tensor, pixel_range) -> torch.Tensor:
    """The frozen encoder's tokens (N, T, D) of ``images`` (N, 3, S, S) in [0, 1]."""
    from vqswitch.adapters import encode_latents

    return torch.cat([encode_latents(model, to_pixel_range(images[s], pixel_range), check_range=False)
                      for s in batches(images.shape[0], 64)])


def _share_latent_cache(source: Path | None, run_dir: Path) -> None:
    """Hard-link the latent cache a finished row's fine-tuning built (``source``, its run folder) into ``run_dir``,
    so the next row's stages 1-2 read it instead of encoding the training set again. Every row starts from the same
    frozen encoder, so the cache's key (checked by the Finetuner, which rebuilds a cache that does not apply) is the
    same for all of them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if source is None:
        return
    for name in (f"{formats.LATENTS_NAME}.npy", f"{formats.LATENTS_NAME}.json"):
        src, dst = source / name, run_dir / name
        if src.is_file() and not dst.exists():
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)


def run_benchmark(data, model_path, out_dir, *, eval_data=(), builder: str = DEFAULT_BUILDER,
                  config: FaceConfig | None = None, quick: bool = False, seed: int = 0, progress: bool = True) -> dict:
    """Run the protocol of the module docstring; returns the result (what ``results.json`` holds) and writes the
    outputs into ``out_dir``.

    Args:
        data: face folder (one sub-folder per identity). model_path: the tokenizer checkpoint, passed to the builder.
        out_dir: output folder (created). eval_data: extra held-out face folders.
        builder: ``module:function`` / ``file.py:function`` returning the tokenizer from ``model_path``.
        config: :class:`FaceConfig` (default :data:`FULL`, or :data:`QUICK` with ``quick``). seed: int >= 0.
    Raises: ValueError for bad arguments or folders without usable faces; ImportError naming the ``[faces]`` extra
        when dlib is missing; FloatingPointError when training diverges.
    """
    from tqdm.auto import tqdm

    from vqswitch.adapters import (adapter_for, encode_latents, load_builder, save_swapped, swap_quantizer,
                                   swapped_quantizer)
    from vqswitch._io import atomic_write_json
    from vqswitch.eval import DlibFaceEmbedder, embed_images

    seed = check_int("seed", seed, minimum=0)
    config = (config or (QUICK if quick else FULL)).check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.manual_seed(seed)

    workers = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()))
    embedder = DlibFaceEmbedder(pixel_range=(0.0, 1.0), workers=workers)  # dlib holds the GIL: processes

    def embed_fn(images, desc="embedding faces (dlib)"):
        return embed_images(embedder, images, batch_size=128, progress=progress, desc=desc).double()

    # 1. data
    test_set, train, split_info = load_split(data, config, seed)
    sets = [test_set] + [load_eval_set(d, config, seed) for d in eval_data]

    # 2. the tokenizer
    base = load_builder(builder)(str(model_path))  # the user's function, called with the checkpoint path
    adapter = adapter_for(base)
    pixel_range = tuple(float(v) for v in adapter.pixel_range)
    base.eval()
    for p in base.parameters():
        p.requires_grad_(False)
    train_scaled = to_pixel_range(train, pixel_range)

    # 3. the originals' embeddings (the ceiling) and the unquantized decoder
    emb = {}
    set_info = []
    for s in sets:
        emb[s.name] = embed_fn(s.images, f"embedding originals: {s.name}")
        ceiling = identity_metrics(emb[s.name], emb[s.name], s)
        set_info.append({"name": s.name, "images": int(s.images.shape[0]), "pairs": int(s.same.numel()),
                         "folds": s.folds,
                         "same_pairs": int(s.same.sum()), "pairs_source": s.pairs_source,
                         "skipped": len(s.skipped), "originals_verification": ceiling["verification"],
                         "originals_verification_std": ceiling["verification_std"]})

    cache_root = Path(tempfile.mkdtemp(prefix="vqswitch-faces-"))
    try:
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(train.shape[0], generator=g)[:config.init_images]
        init_latents = _encode(base, train[pick.sort().values], pixel_range)  # every quantizer's k-means start

        rows, grids = [], {}

        def add_row(label, method, setting, model, stages, steps, seconds):
            q = swapped_quantizer(model)
            row = {"label": label, "method": method, "family": setting.family if setting else "as it comes",
                   "num_groups": q.num_groups, "codebook_size": q.codebook_size, "num_tokens": q.num_tokens,
                   "token_specific": q.token_specific, "stages": list(stages),
                   "stage_steps": {str(k): v for k, v in steps.items()},
                   "codebook_params": q.num_groups * (q.num_tokens if q.token_specific else 1) * q.codebook_size
                   * q.dim,
                   "bits_per_image": q.bits_per_image, "bpp": q.bits_per_image / config.image_size ** 2,
                   "seconds": round(seconds, 1), "sets": {}}
            for s in sets:
                metrics, recon = evaluate_set(model, s, emb[s.name], pixel_range, embed_fn)
                row["sets"][s.name] = metrics
                if s is test_set:
                    grids[label] = recon[grid_index(s.labels, config.grid_images)]
            main = row["sets"][test_set.name]
            row.update(psnr=main["psnr"], ssim=main["ssim"], psnr_per_image=main["psnr_per_image"],
                       ids=main["ids"], verification=main["verification"],
                       verification_std=main["verification_std"], verification_se=main["verification_se"])
            rows.append(row)
            # nothing lost if a long run dies: every finished row is on disk at once
            atomic_write_json(out / "results.partial.json", {"rows": rows, "sets": set_info,
                                                             "config": _config_dict(config), "data": split_info},
                              indent=1)
            return row

        # the tokenizer as it comes: the exact M=1 drop-in of its own codebook
        t0 = time.perf_counter()
        as_is = swap_quantizer(copy.deepcopy(base))
        k0 = swapped_quantizer(as_is).codebook_size
        add_row(f"as it comes (K0={k0})", "upstream", None, as_is, [], {}, time.perf_counter() - t0)
        with torch.no_grad():
            raw = torch.cat([from_pixel_range(adapter.decode_tokens(base, encode_latents(base, to_pixel_range(
                test_set.images[s], pixel_range), check_range=False)), pixel_range).clamp(0.0, 1.0) for s in
                batches(test_set.images.shape[0], 64)])
        from vqswitch.eval import psnr, ssim

        unquantized = {"psnr": float(psnr(test_set.images, raw, 1.0)), "ssim": float(ssim(test_set.images, raw, 1.0))}
        unquantized.update(identity_metrics(emb[test_set.name], embed_fn(raw), test_set))
        del as_is

        settings = settings_for(config)
        total = sum(sum(config.stage_steps(s).values()) for s in settings)
        bar = tqdm(total=total, desc="fine-tuning", disable=not progress)
        cache_source = None  # the first run folder whose fine-tuning built the latent cache
        for setting in settings:
            bar.set_postfix_str(setting.label)
            t0 = time.perf_counter()
            run_dir = cache_root / "runs" / _slug(setting.label)
            _share_latent_cache(cache_source, run_dir)
            model = finetune_setting(base, setting, config.stage_steps(setting), stage12_lr=config.stage12_lr,
                                     stage3_lr=config.stage3_lr, batch_size=config.batch_size, images=train_scaled,
                                     latents=init_latents, seed=seed, run_dir=run_dir,
                                     on_step=lambda: bar.update(1))
            if cache_source is None and (run_dir / f"{formats.LATENTS_NAME}.npy").is_file():
                cache_source = run_dir
            save_swapped(model, out / "models" / _slug(setting.label))
            add_row(setting.label, setting.method, setting, model, setting.stages, config.stage_steps(setting),
                    time.perf_counter() - t0)
            del model
        bar.close()
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
        embedder.close()

    result = {
        "benchmark": "faces", "quick": quick, "seed": seed, "config": _config_dict(config),
        "model": Path(model_path).name, "builder": builder.rsplit("/", 1)[-1], "data": split_info,
        "sets": set_info, "unquantized": unquantized, "rows": rows,
        "verdict": verdict(rows), "machine": machine_info(),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    write_outputs(result, grids, test_set, out)
    (out / "results.partial.json").unlink(missing_ok=True)
    return result


def _config_dict(config: FaceConfig) -> dict:
    d = asdict(config)
    for k in ("baseline_k", "stscq_m", "stscq_k"):
        d[k] = list(d[k])
    return d


# ------------------------------------------------------------------------------------------------ verdict


def _interp(curve: list[dict], x: float, key: str):
    for lo, hi in zip(curve, curve[1:]):
        if lo["bpp"] <= x <= hi["bpp"]:
            w = (x - lo["bpp"]) / (hi["bpp"] - lo["bpp"])
            return (1 - w) * lo[key] + w * hi[key], (lo, hi, w)
    return None, None


def verdict(rows: list[dict]) -> dict:
    """PSNR verdict (bench_rate_distortion's compute_verdict: paired SE over images) plus a verification-accuracy
    comparison with the baseline curve at the same bpp (SE: the two fold SEs combined)."""
    rd_rows = [r for r in rows if r["method"] in ("baseline", "stscq")]
    psnr_verdict = compute_verdict(rd_rows)
    curve = sorted((r for r in rd_rows if r["method"] == "baseline"), key=lambda r: r["bpp"])
    ver_points, lines = [], []
    for r in rd_rows:
        if r["method"] != "stscq":
            continue
        base, where = _interp(curve, r["bpp"], "verification")
        if base is None:
            ver_points.append({"label": r["label"], "outcome": "out of range"})
            continue
        lo, hi, w = where
        se = math.sqrt(r["verification_se"] ** 2 + ((1 - w) * lo["verification_se"]) ** 2
                       + (w * hi["verification_se"]) ** 2)
        delta = r["verification"] - base
        result = outcome(delta, se)
        ver_points.append({"label": r["label"], "baseline_verification": base, "delta": delta, "se": se,
                           "outcome": result})
        lines.append(f"{r['label']}: verification {100 * r['verification']:.1f}% vs baseline curve "
                     f"{100 * base:.1f}% at {r['bpp']:.4f} bpp: {100 * delta:+.1f} +/- {100 * se:.1f} points "
                     f"({result})")
    return {"psnr": psnr_verdict, "verification": {"points": ver_points, "lines": lines}}


# ------------------------------------------------------------------------------------------------ output


def format_table(result: dict, *, markdown: bool = False) -> str:
    """The rows on the main test set (plus the ceilings), as aligned text or a markdown table."""
    by_label = {p["label"]: p for p in result["verdict"]["psnr"]["points"]}
    header = ("row", "M", "K", "bits/img", "bpp", "PSNR dB", "SSIM", "IDS", "verif. acc %", "PSNR vs curve")
    table = [header]
    for r in result["rows"]:
        p = by_label.get(r["label"])
        c = p["curve"] if p else None
        table.append((r["label"], str(r["num_groups"]), str(r["codebook_size"]), str(r["bits_per_image"]),
                      format_number(r["bpp"], ".4f"), format_number(r["psnr"], ".2f"),
                      format_number(r["ssim"], ".4f"), format_number(r["ids"], ".4f"),
                      f"{100 * r['verification']:.1f} +/- {100 * r['verification_std']:.1f}",
                      f"{c['delta_db']:+.2f} +/- {c['se_db']:.2f}" if c else ""))
    u = result["unquantized"]
    main = result["sets"][0]
    table.append(("no quantization (encoder -> decoder)", "", "", "", "", format_number(u["psnr"], ".2f"),
                  format_number(u["ssim"], ".4f"), format_number(u["ids"], ".4f"),
                  f"{100 * u['verification']:.1f} +/- {100 * u['verification_std']:.1f}", ""))
    table.append(("original images (ceiling)", "", "", "", "", "", "", "1.0000",
                  f"{100 * main['originals_verification']:.1f} +/- {100 * main['originals_verification_std']:.1f}",
                  ""))
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(t) + " |" for t in table[1:]]
        return "\n".join(lines)
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths))).rstrip()
             for t in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_eval_sets(result: dict) -> str:
    """One short table per extra evaluation set."""
    out = []
    for s in result["sets"][1:]:
        out.append(f"{s['name']}: {s['images']} images, {s['pairs']} pairs ({s['pairs_source']}); originals "
                   f"{100 * s['originals_verification']:.1f}%")
        for r in result["rows"]:
            m = r["sets"][s["name"]]
            out.append(f"  {r['label']:<28} {r['bits_per_image']:>5} bits  PSNR {m['psnr']:6.2f}  IDS {m['ids']:.4f}"
                       f"  verification {100 * m['verification']:5.1f} +/- {100 * m['verification_std']:.1f}%")
    return "\n".join(out)


def write_plots(result: dict, out: Path) -> list[Path]:
    """psnr_vs_bpp.png and verification_vs_bpp.png (needs matplotlib; ImportError naming it otherwise)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("the faces benchmark's plots need matplotlib: pip install matplotlib") from err
    from vqswitch._io import atomic_path

    written = []
    for key, ylabel, name in (("psnr", "PSNR (dB), held-out identities", "psnr_vs_bpp.png"),
                              ("verification", "face-verification accuracy (%), reconstructed pairs",
                               "verification_vs_bpp.png")):
        fig = Figure(figsize=(7, 4.5))
        ax = fig.add_subplot()
        families: dict = {}
        for r in result["rows"]:
            families.setdefault(r["family"], []).append(r)
        scale = 100.0 if key == "verification" else 1.0
        for fam, rs in families.items():
            rs = sorted(rs, key=lambda r: r["bpp"])
            style = dict(color="black", linewidth=2, marker="s") if fam.startswith("baseline") else dict(marker="o")
            if fam == "as it comes":
                style = dict(marker="*", markersize=12, linestyle="none", color="grey")
            ys = [scale * r[key] for r in rs]
            if key == "verification":
                ax.errorbar([r["bpp"] for r in rs], ys, yerr=[scale * r["verification_se"] for r in rs], label=fam,
                            capsize=3, **style)
            else:
                ax.plot([r["bpp"] for r in rs], ys, label=fam, **style)
        if key == "verification":
            ceiling = 100 * result["sets"][0]["originals_verification"]
            ax.axhline(ceiling, color="green", linestyle="--", label=f"original images ({ceiling:.1f}%)")
        else:
            ax.axhline(result["unquantized"]["psnr"], color="green", linestyle="--", label="no quantization")
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(ylabel)
        ax.set_title(f"real faces ({result['data']['folder']}): global codebook vs STSCQ")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        written.append(out / name)
    return written


def grid_index(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the images reconstructions.png shows: the first image of each person in turn (up to ``n``), then
    further images of the same people, so the picture shows as many different people as the set holds."""
    order, seen, rest = [], set(), []
    for i, lab in enumerate(labels.tolist()):
        (rest if lab in seen else order).append(i)
        seen.add(lab)
    return torch.tensor((order + rest)[:n], dtype=torch.long)


def write_grid(grids: dict, test_set: FaceSet, out: Path, rows: list[dict]) -> Path:
    """reconstructions.png: test faces of different people (:func:`grid_index`), then each row's reconstructions of
    them, each under its label (bits per image included), pixels enlarged 3x."""
    from vqswitch.data import save_labelled_grid

    n = min(v.shape[0] for v in grids.values())
    labelled = [("original", test_set.images[grid_index(test_set.labels, n)])]
    labelled += [(f"{r['label']}: {r['bits_per_image']} bits/image", grids[r["label"]][:n]) for r in rows]
    return save_labelled_grid(labelled, out / "reconstructions.png", scale=3)


def write_outputs(result: dict, grids: dict, test_set: FaceSet, out: Path) -> None:
    from vqswitch._io import atomic_write_bytes, atomic_write_json

    atomic_write_json(out / "results.json", result, indent=1)
    text = format_table(result)
    extra = format_eval_sets(result)
    lines = result["verdict"]["psnr"]["lines"] + result["verdict"]["verification"]["lines"]
    atomic_write_bytes(out / "table.txt", (text + ("\n\n" + extra if extra else "") + "\n\nVerdict:\n"
                                           + "\n".join(lines) + "\n").encode())
    atomic_write_bytes(out / "table.md", (format_table(result, markdown=True) + "\n").encode())
    write_plots(result, out)
    write_grid(grids, test_set, out, result["rows"])


def main(argv=None) -> int:
    """Command line (see the module docstring) -> exit code: 0 done, 1 failed, 2 bad arguments."""
    from vqswitch.cli._common import int_list_arg, parse_args, seed_arg

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="face folder, one sub-folder per identity (training + test)")
    p.add_argument("--model", required=True, help="the tokenizer checkpoint, passed to --builder")
    p.add_argument("--out", required=True, help="output folder: results.json, tables, plots, models")
    p.add_argument("--eval-data", action="append", default=[], metavar="DIR",
                   help="an extra held-out face folder (repeatable); its pairs.txt is used when present")
    p.add_argument("--builder", default=DEFAULT_BUILDER, help="module:function or file.py:function that builds the "
                   "tokenizer from --model (default: examples/vqvae_cifar.py:build)")
    p.add_argument("--quick", action="store_true", help="smoke run (under 3 minutes); numbers mean nothing")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed, int >= 0 (default: %(default)s)")
    p.add_argument("--baseline-k", type=int_list_arg(), default=None, help="K of the baselines (default 16,32,64,128)")
    p.add_argument("--stscq-m", type=int_list_arg(), default=None, help="M of STSCQ (default 1,4,16)")
    p.add_argument("--stscq-k", type=int_list_arg(), default=None, help="K of STSCQ (default 16,32,64)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    args = parse_args(p, argv)
    if isinstance(args, int):
        return args
    for name in [args.data] + args.eval_data:
        if not Path(name).is_dir():
            print(f"error: no such folder: {name}", file=sys.stderr)
            return 2
    if not Path(args.model).is_file():
        print(f"error: --model: no such file: {args.model}", file=sys.stderr)
        return 2
    config = QUICK if args.quick else FULL
    overrides = {k: getattr(args, k) for k in ("baseline_k", "stscq_m", "stscq_k") if getattr(args, k) is not None}
    try:
        config = replace(config, **overrides).check()
        result = run_benchmark(args.data, args.model, args.out, eval_data=args.eval_data, builder=args.builder,
                               config=config, quick=args.quick, seed=args.seed, progress=args.progress)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_table(result))
    extra = format_eval_sets(result)
    if extra:
        print()
        print(extra)
    print()
    print("Verdict (computed from the rows):")
    for line in result["verdict"]["psnr"]["lines"] + result["verdict"]["verification"]["lines"]:
        print(f"  {line}")
    print(f"\nwrote {args.out}/results.json, table.md, table.txt, psnr_vs_bpp.png, verification_vs_bpp.png, "
          f"reconstructions.png, models/ ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
