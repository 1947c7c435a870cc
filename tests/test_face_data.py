"""Face folders (one folder per identity), identity splits, balanced verification pairs and pairs files."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vqswitch.data import (FaceFolder, UnreadableImageWarning, draw_pairs, load_face_folder, read_pairs,
                           resolve_pair_image, split_identities)

SIDE = 16


def _colour(identity: int, image: int) -> tuple[int, int, int]:
    return (10 + 40 * identity, 20 + 30 * image, 200 - 10 * identity - 5 * image)


def _png(path: Path, colour, size=(SIDE, SIDE)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def faces(tmp_path) -> Path:
    """alice: 4 LFW-named images; bob: 3; carol: 1; dave: empty; erin: CelebA-style numbers with bad files."""
    root = tmp_path / "faces"
    for k in range(4):
        _png(root / "alice" / f"alice_{k + 1:04d}.png", _colour(0, k))
    for k in range(3):
        _png(root / "bob" / f"bob_{k + 1:04d}.png", _colour(1, k))
    _png(root / "carol" / "carol_0001.png", _colour(2, 0))
    (root / "dave").mkdir()
    erin = root / "erin"
    _png(erin / "001085.png", _colour(3, 0))
    (erin / "002000.png").write_bytes(b"this is not a png at all")  # non-image with an image name
    _png(erin / "003000.png", _colour(3, 1))
    full = (erin / "003000.png").read_bytes()
    (erin / "004000.png").write_bytes(full[: len(full) // 2])  # truncated
    _png(erin / "005000.png", _colour(3, 2), size=(4, 4))  # undersized with min_size=8
    _png(erin / "030251.png", _colour(3, 3))
    (erin / "notes.txt").write_text("not an image")
    (erin / ".DS_Store").write_bytes(b"\0")  # hidden: ignored silently
    _png(root / "stray.png", (1, 2, 3))  # an image with no identity
    return root


def _load(root, **kw) -> FaceFolder:
    with pytest.warns(UnreadableImageWarning, match="skipped"):
        return FaceFolder(root, size=SIDE, min_size=8, **kw)


def test_face_folder_reads_identities_labels_and_pixels(faces):
    ds = _load(faces)
    assert ds.identities == ["alice", "bob", "carol", "erin"]
    assert ds.labels.tolist() == [0] * 4 + [1] * 3 + [2] + [3] * 3
    assert len(ds) == 11 and ds.labels.dtype == torch.int64
    assert [p.name for p in ds.paths[-3:]] == ["001085.png", "003000.png", "030251.png"]
    expected = [_colour(0, k) for k in range(4)] + [_colour(1, k) for k in range(3)] + [_colour(2, 0)] + [
        _colour(3, k) for k in (0, 1, 3)]
    batch = ds.get_batch(range(len(ds)))
    assert batch.shape == (11, 3, SIDE, SIDE) and batch.dtype == torch.float32
    want = torch.tensor(expected, dtype=torch.float32)[:, :, None, None].expand(-1, -1, SIDE, SIDE) / 255
    assert torch.allclose(batch, want, atol=1e-6)
    assert torch.equal(ds[5], batch[5]) and torch.equal(ds[-1], batch[10])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        signed = FaceFolder(faces, size=SIDE, min_size=8, pixel_range=(-1.0, 1.0))
    assert torch.allclose(signed.get_batch(range(11)), want * 2 - 1, atol=1e-6)


def test_face_folder_reports_every_bad_path_with_a_reason(faces):
    with pytest.warns(UnreadableImageWarning) as record:
        ds = FaceFolder(faces, size=SIDE, min_size=8)
    assert len(record) == 1 and "skipped 6 path(s)" in str(record[0].message)
    reasons = {Path(p).name: r for p, r in ds.skipped}
    assert len(ds.skipped) == 6
    assert set(reasons) == {"002000.png", "004000.png", "005000.png", "notes.txt", "dave", "stray.png"}
    assert "min_size=8" in reasons["005000.png"] and "4x4" in reasons["005000.png"]
    assert "no readable image" in reasons["dave"]
    assert "not inside an identity folder" in reasons["stray.png"]
    assert "not an image file" in reasons["notes.txt"]
    assert "Error" in reasons["002000.png"] and "Error" in reasons["004000.png"]
    assert ".DS_Store" not in reasons
    # without min_size the 4x4 image is kept (upscaled to SIDE)
    with pytest.warns(UnreadableImageWarning):
        loose = FaceFolder(faces, size=SIDE)
    assert len(loose) == 12 and "005000.png" not in {Path(p).name for p, _ in loose.skipped}


def test_face_folder_resizes_and_center_crops(tmp_path):
    root = tmp_path / "r"
    img = np.zeros((20, 40, 3), dtype=np.uint8)
    img[:, 10:30] = 255  # white centre square of a 40x20 image
    (root / "a").mkdir(parents=True)
    Image.fromarray(img).save(root / "a" / "x.png")
    ds = FaceFolder(root, size=10)
    x = ds[0]
    assert x.shape == (3, 10, 10)
    assert float(x.min()) > 0.9  # only the white centre survives the centre crop


def test_face_folder_without_cache_matches_and_subset_of_identities(faces):
    cached = _load(faces)
    lazy = _load(faces, cache=False)
    assert torch.equal(cached.get_batch(range(11)), lazy.get_batch(range(11)))
    with pytest.warns(UnreadableImageWarning):  # erin's bad files are still reported
        some = FaceFolder(faces, size=SIDE, min_size=8, identities=["erin", "bob"])
    assert some.identities == ["bob", "erin"] and some.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert "stray.png" not in {Path(p).name for p, _ in some.skipped}
    with pytest.raises(ValueError, match="zed"):
        FaceFolder(faces, size=SIDE, identities=["alice", "zed"])
    with pytest.raises(TypeError, match="identities"):
        FaceFolder(faces, size=SIDE, identities="alice")


def test_face_folder_bad_arguments_and_empty_folders(tmp_path, faces):
    with pytest.raises(ValueError, match="not an existing folder"):
        FaceFolder(tmp_path / "missing")
    with pytest.raises(TypeError, match="root"):
        FaceFolder(3)
    with pytest.raises(ValueError, match="min_size"):
        FaceFolder(faces, min_size=0)
    with pytest.raises(ValueError, match="size"):
        FaceFolder(faces, size=0)
    bad = tmp_path / "bad"
    (bad / "p").mkdir(parents=True)
    (bad / "p" / "a.png").write_bytes(b"junk")
    (bad / "q").mkdir()
    with pytest.warns(UnreadableImageWarning), pytest.raises(ValueError, match="no identity folder with a readable"):
        FaceFolder(bad)


def test_index_of_resolves_lfw_names_and_nth_images(faces):
    ds = _load(faces)
    assert ds.index_of("alice", 3, ext="png") == 2  # alice/alice_0003.png
    assert ds.index_of("bob", 1, ext="png") == 4
    # erin has no LFW names: the n-th image file by name, counting skipped ones (002000.png is number 2)
    assert ds.paths[ds.index_of("erin", 1, ext="png")].name == "001085.png"
    assert ds.paths[ds.index_of("erin", 3, ext="png")].name == "003000.png"
    assert ds.paths[ds.index_of("erin", 6, ext="png")].name == "030251.png"
    with pytest.raises(ValueError, match="skipped.*Error"):
        ds.index_of("erin", 2, ext="png")
    with pytest.raises(FileNotFoundError, match="only 6 image"):
        ds.index_of("erin", 7, ext="png")
    with pytest.raises(FileNotFoundError, match="zed"):
        ds.index_of("zed", 1)


def _pairs_file(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


def test_load_face_folder_uses_pairs_txt_in_both_forms(faces):
    # 2 sets of 1 same + 1 different: LFW form for alice/bob, n-th-image form for erin
    _pairs_file(faces / "pairs.txt", "2 1", ["alice 1 4", "alice 2 erin 6", "erin 1 3", "bob 3 carol 1"])
    with pytest.warns(UnreadableImageWarning):
        data = load_face_folder(faces, SIDE, min_size=8, ext="png")
    assert data.pairs_source.endswith("pairs.txt") and data.folds == 2
    names = [(data.paths[a].name, data.paths[b].name) for a, b in data.pairs.tolist()]
    assert names == [("alice_0001.png", "alice_0004.png"), ("alice_0002.png", "030251.png"),
                     ("001085.png", "003000.png"), ("bob_0003.png", "carol_0001.png")]
    assert data.same.tolist() == [True, False, True, False]
    assert data.images.shape == (11, 3, SIDE, SIDE) and data.labels.shape == (11,)
    lab = data.labels
    assert torch.equal(lab[data.pairs[:, 0]] == lab[data.pairs[:, 1]], data.same)
    assert data.identities == ["alice", "bob", "carol", "erin"] and len(data.skipped) == 6


def test_load_face_folder_pairs_file_errors_name_the_line(faces):
    f = _pairs_file(faces / "p1.txt", "1", ["alice 1 2", "alice 1 erin 2"])  # erin 2 is the non-image
    with pytest.warns(UnreadableImageWarning), pytest.raises(ValueError, match=r"p1.txt: line 3: .*skipped"):
        load_face_folder(faces, SIDE, min_size=8, pairs=f, ext="png")
    f = _pairs_file(faces / "p2.txt", "1", ["zed 1 2", "alice 1 bob 2"])
    with pytest.warns(UnreadableImageWarning), pytest.raises(FileNotFoundError, match=r"p2.txt: line 2: .*zed"):
        load_face_folder(faces, SIDE, min_size=8, pairs=f, ext="png")
    f = _pairs_file(faces / "p3.txt", "1", ["alice 1 2", "alice 1 bob 9"])
    with pytest.warns(UnreadableImageWarning), pytest.raises(FileNotFoundError, match=r"line 3: .*bob"):
        load_face_folder(faces, SIDE, min_size=8, pairs=f, ext="png")
    f = _pairs_file(faces / "p4.txt", "1", ["alice 1 2", "alice 1 erin 1"])
    with pytest.raises(ValueError, match=r"line 3: .*not selected"):  # alice and bob hold no bad file: no warning
        load_face_folder(faces, SIDE, min_size=8, pairs=f, ext="png", identities=["alice", "bob"])
    with pytest.warns(UnreadableImageWarning), pytest.raises(TypeError, match="pairs"):
        load_face_folder(faces, SIDE, pairs=3)


def test_load_face_folder_draws_pairs_without_a_pairs_file(faces):
    _pairs_file(faces / "pairs.txt", "1", ["alice 1 2", "alice 1 bob 1"])
    with pytest.warns(UnreadableImageWarning):
        data = load_face_folder(faces, SIDE, min_size=8, pairs="draw", num_pairs=8, folds=2, seed=3)
    assert data.pairs_source == "drawn" and data.folds == 2 and data.pairs.shape == (8, 2)
    lab = data.labels
    assert torch.equal(lab[data.pairs[:, 0]] == lab[data.pairs[:, 1]], data.same)
    with pytest.warns(UnreadableImageWarning):
        again = load_face_folder(faces, SIDE, min_size=8, pairs="draw", num_pairs=8, folds=2, seed=3)
    assert torch.equal(again.pairs, data.pairs)


def test_read_pairs_resolves_on_the_identity_folder_layout(faces):
    f = _pairs_file(faces / "pairs.txt", "1", ["erin 1 6", "alice 2 erin 3"])
    pairs = read_pairs(f, faces, ext="png", resolve=True)
    assert [(a.name, b.name, s) for a, b, s in pairs] == [("001085.png", "030251.png", True),
                                                         ("alice_0002.png", "003000.png", False)]
    # without resolve: LFW paths as before, unchecked
    assert read_pairs(f, faces, ext="png")[0][0] == faces / "erin" / "erin_0001.png"
    bad = _pairs_file(faces / "bad.txt", "1", ["erin 1 2", "alice 2 erin 9"])
    with pytest.raises(FileNotFoundError, match=r"bad.txt: line 3: erin 9"):
        read_pairs(bad, faces, ext="png", resolve=True)
    # extensions widen what counts as an image of the n-th form (the .txt file becomes number 7)
    assert resolve_pair_image(faces, "erin", 7, "png", extensions=(".png", ".txt")).name == "notes.txt"
    with pytest.raises(ValueError, match="name"):
        resolve_pair_image(faces, "../faces", 1)


# ------------------------------------------------------------------------------------------------ split_identities

names = st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=4), min_size=2, max_size=40, unique=True)


@given(ids=names, frac=st.floats(0.01, 0.99), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_split_identities_is_a_deterministic_partition(ids, frac, seed):
    train, test = split_identities(ids, frac, seed)
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(ids)
    assert train == sorted(train) and test == sorted(test)
    assert 1 <= len(test) <= len(ids) - 1
    assert len(test) == min(len(ids) - 1, max(1, round(frac * len(ids))))
    assert split_identities(list(reversed(ids)) + ids[:1], frac, seed) == (train, test)  # order, duplicates


def test_split_identities_depends_on_seed_and_takes_labels():
    ids = [f"id{k:03d}" for k in range(100)]
    splits = {tuple(split_identities(ids, 0.3, s)[1]) for s in range(5)}
    assert len(splits) == 5
    train, test = split_identities(torch.tensor([5, 5, 7, 9, 11]), 0.5, 0)
    assert sorted(train + test) == [5, 7, 9, 11] and len(test) == 2
    with pytest.raises(ValueError, match="at least 2"):
        split_identities(["a", "a"])
    with pytest.raises(ValueError, match="test_fraction"):
        split_identities(["a", "b"], 1.0)
    with pytest.raises(TypeError, match="all str"):
        split_identities(["a", 1])
    with pytest.raises(TypeError, match="identities"):
        split_identities("ab")


# ------------------------------------------------------------------------------------------------ draw_pairs


@st.composite
def pair_problems(draw):
    counts = draw(st.lists(st.integers(1, 8), min_size=2, max_size=12))
    labels = [g for g, c in enumerate(counts) for _ in range(c)]
    labels = draw(st.permutations(labels))
    n = len(labels)
    same_total = sum(c * (c - 1) // 2 for c in counts)
    diff_total = n * (n - 1) // 2 - same_total
    folds = draw(st.integers(1, 5))
    most = min(same_total, diff_total) // folds
    if most < 1:
        folds, most = 1, min(same_total, diff_total)
    k = draw(st.integers(1, max(1, most)))
    return list(labels), 2 * folds * k, folds, same_total, diff_total


@given(problem=pair_problems(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=80, deadline=None)
def test_draw_pairs_balanced_valid_unique_and_fold_balanced(problem, seed):
    labels, num_pairs, folds, same_total, diff_total = problem
    if min(same_total, diff_total) < num_pairs // 2:
        with pytest.raises(ValueError, match="admit only"):
            draw_pairs(labels, num_pairs, folds, seed)
        return
    pairs, same = draw_pairs(labels, num_pairs, folds, seed)
    assert pairs.shape == (num_pairs, 2) and pairs.dtype == torch.int64 and same.dtype == torch.bool
    lab = torch.tensor(labels)
    assert bool((pairs[:, 0] < pairs[:, 1]).all())  # two different images, canonical order
    assert bool((pairs >= 0).all()) and bool((pairs < len(labels)).all())
    assert torch.equal(lab[pairs[:, 0]] == lab[pairs[:, 1]], same)  # "same" is true exactly for one identity
    assert len({tuple(p) for p in pairs.tolist()}) == num_pairs  # no pair twice
    size = num_pairs // folds
    for f in range(folds):
        assert int(same[f * size:(f + 1) * size].sum()) == size // 2
    again = draw_pairs(labels, num_pairs, folds, seed)
    assert torch.equal(again[0], pairs) and torch.equal(again[1], same)


def test_draw_pairs_singletons_give_no_same_pairs_and_errors():
    labels = [0, 1, 2, 3, 4, 4]  # only identity 4 can give a same pair
    pairs, same = draw_pairs(labels, 2, folds=1)
    assert pairs[same].tolist() == [[4, 5]]
    with pytest.raises(ValueError, match="admit only 1 distinct same"):
        draw_pairs(labels, 4, folds=1)
    with pytest.raises(ValueError, match="different-identity"):
        draw_pairs([0, 0, 0], 2, folds=1)
    with pytest.raises(ValueError, match="multiple of 2 \\* folds = 20"):
        draw_pairs(list(range(50)) * 2, 30, folds=10)
    with pytest.raises(TypeError, match="labels"):
        draw_pairs([0.5, 1.0], 2, folds=1)
    # a big pool is sampled, not enumerated, and still valid
    big = np.repeat(np.arange(300), 20)
    pairs, same = draw_pairs(big, 2000, folds=10, seed=1)
    lab = torch.from_numpy(big)
    assert torch.equal(lab[pairs[:, 0]] == lab[pairs[:, 1]], same) and int(same.sum()) == 1000
    assert len({tuple(p) for p in pairs.tolist()}) == 2000


# ------------------------------------------------------------------------------------------------ the real folder

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-faces-64"


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared CelebA folder is not beside the checkout")
def test_real_celeba_folder_split_and_pairs():
    names = sorted(p.name for p in SHARED.iterdir() if p.is_dir())
    train, test = split_identities(names, 0.04, seed=0)  # ~10 identities keeps this fast
    data = load_face_folder(SHARED, 64, identities=test, num_pairs=100, folds=10)
    assert data.images.shape[1:] == (3, 64, 64) and len(data.identities) == len(test)
    assert not set(data.identities) & set(train) and data.skipped == []
    assert {p.parent.name for p in data.paths} == set(test)
    lab = data.labels
    assert torch.equal(lab[data.pairs[:, 0]] == lab[data.pairs[:, 1]], data.same)


# ------------------------------------------------------------------------------------------------ pairs files
PAIRS = """2\t2
Abel_Pacheco\t1\t4
Akhmed_Zakayev\t1\t3
Abdel_Madi_Shabneh\t1\tDean_Barker\t1
Abdel_Madi_Shabneh\t1\tGiancarlo_Fisichella\t1

Abdullah_Gul\t13\t14
Abdullah_Gul\t13\t16
Abdel_Aziz_Al-Hakim\t1\tStanley_Tong\t12
Abdullah\t2\tRaymond_Arthurs\t1
"""


def test_read_pairs(tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_text(PAIRS)
    pairs = read_pairs(f, tmp_path / "lfw", ext=".jpg")
    assert len(pairs) == 8
    assert [p[2] for p in pairs] == [True, True, False, False, True, True, False, False]
    assert pairs[0][:2] == (tmp_path / "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg",
                            tmp_path / "lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg")
    assert pairs[6][:2] == (tmp_path / "lfw/Abdel_Aziz_Al-Hakim/Abdel_Aziz_Al-Hakim_0001.jpg",
                            tmp_path / "lfw/Stanley_Tong/Stanley_Tong_0012.jpg")
    assert read_pairs(f, "imgs", ext="png")[5][1].as_posix() == "imgs/Abdullah_Gul/Abdullah_Gul_0016.png"
    one = tmp_path / "dev.txt"
    one.write_text("1\nA 1 2\nA 1 B 2\n")  # single-number header: one set
    assert [p[2] for p in read_pairs(one, "r")] == [True, False]


@pytest.mark.parametrize("text,match", [
    ("2\t2\nAbel_Pacheco\t1\n", "line 2: expected 'name idx1 idx2'"),
    ("1 1\nA 1 2\nA 1 B 2 C\n", "line 3: expected"),
    ("1 1\nA 1 2\n\nA x B 2\n", "line 4: image index must be a positive integer"),
    ("1 1\nA 0 2\nA 1 B 2\n", "line 2: image index"),
    ("ten 300\nA 1 2\n", "line 1: expected a header"),
    ("", "line 1"),
    ("1 2\nA 1 2\nA 1 B 2\n", "promises 1 set"),
])
def test_read_pairs_malformed(tmp_path, text, match):
    f = tmp_path / "pairs.txt"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_pairs(f, tmp_path)
