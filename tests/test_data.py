"""Tests of vqswitch.data: procedural faces, the image-folder loader, batching and image grids."""
import io
import math
import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vqswitch.data import (HAIR_STYLES, ImageFolder, ProceduralFaces, UnreadableImageWarning, face_attributes,
                           iterate_batches, procedural_faces, save_image_grid)


@pytest.fixture(scope="module")
def Image():
    return pytest.importorskip("PIL.Image")


# ================================================================ procedural faces


def test_faces_shape_dtype_range():
    x = procedural_faces(6, size=24, seed=3)
    assert x.shape == (6, 3, 24, 24) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    y = procedural_faces(6, size=24, seed=3, pixel_range=(-1.0, 1.0))
    assert y.min() >= -1 and y.max() <= 1 and y.min() < 0
    torch.testing.assert_close(y, x * 2 - 1, atol=1e-6, rtol=0)
    assert procedural_faces(0, size=8).shape == (0, 3, 8, 8)


def test_faces_deterministic_and_seed_dependent():
    a, b = procedural_faces(8, size=32, seed=5), procedural_faces(8, size=32, seed=5)
    assert torch.equal(a, b)
    c = procedural_faces(8, size=32, seed=6)
    assert (a - c).abs().mean() > 0.05
    # every image differs from every other one
    flat = a.flatten(1)
    d = torch.cdist(flat, flat)
    assert (d + torch.eye(8) * 1e9).min() > 1.0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 39), min_size=1, max_size=12), st.integers(0, 2**40), st.sampled_from([17, 32]))
def test_faces_order_independent(indices, seed, size):
    """Image i depends only on (seed, i): not on the other images of the batch, their order or their number."""
    full = procedural_faces(40, size=size, seed=seed, num_identities=7)
    ds = ProceduralFaces(40, size=size, seed=seed, num_identities=7)
    assert torch.equal(ds.get_batch(indices), full[indices])
    assert torch.equal(ds[indices[-1]], full[indices[-1]])
    k = min(indices[0], 37)
    assert torch.equal(procedural_faces(3, size=size, seed=seed, num_identities=7, start=k), full[k:k + 3])


def test_faces_have_structure():
    x = procedural_faces(32, size=32, seed=1)
    assert (x.flatten(1).std(1) > 0.08).all()  # not flat images
    centre = x[:, :, 12:20, 12:20].mean((2, 3))  # the middle of the face (eyes, nose)
    corner = x[:, :, :3, :3].mean((2, 3))  # background
    assert ((centre - corner).abs().sum(1) > 0.1).float().mean() >= 0.9
    # aligned: the mean image has a face in it, so it is far from flat (a misaligned set would average out)
    assert x.mean(0).std() > 0.05


def test_face_corner_is_background_times_lighting():
    """The rendering follows face_attributes: a corner pixel is the background colour under the lighting."""
    size = 40
    x = procedural_faces(20, size=size, seed=9)
    c = (0.5 / size) * 2 - 1  # the top-left pixel centre
    for i in range(20):
        t = face_attributes(9, i)
        light = t["brightness"] * (1 + t["light_strength"] * (math.cos(t["light_direction"]) * c
                                                              + math.sin(t["light_direction"]) * c))
        expected = torch.tensor(t["background"]).clamp(0, 1) * light
        torch.testing.assert_close(x[i, :, 0, 0], expected.clamp(0, 1).float(), atol=1e-4, rtol=0)


def test_same_identity_is_closer_than_different_identity():
    ds = ProceduralFaces(48, size=32, seed=2, num_identities=6)
    x = ds.get_batch(range(48)).flatten(1)
    mse = torch.cdist(x, x) ** 2 / x.shape[1]
    same = ds.identities[:, None] == ds.identities[None, :]
    off = ~torch.eye(48, dtype=torch.bool)
    within, between = mse[same & off].mean(), mse[~same].mean()
    assert within < 0.5 * between, (within, between)
    assert (mse[same & off] > 0).all()  # alike, never identical: pose and lighting change per image


def test_face_attributes():
    t = face_attributes(4, 13, num_identities=5)
    assert t["identity"] == 3 and t["index"] == 13 and t["seed"] == 4
    assert t["hair_style"] in HAIR_STYLES and isinstance(t["glasses"], bool)
    assert len(t["skin"]) == 3 and all(0 <= c <= 1 for c in t["skin"])
    same = face_attributes(4, 8, num_identities=5)  # identity 3 again
    for key in ("skin", "hair_style", "hair_colour", "eye_spacing", "face_width", "glasses", "iris_colour"):
        assert same[key] == t[key], key
    assert same["shift"] != t["shift"] and same["angle"] != t["angle"]
    other = face_attributes(4, 9, num_identities=5)
    assert other["identity"] == 4 and other["face_width"] != t["face_width"]
    t["skin"] = None  # the caller's dict is its own
    assert face_attributes(4, 13, num_identities=5)["skin"] is not None
    styles = {face_attributes(0, i, num_identities=200)["hair_style"] for i in range(200)}
    assert styles == set(HAIR_STYLES)


@pytest.mark.parametrize("call, exc, name", [
    (lambda: procedural_faces(-1), ValueError, "n"),
    (lambda: procedural_faces(2.0), TypeError, "n"),
    (lambda: procedural_faces(2, size=0), ValueError, "size"),
    (lambda: procedural_faces(2, seed=-3), ValueError, "seed"),
    (lambda: procedural_faces(2, seed=True), TypeError, "seed"),
    (lambda: procedural_faces(2, pixel_range=(1.0, 0.0)), ValueError, "pixel_range"),
    (lambda: procedural_faces(2, pixel_range=(0.0, float("inf"))), ValueError, "pixel_range"),
    (lambda: procedural_faces(2, pixel_range="01"), TypeError, "pixel_range"),
    (lambda: procedural_faces(2, num_identities=0), ValueError, "num_identities"),
    (lambda: procedural_faces(2, start=-1), ValueError, "start"),
    (lambda: face_attributes(0, -1), ValueError, "i"),
    (lambda: ProceduralFaces(3, size="64"), TypeError, "size"),
])
def test_faces_argument_errors(call, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        call()


def test_procedural_dataset():
    ds = ProceduralFaces(10, size=16, seed=1, num_identities=4, pixel_range=(-1, 1))
    full = procedural_faces(10, size=16, seed=1, num_identities=4, pixel_range=(-1, 1))
    assert len(ds) == 10 and torch.equal(ds.identities, torch.arange(10) % 4)
    assert torch.equal(ds[-1], full[9]) and torch.equal(ds[3], full[3])
    assert torch.equal(ds.get_batch(torch.tensor([2, 5])), full[[2, 5]])
    assert ds.attributes(6)["identity"] == 2
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(TypeError, match="index"):
        ds[1.0]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)  # uses __getitems__
    assert torch.equal(torch.cat(list(loader)), full)


def test_verification_pairs():
    ds = ProceduralFaces(30, size=8, num_identities=7)
    pairs, same = ds.verification_pairs(21, seed=3)
    assert pairs.shape == (21, 2) and same.shape == (21,) and same.sum() == 11
    ids = ds.identities
    assert torch.equal(ids[pairs[:, 0]] == ids[pairs[:, 1]], same)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    again = ds.verification_pairs(21, seed=3)
    assert torch.equal(again[0], pairs) and torch.equal(again[1], same)
    assert not torch.equal(ds.verification_pairs(21, seed=4)[0], pairs)
    with pytest.raises(ValueError, match="no identity has two images"):
        ProceduralFaces(5, num_identities=8).verification_pairs(4)
    with pytest.raises(ValueError, match="one identity"):
        ProceduralFaces(5, num_identities=1).verification_pairs(4)


# ================================================================ image folders


def _solid(Image, w, h, colour, mode="RGB"):
    return Image.new(mode, (w, h), colour)


@pytest.fixture
def folder(tmp_path, Image):
    """A small tree of images of several sizes and modes, a corrupt file and a non-image file."""
    root = tmp_path / "images"
    (root / "sub" / "z_deeper").mkdir(parents=True)
    half = Image.new("RGB", (40, 20), (255, 0, 0))  # left half red, right half blue
    half.paste((0, 0, 255), (20, 0, 40, 20))
    half.save(root / "a_halves.png")
    _solid(Image, 64, 48, (10, 200, 30)).save(root / "b_green.jpg", quality=98)
    rgba = Image.new("RGBA", (20, 50), (0, 0, 0, 0))  # fully transparent -> white
    rgba.save(root / "c_clear.png")
    _solid(Image, 33, 33, 128, "L").save(root / "sub" / "d_grey.png")
    pal = _solid(Image, 30, 30, (0, 0, 255)).convert("P")
    pal.save(root / "sub" / "e_palette.png")
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(root / "sub" / "f_grey16.png")
    (root / "sub" / "g_corrupt.png").write_bytes(np.random.default_rng(0).bytes(300))
    _solid(Image, 18, 18, (250, 250, 0)).save(root / "sub" / "z_deeper" / "H_YELLOW.BMP")
    (root / "notes.txt").write_text("not an image")
    return root


def _names(ds):
    return [p.name for p in ds.paths]


def test_folder_listing_is_sorted_recursive_and_filtered(folder):
    ds = ImageFolder(folder, size=8)
    assert _names(ds) == ["a_halves.png", "b_green.jpg", "c_clear.png", "d_grey.png", "e_palette.png",
                          "f_grey16.png", "g_corrupt.png", "H_YELLOW.BMP"]
    assert _names(ImageFolder(str(folder), size=8, extensions=".jpg")) == ["b_green.jpg"]


def test_folder_items(folder):
    ds = ImageFolder(folder, size=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        items = [ds[i] for i in range(len(ds))]
    for x in items:
        assert x.shape == (3, 10, 10) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    halves, green, clear, grey, pal, grey16 = items[:6]
    # 40x20 -> 20x10, centre crop = columns 5..14: the left 5 red, the right 5 blue
    assert torch.equal(halves[:, :, 0], torch.tensor([1.0, 0, 0])[:, None].expand(3, 10))
    assert torch.equal(halves[:, :, -1], torch.tensor([0, 0, 1.0])[:, None].expand(3, 10))
    torch.testing.assert_close(green.mean((1, 2)), torch.tensor([10, 200, 30]) / 255.0, atol=0.03, rtol=0)
    assert torch.equal(clear, torch.ones(3, 10, 10))  # transparency over white
    torch.testing.assert_close(grey, torch.full((3, 10, 10), 128 / 255.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(pal, torch.tensor([0, 0, 1.0])[:, None, None].expand(3, 10, 10), atol=1e-6, rtol=0)
    assert torch.equal(grey16, torch.ones(3, 10, 10))  # 16-bit white stays white, not clipped garbage
    signed = ImageFolder(folder, size=10, pixel_range=(-1, 1))[0]
    torch.testing.assert_close(signed, halves * 2 - 1, atol=1e-6, rtol=0)
    ds.validate()  # a DataLoader and iterate_batches both batch the folder
    loaded = torch.cat(list(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert loaded.shape == (7, 3, 10, 10) and torch.equal(loaded, torch.cat(list(iterate_batches(ds, 3))))


def test_folder_skips_corrupt_file_and_reports_it(folder):
    ds = ImageFolder(folder, size=8)
    bad = _names(ds).index("g_corrupt.png")
    with pytest.warns(UnreadableImageWarning, match="g_corrupt.png") as record:
        x = ds[bad]
    assert len(record) == 1
    assert torch.equal(x, ds[bad + 1])  # the next readable image stands in
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("g_corrupt.png") and ds.skipped[0][1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file already known to be bad warns only once
        for i in range(len(ds)):
            assert ds[i].shape == (3, 8, 8)
    assert len(ds.skipped) == 1 and len(ds) == 8


def test_folder_validate_drops_bad_files(folder):
    ds = ImageFolder(folder, size=8)
    with pytest.warns(UnreadableImageWarning):
        found = ds.validate()
    assert [os.path.basename(p) for p, _ in found] == ["g_corrupt.png"]
    assert "g_corrupt.png" not in _names(ds) and len(ds) == 7


def test_folder_with_only_unreadable_files(tmp_path, Image):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG signature, then garbage
    (tmp_path / "y.jpg").write_text("hello")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    (tmp_path / "z.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # opens, fails to load
    ds = ImageFolder(tmp_path, size=8)
    with pytest.warns(UnreadableImageWarning):
        with pytest.raises(ValueError, match="no readable image"):
            ds[0]
    assert sorted(os.path.basename(p) for p, _ in ds.skipped) == ["x.png", "y.jpg", "z.png"]
    assert all(reason for _, reason in ds.skipped)
    with pytest.warns(UnreadableImageWarning), pytest.raises(ValueError, match=str(tmp_path)):
        ImageFolder(tmp_path, size=8).validate()


def test_folder_errors(tmp_path, folder):
    with pytest.raises(ValueError, match="holds no image file") as e:
        ImageFolder(tmp_path / "images" / "sub" / "z_deeper", size=8, extensions=(".png",))
    assert "z_deeper" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        ImageFolder(empty, size=8)
    with pytest.raises(ValueError, match="not an existing folder"):
        ImageFolder(tmp_path / "missing", size=8)
    with pytest.raises(TypeError, match="root"):
        ImageFolder(3, size=8)
    with pytest.raises(ValueError, match="size"):
        ImageFolder(folder, size=0)
    with pytest.raises(ValueError, match="crop"):
        ImageFolder(folder, size=8, crop="top")
    with pytest.raises(TypeError, match="flip"):
        ImageFolder(folder, size=8, flip=1)
    with pytest.raises(ValueError, match="extensions"):
        ImageFolder(folder, size=8, extensions=("png",))
    with pytest.raises(ValueError, match="epoch"):
        ImageFolder(folder, size=8).set_epoch(-1)


@pytest.fixture
def stripes(tmp_path, Image):
    """Three wide, left-right asymmetric images: a horizontal ramp, so a crop's window and a flip are visible."""
    ramp = np.tile(np.linspace(0, 255, 96).astype(np.uint8)[None, :, None], (24, 1, 3))
    for k in range(3):
        Image.fromarray(ramp).save(tmp_path / f"s{k}.png")
    return tmp_path


def test_random_crop_and_flip_are_seeded(stripes):
    def run(seed, epoch, **kw):
        ds = ImageFolder(stripes, size=12, crop="random", flip=True, seed=seed, **kw)
        ds.set_epoch(epoch)
        return torch.stack([ds[i] for i in range(len(ds))])

    a = run(0, 0)
    assert torch.equal(a, run(0, 0))
    epochs = [run(0, e) for e in range(12)]
    assert any(not torch.equal(a, b) for b in epochs[1:]) and not torch.equal(a, run(1, 0))
    # each output is a 12x12 window of the 48x12 resized ramp, maybe mirrored: rows identical, a monotone ramp
    flipped = 0
    for x in torch.cat(epochs):
        assert torch.equal(x, x[:, :1, :].expand_as(x))
        row = x[0, 0]
        increasing, decreasing = (row.diff() >= 0).all(), (row.diff() <= 0).all()
        assert increasing or decreasing
        flipped += bool(decreasing and not increasing)
    assert 0 < flipped < 36  # both flipped and unflipped occur
    # windows differ from epoch to epoch (the left edge's value shifts)
    assert len({round(float(x[0, 0].min()), 3) for x in torch.cat(epochs)}) > 3


def test_center_crop_without_flip_ignores_seed_and_epoch(stripes):
    a = ImageFolder(stripes, size=12, seed=0)
    b = ImageFolder(stripes, size=12, seed=7)
    b.set_epoch(3)
    assert torch.equal(a[0], b[0])
    assert (a[0][0, 0].diff() > 0).all()  # not flipped


# ================================================================ iterate_batches


def _images(n, h=4, w=5, seed=0):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_batches_from_tensor():
    x = _images(10)
    batches = list(iterate_batches(x, 4))
    assert [b.shape[0] for b in batches] == [4, 4, 2] and torch.equal(torch.cat(batches), x)
    assert [b.shape[0] for b in iterate_batches(x, 4, drop_last=True)] == [4, 4]
    shuffled = torch.cat(list(iterate_batches(x, 3, shuffle=True, seed=1)))
    assert not torch.equal(shuffled, x)
    perm = [int(torch.nonzero((x == row).all(dim=(1, 2, 3)))[0]) for row in shuffled]
    assert sorted(perm) == list(range(10))
    assert torch.equal(shuffled, torch.cat(list(iterate_batches(x, 5, shuffle=True, seed=1))))
    assert not torch.equal(shuffled, torch.cat(list(iterate_batches(x, 3, shuffle=True, seed=2))))


def test_batches_from_datasets():
    ds = ProceduralFaces(7, size=8)
    batches = list(iterate_batches(ds, 3))
    assert [b.shape for b in batches] == [(3, 3, 8, 8)] * 2 + [(1, 3, 8, 8)]
    assert torch.equal(torch.cat(batches), ds.get_batch(range(7)))

    class Plain(torch.utils.data.Dataset):  # no get_batch: items one by one
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return torch.full((3, 2, 2), float(i))

    got = torch.cat(list(iterate_batches(Plain(), 2, shuffle=True, seed=0)))
    assert sorted(got[:, 0, 0, 0].tolist()) == [0, 1, 2, 3, 4]

    class Pairs(Plain):
        def __getitem__(self, i):
            return torch.zeros(3, 2, 2), i

    with pytest.raises(ValueError, match=r"data\[0\] must be one image"):
        next(iterate_batches(Pairs(), 2))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5)), max_size=8), st.integers(1, 6), st.booleans(),
       st.booleans())
def test_batches_from_iterables(items, batch_size, drop_last, as_list):
    """Rows of any mix of single images and batches come out in order, regrouped into batch_size batches."""
    tensors = [_images(1, seed=k)[0] if single else _images(n, seed=k) for k, (single, n) in enumerate(items)]
    rows = torch.cat([t.unsqueeze(0) if t.dim() == 3 else t for t in tensors]) if tensors else torch.zeros(0, 3, 4, 5)
    data = list(tensors) if as_list else (t for t in tensors)
    batches = list(iterate_batches(data, batch_size, drop_last=drop_last))
    n = rows.shape[0]
    keep = n - n % batch_size if drop_last else n
    assert [b.shape[0] for b in batches] == [min(batch_size, keep - s) for s in range(0, keep, batch_size)]
    assert torch.equal(torch.cat(batches) if batches else rows[:0], rows[:keep])


def test_batches_shuffle_a_list_of_tensors():
    data = [_images(3, seed=1), _images(1, seed=2)[0], _images(2, seed=3)]
    rows = torch.cat([data[0], data[1][None], data[2]])
    batches = list(iterate_batches(data, 4, shuffle=True, seed=5))
    assert [b.shape[0] for b in batches] == [4, 2]
    out = torch.cat(batches)
    assert out.shape == rows.shape and not torch.equal(out, rows)
    match = [[k for k in range(6) if torch.equal(row, rows[k])] for row in out]  # a permutation of the rows
    assert sorted(m[0] for m in match) == list(range(6)) and all(len(m) == 1 for m in match)


@pytest.mark.parametrize("data, kwargs, exc, match", [
    (torch.zeros(2, 3, 4, 4), {"batch_size": 0}, ValueError, "batch_size"),
    (torch.zeros(2, 3, 4, 4), {"batch_size": 2, "shuffle": 1}, TypeError, "shuffle"),
    (torch.zeros(2, 3, 4, 4), {"batch_size": 2, "seed": -1}, ValueError, "seed"),
    (torch.zeros(3, 4, 4), {"batch_size": 2}, ValueError, r"\(N, 3, H, W\)"),
    (torch.zeros(2, 1, 4, 4), {"batch_size": 2}, ValueError, "got"),
    (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), {"batch_size": 2}, TypeError, "floating"),
    (5, {"batch_size": 2}, TypeError, "data"),
])
def test_batches_argument_errors(data, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        iterate_batches(data, **kwargs)


def test_batches_of_no_image():
    assert list(iterate_batches(torch.zeros(0, 3, 4, 4), 2)) == [] and list(iterate_batches([], 2)) == []
    got = list(iterate_batches(iter([torch.zeros(0, 3, 2, 2), torch.ones(3, 2, 2)]), 4))  # an empty item is nothing
    assert len(got) == 1 and torch.equal(got[0], torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"\(0, 1, 4, 4\)"):
        iterate_batches(torch.zeros(0, 1, 4, 4), 2)


def test_batches_item_errors():
    with pytest.raises(TypeError, match="item 1"):
        list(iterate_batches(iter([torch.zeros(3, 2, 2), "x"]), 4))
    with pytest.raises(TypeError, match="floating"):
        list(iterate_batches([torch.zeros(3, 2, 2, dtype=torch.int64)], 4))
    with pytest.raises(ValueError, match=r"data\[1\]"):
        list(iterate_batches([torch.zeros(3, 2, 2), torch.zeros(2, 2)], 4))
    with pytest.raises(ValueError, match="share H and W"):
        list(iterate_batches(iter([torch.zeros(3, 2, 2), torch.zeros(3, 2, 3)]), 4))
    with pytest.raises(ValueError, match="shuffle"):
        iterate_batches(iter([torch.zeros(3, 2, 2)]), 4, shuffle=True)


# ================================================================ image grids


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 7), st.integers(1, 4), st.integers(0, 3), st.sampled_from([(0.0, 1.0), (-1.0, 1.0)]))
def test_grid_round_trip(tmp_path, Image, n, nrow, padding, pixel_range):
    lo, hi = pixel_range
    h, w = 3, 5
    levels = torch.randint(0, 256, (n, 3, h, w), generator=torch.Generator().manual_seed(n * 31 + nrow))
    images = lo + (hi - lo) * levels.float() / 255
    path = tmp_path / f"grid_{n}_{nrow}_{padding}.png"
    assert save_image_grid(images, path, nrow=nrow, pixel_range=pixel_range, padding=padding) == path
    with Image.open(path) as im:
        assert im.mode == "RGB"
        got = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    cols, rows = min(nrow, n), -(-n // nrow)
    assert got.shape == (3, rows * h + (rows + 1) * padding, cols * w + (cols + 1) * padding)
    for k in range(n):
        r, c = divmod(k, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        assert torch.equal(got[:, top:top + h, left:left + w], levels[k].to(torch.uint8))
    mask = torch.ones_like(got, dtype=torch.bool)  # everything outside the images is padding (black)
    for k in range(n):
        r, c = divmod(k, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        mask[:, top:top + h, left:left + w] = False
    assert (got[mask] == 0).all()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_grid_clamps_and_accepts_one_image_and_grey(tmp_path, Image):
    x = torch.tensor([[-3.0, 0.5], [float("nan"), 7.0]]).expand(3, 2, 2)
    save_image_grid(x, tmp_path / "one.png", padding=0)
    with Image.open(tmp_path / "one.png") as im:
        px = np.asarray(im)
    assert px.shape == (2, 2, 3)
    assert px[0, 0].tolist() == [0, 0, 0] and px[0, 1].tolist() == [128] * 3
    assert px[1, 0].tolist() == [0, 0, 0] and px[1, 1].tolist() == [255] * 3
    save_image_grid(torch.full((2, 1, 2, 2), 1.0), tmp_path / "grey.png", padding=1, nrow=1)
    with Image.open(tmp_path / "grey.png") as im:
        assert im.size == (4, 7) and im.getpixel((1, 1)) == (255, 255, 255)


def test_grid_replaces_atomically_and_validates(tmp_path, Image):
    path = tmp_path / "out" / "grid.png"
    save_image_grid(torch.zeros(2, 3, 4, 4), path)
    save_image_grid(torch.ones(1, 3, 4, 4), path, padding=0)
    with Image.open(path) as im:
        assert im.size == (4, 4) and im.getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError, match="path"):
        save_image_grid(torch.zeros(1, 3, 4, 4), tmp_path / "grid.gif")
    with pytest.raises(ValueError, match="images"):
        save_image_grid(torch.zeros(0, 3, 4, 4), path)
    with pytest.raises(ValueError, match="images"):
        save_image_grid(torch.zeros(2, 2, 4, 4), path)
    with pytest.raises(TypeError, match="images"):
        save_image_grid(torch.zeros(1, 3, 4, 4, dtype=torch.int32), path)
    with pytest.raises(ValueError, match="nrow"):
        save_image_grid(torch.zeros(1, 3, 4, 4), path, nrow=0)
    with pytest.raises(ValueError, match="pixel_range"):
        save_image_grid(torch.zeros(1, 3, 4, 4), path, pixel_range=(0, 0))
    with Image.open(path) as im:  # failed calls left the file alone
        assert im.size == (4, 4)
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]
