"""Identity embeddings (dlib's real face model where the [faces] extra is installed) and the identity metrics."""
from __future__ import annotations

import pickle
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import vqswitch.eval.identity
from vqswitch.data import ProceduralFaces, draw_pairs
from vqswitch.eval import (DLIB_INPUT_SIZE, DlibFaceEmbedder, embed_images, identity_metrics, pair_verification,
                           verification_accuracy)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-faces-64"


# ------------------------------------------------------------------------------------------------ the real model
# Slow tier: loading dlib's network and running it on 150 x 150 crops takes seconds. The fast tier runs the same
# embedder code around a stand-in model (below, "without dlib").


@pytest.fixture(scope="module")
def dlib_embedder():
    pytest.importorskip("dlib", reason="the [faces] extra (dlib-bin) is not installed")
    pytest.importorskip("face_recognition_models",
                        reason="the [faces] extra (face-recognition-models) is not installed")
    return DlibFaceEmbedder(pixel_range=(0.0, 1.0))


@pytest.fixture(scope="module")
def cartoon_faces():
    """Images 0-3 show identities 0-3; images 4-7 show the same identities again (other pose and lighting)."""
    return ProceduralFaces(8, 64, seed=0, num_identities=4).get_batch(range(8))


@pytest.fixture(scope="module")
def cartoon_embeddings(dlib_embedder, cartoon_faces):
    return dlib_embedder(cartoon_faces)


@pytest.mark.slow
def test_dlib_embeddings_shape_norm_and_determinism(dlib_embedder, cartoon_faces, cartoon_embeddings):
    e = cartoon_embeddings
    assert e.shape == (8, 128) and e.dtype == torch.float32 and e.device.type == "cpu"
    norms = e.norm(dim=1)
    assert bool(((norms > 0.5) & (norms < 3.0)).all())  # dlib descriptors: norm about 1.5, never degenerate
    # the same image twice, in another batch and position, gives the identical embedding
    again = dlib_embedder(torch.stack([cartoon_faces[3], cartoon_faces[0], cartoon_faces[3]]))
    assert torch.equal(again[0], e[3]) and torch.equal(again[2], e[3]) and torch.equal(again[1], e[0])
    assert dlib_embedder(cartoon_faces[:0]).shape == (0, 128)


@pytest.mark.slow
def test_dlib_tells_faces_apart(dlib_embedder, cartoon_faces, cartoon_embeddings):
    e = cartoon_embeddings
    flipped = dlib_embedder(cartoon_faces.flip(-1))
    d = torch.cdist(e, e)
    other = ~torch.eye(8, dtype=torch.bool)
    for i in range(8):
        j = (i + 4) % 8  # the same identity's other image
        different = [k for k in range(8) if k % 4 != i % 4]
        # a face is closer to its own mirror image and to its identity's other image than to any other identity
        assert float((e[i] - flipped[i]).norm()) < float(d[i, different].min())
        assert float(d[i, j]) < float(d[i, different].min())
    assert float(d[other].min()) > 0  # distinct images, distinct embeddings


@pytest.mark.slow
def test_dlib_pixel_range_and_input_size(dlib_embedder, cartoon_faces, cartoon_embeddings):
    signed = DlibFaceEmbedder(pixel_range=(-1.0, 1.0))
    assert torch.equal(signed(cartoon_faces[:2] * 2 - 1), cartoon_embeddings[:2])
    # out-of-range values are clamped, not wrapped
    assert torch.equal(dlib_embedder(cartoon_faces[:1] * 3 - 1), dlib_embedder((cartoon_faces[:1] * 3 - 1).clamp(0, 1)))
    px = dlib_embedder.to_uint8(cartoon_faces[:2])
    assert px.shape == (2, DLIB_INPUT_SIZE, DLIB_INPUT_SIZE, 3) and px.dtype == np.uint8 and px.flags.c_contiguous
    big = torch.nn.functional.interpolate(cartoon_faces[:2], size=(150, 150), mode="bicubic").clamp(0, 1)
    assert np.array_equal(dlib_embedder.to_uint8(big), np.round(big.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8))


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared CelebA folder is not beside the checkout")
def test_dlib_on_real_celeba_faces(dlib_embedder):
    from vqswitch.data import FaceFolder

    ds = FaceFolder(SHARED, 64, identities=["7201", "7202", "7203"])
    idx = [int(k) for g in range(3) for k in torch.nonzero(ds.labels == g).flatten()[:3]]
    e = dlib_embedder(ds.get_batch(idx))
    lab = ds.labels[idx]
    d = torch.cdist(e, e)
    same = (lab[:, None] == lab[None, :]) & ~torch.eye(len(idx), dtype=torch.bool)
    different = lab[:, None] != lab[None, :]
    assert float(d[same].mean()) < 0.6 < float(d[different].mean())  # dlib's own "same person" threshold


@pytest.mark.slow
def test_readme_faces_example_runs(dlib_embedder, tmp_path, monkeypatch, capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python faces\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 1, "README lost its face-data example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md (faces)", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    ids, accuracy = re.search(r"IDS ([0-9.]+) .*verification ([0-9.]+)", out).groups()
    assert 0.5 < float(ids) <= 1.0 and 0.0 <= float(accuracy) <= 1.0


@pytest.mark.slow
def test_embed_images_with_the_real_model_matches_one_call(dlib_embedder, cartoon_faces, cartoon_embeddings):
    assert torch.equal(embed_images(dlib_embedder, cartoon_faces[:5], batch_size=3, progress=False),
                       cartoon_embeddings[:5])


@pytest.mark.slow
def test_worker_processes_give_the_same_embeddings(dlib_embedder, cartoon_faces, cartoon_embeddings):
    parallel = DlibFaceEmbedder(workers=2)
    try:
        assert torch.equal(parallel(cartoon_faces), cartoon_embeddings)
        assert torch.equal(parallel(cartoon_faces[:3]), cartoon_embeddings[:3])  # too few to split: in process
    finally:
        parallel.close()
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(parallel)


@pytest.mark.slow
def test_worker_processes_end_with_a_killed_parent(dlib_embedder, tmp_path):
    """A parent killed without closing the embedder (SIGKILL) leaves no worker process behind."""
    import os
    import signal
    import time

    script = tmp_path / "parent.py"
    script.write_text("import os, torch\nfrom vqswitch.eval import DlibFaceEmbedder\n"
                      "if __name__ == '__main__':\n    e = DlibFaceEmbedder(workers=2)\n"
                      "    e(torch.rand(8, 3, 64, 64))\n"
                      "    print(' '.join(str(p) for p in e._pool._processes), flush=True)\n"
                      "    os.kill(os.getpid(), 9)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr
    deadline = time.monotonic() + 15
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in pids
                 if os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split()[2]]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    assert not alive, f"worker processes {alive} outlived their killed parent"


# ------------------------------------------------------------------------------------------------ without dlib


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "vqswitch\[faces\]"'):
        DlibFaceEmbedder()
    monkeypatch.setitem(sys.modules, "dlib", type(sys)("dlib"))  # dlib present, its model package missing
    monkeypatch.setitem(sys.modules, "face_recognition_models", None)
    with pytest.raises(ImportError, match=r"face-recognition-models.*vqswitch\[faces\]"):
        DlibFaceEmbedder()


@pytest.mark.slow  # a fresh interpreter importing torch: seconds of CPU
def test_importing_data_and_eval_loads_no_optional_dependency():
    """dlib, its model package, matplotlib and Pillow are imported on first use, never by importing vqswitch's data and
    evaluation packages (or their old paths vqswitch.metrics and vqswitch.identity)."""
    code = ("import sys, vqswitch, vqswitch.data, vqswitch.eval, vqswitch.metrics, vqswitch.identity; "
            "loaded = [m for m in ('dlib', 'face_recognition_models', 'matplotlib', 'PIL') if m in sys.modules]; "
            "assert not loaded, loaded")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


class _StandInModel:
    """Stands in for dlib's face_recognition_model_v1: each descriptor is the image's first 128 uint8 values / 255;
    records (images, num_jitters) of every call."""

    def __init__(self):
        self.calls = []

    def compute_face_descriptor(self, batch, num_jitters):
        self.calls.append((len(batch), num_jitters))
        return [np.asarray(image, dtype=np.float64).reshape(-1)[:128] / 255.0 for image in batch]


@pytest.fixture
def stand_in_dlib(monkeypatch):
    """dlib and face_recognition_models replaced by modules serving a :class:`_StandInModel` (a fresh model cache)."""
    model = _StandInModel()
    dlib = types.ModuleType("dlib")
    dlib.face_recognition_model_v1 = lambda location: model
    weights = types.ModuleType("face_recognition_models")
    weights.face_recognition_model_location = lambda: "stand-in-model.dat"
    monkeypatch.setitem(sys.modules, "dlib", dlib)
    monkeypatch.setitem(sys.modules, "face_recognition_models", weights)
    monkeypatch.setattr(vqswitch.eval.identity, "_MODELS", {})
    return model


def test_embedder_pipeline_around_a_stand_in_model(stand_in_dlib):
    """What the embedder does around dlib's network: pixels dlib sees, chunking, batch independence, B = 0."""
    faces = ProceduralFaces(5, 64, seed=0).get_batch(range(5))
    embedder = DlibFaceEmbedder(chunk=2)
    e = embedder(faces)
    assert e.shape == (5, 128) and e.dtype == torch.float32 and e.device.type == "cpu"
    assert stand_in_dlib.calls == [(2, 0), (2, 0), (1, 0)]  # chunk images per dlib call, no jitter
    px = embedder.to_uint8(faces)
    assert px.shape == (5, DLIB_INPUT_SIZE, DLIB_INPUT_SIZE, 3) and px.dtype == np.uint8 and px.flags.c_contiguous
    assert torch.equal(e, torch.from_numpy(px.reshape(5, -1)[:, :128] / 255.0).float())
    assert torch.equal(embedder(faces[3:4]), e[3:4])  # the same image, the same embedding, in any batch
    assert embedder(faces[:0]).shape == (0, 128)
    assert torch.equal(DlibFaceEmbedder(pixel_range=(-1.0, 1.0))(faces[:2] * 2 - 1), e[:2])
    assert torch.equal(embedder(faces[:1] * 3 - 1), embedder((faces[:1] * 3 - 1).clamp(0, 1)))  # clamped
    big = torch.nn.functional.interpolate(faces[:2], size=(150, 150), mode="bicubic").clamp(0, 1)
    assert np.array_equal(embedder.to_uint8(big), np.round(big.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8))
    assert embed_images(embedder, faces, batch_size=3, progress=False).equal(e)
    assert "chunk=2" in repr(embedder)
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(embedder)


def test_embedder_rejects_bad_arguments_before_loading_the_model():
    with pytest.raises(ValueError, match="pixel_range"):
        DlibFaceEmbedder(pixel_range=(1.0, 0.0))
    with pytest.raises(TypeError, match="num_jitters"):
        DlibFaceEmbedder(num_jitters=0.5)
    with pytest.raises(ValueError, match="chunk"):
        DlibFaceEmbedder(chunk=0)
    with pytest.raises(ValueError, match="workers"):
        DlibFaceEmbedder(workers=0)


def test_embedder_rejects_bad_images(stand_in_dlib):
    embedder = DlibFaceEmbedder()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        embedder(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        embedder(torch.zeros(0, 1, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        embedder(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        embedder(torch.full((1, 3, 8, 8), float("nan")))
    assert stand_in_dlib.calls == []  # refused before dlib is called


def _mean_colour(images: torch.Tensor) -> torch.Tensor:
    """A stand-in embedder: each image's mean colour plus a constant (never all-zero)."""
    return torch.cat([images.mean(dim=(2, 3)), torch.ones(images.shape[0], 1)], dim=1)


def test_embed_images_batches_any_embedder():
    faces = ProceduralFaces(10, 16, seed=1)
    whole = _mean_colour(faces.get_batch(range(10)))
    for data in (faces.get_batch(range(10)), faces, list(faces.get_batch(range(10)))):
        out = embed_images(_mean_colour, data, batch_size=4, progress=False)
        assert out.dtype == torch.float32 and torch.allclose(out, whole, atol=1e-6)
    calls = []
    embed_images(lambda x: calls.append(x.shape[0]) or _mean_colour(x), faces, batch_size=4, progress=False)
    assert calls == [4, 4, 2]
    with pytest.raises(TypeError, match="callable"):
        embed_images(3, faces)
    with pytest.raises(ValueError, match=r"\(4, E\)"):
        embed_images(lambda x: torch.zeros(1, 3), faces, batch_size=4, progress=False)
    with pytest.raises(TypeError, match="float"):
        embed_images(lambda x: torch.zeros(x.shape[0], 3, dtype=torch.long), faces, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="no image"):
        embed_images(_mean_colour, torch.zeros(0, 3, 4, 4), progress=False)


# ------------------------------------------------------------------------------------------------ identity metrics


def _clusters(seed: int = 0, identities: int = 20, per: int = 5, dim: int = 16, spread: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(identities, dim, generator=g)
    labels = torch.arange(identities).repeat_interleave(per)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def test_identity_metrics_on_perfect_and_destroyed_reconstructions():
    emb, labels = _clusters()
    pairs, same = draw_pairs(labels, 200, folds=10, seed=0)
    ceiling = identity_metrics(emb, emb, pairs, same, folds=10)
    assert ceiling.ids == pytest.approx(1.0) and ceiling.ids_std == pytest.approx(0.0, abs=1e-7)
    assert ceiling.accuracy == 1.0 and ceiling.images == 100 and ceiling.pairs == 200
    # reconstructions that keep nothing of the person: chance-level verification, IDS near 0
    noise = torch.randn(emb.shape, generator=torch.Generator().manual_seed(1))
    lost = identity_metrics(emb, noise, pairs, same, folds=10)
    assert abs(lost.ids) < 0.15 and lost.ids_std > 0.1
    assert 0.3 < lost.accuracy < 0.7
    # partly kept: IDS between, matches the per-image cosine mean
    half = emb + 0.8 * noise
    m = identity_metrics(emb, half, pairs, same, folds=10)
    cos = torch.nn.functional.cosine_similarity(emb.double(), half.double(), dim=1)
    assert m.ids == pytest.approx(float(cos.mean())) and m.ids_std == pytest.approx(float(cos.std()))
    assert lost.ids < m.ids < ceiling.ids
    d = m.to_dict()
    assert set(d) >= {"ids", "ids_std", "accuracy", "accuracy_std", "verification"}
    assert d["verification"]["accuracy"] == m.accuracy == pytest.approx(float(np.mean(m.verification.fold_accuracies)))


def test_verification_uses_reconstructions_for_both_images_of_a_pair():
    emb, labels = _clusters()
    pairs, same = draw_pairs(labels, 100, folds=5, seed=2)
    recon = emb.flip(0)  # image i's "reconstruction" looks like image N-1-i
    m = identity_metrics(emb, recon, pairs, same, folds=5)
    direct = verification_accuracy(recon[pairs[:, 0]], recon[pairs[:, 1]], same, folds=5)
    assert m.verification == direct
    assert pair_verification(recon, pairs, same, folds=5) == direct
    mixed = verification_accuracy(emb[pairs[:, 0]], recon[pairs[:, 1]], same, folds=5)
    assert mixed.accuracy < m.accuracy  # not the originals-vs-reconstructions protocol


def test_identity_metrics_validation():
    emb, labels = _clusters(identities=4, per=3)
    pairs, same = draw_pairs(labels, 4, folds=2)
    with pytest.raises(ValueError, match="same shape"):
        identity_metrics(emb, emb[:-1], pairs, same, folds=2)
    with pytest.raises(ValueError, match=r"\[0, 12\)"):
        identity_metrics(emb, emb, pairs + 12, same, folds=2)
    with pytest.raises(TypeError, match="integer"):
        identity_metrics(emb, emb, pairs.float(), same, folds=2)
    with pytest.raises(ValueError, match=r"\(P, 2\)"):
        identity_metrics(emb, emb, pairs[:, :1], same, folds=2)
    with pytest.raises(TypeError, match="same"):
        identity_metrics(emb, emb, pairs, same.long(), folds=2)
    with pytest.raises(ValueError, match="NaN"):
        identity_metrics(emb, torch.full_like(emb, float("nan")), pairs, same, folds=2)
    with pytest.raises(ValueError, match="all-zero"):
        identity_metrics(emb, torch.zeros_like(emb), pairs, same, folds=2)
    m = identity_metrics(emb.numpy(), emb.numpy(), pairs.numpy(), same.numpy(), folds=2)  # numpy in
    assert m.accuracy == 1.0
    assert pair_verification(emb, pairs, same.tolist(), folds=2) == pair_verification(emb, pairs, same, folds=2)
    with pytest.raises(ValueError, match=r"same must have shape \(P,\)"):
        pair_verification(emb, pairs, same[:-1], folds=2)
    with pytest.raises(ValueError, match="folds must be between 2"):
        pair_verification(emb, pairs, same, folds=5)
