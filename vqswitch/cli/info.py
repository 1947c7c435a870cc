"""``vqswitch info``: describe a saved quantizer (``vqswitch new``) or a swapped model (finetune's ``RUN_DIR/final``,
the demo's checkpoint): config, bits, bpp, parameter sizes, entropy model and recorded utilisation."""
from __future__ import annotations

import json
import os

from vqswitch import formats
from vqswitch.cli._common import (add_size_arguments, check_checkpoint_dir, check_size_args, checkpoint_config,
                                  is_local, load_codec, load_quantizer)

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    i = subparsers.add_parser("info", help="describe a saved quantizer or swapped model (local directory or Hub repo "
                              "ORG/NAME)")
    i.add_argument("source", metavar="DIR_OR_REPO", help="a quantizer folder (vqswitch new), a swapped model "
                   "(finetune's RUN_DIR/final, the demo's checkpoint) or a Hub repo id")
    i.add_argument("--revision", help="Hub branch, tag or commit")
    i.add_argument("--cache-dir", help="Hugging Face cache folder (default: the standard one)")
    add_size_arguments(i)
    i.set_defaults(func=run)


def _count(params) -> dict:
    params = list(params)
    return {"count": sum(p.numel() for p in params), "bytes": sum(p.numel() * p.element_size() for p in params)}


def _util_dict(u) -> dict:
    return {"min": u.min, "max": u.max, "mean": u.mean, "std": u.std, "group_counts": u.group_counts.tolist()}


def _ideal_bits(entropy) -> float | None:
    """Mean ideal code length (bits per image) of the images an entropy model was counted on, under the model."""
    import numpy as np

    counts, gcounts = entropy.code_counts.double().numpy(), entropy.group_counts.double().numpy()
    n = float(gcounts.sum())
    if n == 0:
        return None
    s = entropy.smoothing
    bits = 0.0
    if entropy.num_groups > 1:
        bits += float((gcounts * (np.log2(n + entropy.num_groups * s) - np.log2(gcounts + s))).sum())
    if entropy.codebook_size > 1:
        totals = counts.sum(-1, keepdims=True) + entropy.codebook_size * s
        bits += float((counts * (np.log2(totals) - np.log2(counts + s))).sum())
    return bits / n


def _base_model(source: str) -> str | None:
    """The ``base_model`` of the run.json beside a local swapped model (finetune's RUN_DIR/final), if any."""
    from vqswitch._io import read_json_object

    if not is_local(source):
        return None
    run_json = os.path.join(os.path.dirname(os.path.normpath(source)), formats.RUN_INFO_FILE)
    if not os.path.isfile(run_json):
        return None
    try:
        return read_json_object(run_json, "run info").get("base_model")
    except (OSError, ValueError):
        return None


def _info_swapped(args, config: dict) -> int:
    """`vqswitch info` on a swapped model (save_swapped / finetune final / the demo's checkpoint)."""
    from vqswitch.adapters import swapped_quantizer

    cm = load_codec(args.source, args.revision)
    model, q = cm.model, swapped_quantizer(cm.model)
    base = config.get("base_config") if isinstance(config.get("base_config"), dict) else {}
    base_name = base.get("_class_name") or base.get("class") or type(model).__name__
    base_model = _base_model(args.source)
    router = list(q.router.parameters()) if q.router is not None else []
    h, w = args.height, args.width
    entropy_file = (os.path.isfile(os.path.join(args.source, formats.ENTROPY_FILE))
                    if is_local(args.source) else None)
    counted = int(cm.entropy.group_counts.sum())
    info = {"kind": "swapped-model", "source": args.source, "adapter": config.get("adapter"), "base_model_class":
            base_name, "base_model": base_model, "image_size": list(cm.image_size), "quantizer": q.get_config(),
            "bits_per_image": q.bits_per_image, "height": h, "width": w, "bpp": q.bpp(h, w),
            "parameters": {"codebooks": _count([q.codebooks]), "router": _count(router),
                           "quantizer": _count(q.parameters()), "model": _count(model.parameters())},
            "entropy_model": {"file": entropy_file, "smoothing": cm.entropy.smoothing, "counted_images": counted,
                              "bits_per_image": _ideal_bits(cm.entropy), "fingerprint": cm.entropy.fingerprint()},
            "utilisation": _util_dict(q.utilization()) if int(q.usage.sum()) > 0 else None}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    kind = "token-specific" if q.token_specific else "token-shared"
    print(f"swapped model: {args.source}")
    print(f"adapter: {info['adapter']}")
    print(f"base model: {base_name}" + (f" ({base_model})" if base_model else ""))
    print(f"images: {cm.image_size[0]}x{cm.image_size[1]}")
    print(f"quantizer: T={q.num_tokens} K={q.codebook_size} M={q.num_groups} D={q.dim} {kind}, metric {q.metric}")
    print(f"bits per image: {q.bits_per_image}")
    print(f"bpp at {h}x{w}: {info['bpp']:.4f}")
    for name in ("codebooks", "router", "quantizer", "model"):
        c = info["parameters"][name]
        print(f"parameters ({name}): {c['count']} ({c['bytes']} bytes)")
    e = info["entropy_model"]
    where = {True: formats.ENTROPY_FILE, False: "rebuilt from the usage counts (no file)", None: "loaded"}
    ideal = "" if e["bits_per_image"] is None else f", ideal {e['bits_per_image']:.1f} bits per image on them"
    print(f"entropy model: {where[e['file']]}; counted on {counted} images{ideal}")
    u = info["utilisation"]
    if u is None:
        print("utilisation: not recorded")
    else:
        print(f"utilisation: min {u['min']:.3f} max {u['max']:.3f} mean {u['mean']:.3f} std {u['std']:.3f}")
        print(f"group histogram: {u['group_counts']}")
    return 0


def run(args) -> int:
    """Describe a saved quantizer or a swapped model: config, bits, bpp, parameter sizes, entropy model and
    recorded utilisation."""
    check_size_args(args)
    config = checkpoint_config(args.source, args.revision, args.cache_dir)
    if is_local(args.source):
        check_checkpoint_dir(args.source)
    if config is not None and config.get("format") == formats.SWAPPED_FORMAT:
        return _info_swapped(args, config)
    q = load_quantizer(args.source, args.revision, args.cache_dir)
    router = list(q.router.parameters()) if q.router is not None else []
    params = {"codebooks": _count([q.codebooks]), "router": _count(router), "total": _count(q.parameters())}
    util = _util_dict(q.utilization()) if int(q.usage.sum()) > 0 else None
    h, w = args.height, args.width
    info = {"source": args.source, "config": q.get_config(), "bits_per_image": q.bits_per_image,
            "height": h, "width": w, "bpp": q.bpp(h, w), "parameters": params, "utilisation": util}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"checkpoint: {args.source}")
    print("config:")
    for k, v in info["config"].items():
        print(f"  {k}: {v}")
    print(f"bits per image: {q.bits_per_image}")
    print(f"bpp at {h}x{w}: {info['bpp']:.4f}")
    for name in ("codebooks", "router", "total"):
        print(f"parameters ({name}): {params[name]['count']} ({params[name]['bytes']} bytes)")
    if util is None:
        print("utilisation: not recorded")
    else:
        print(f"utilisation: min {util['min']:.3f} max {util['max']:.3f} mean {util['mean']:.3f} std {util['std']:.3f}")
        print(f"group histogram: {util['group_counts']}")
    return 0
