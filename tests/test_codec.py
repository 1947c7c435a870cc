"""Tests of vqswitch.codec: the VQSF container, compress / decompress, files, and refusing bad input."""
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vqswitch import codec
from vqswitch.adapters import decode_codes, encode_codes, save_swapped, swap_quantizer, swapped_quantizer
from vqswitch.adapters.models.maskgit_vqgan import MaskGitVQGAN
from vqswitch.bits import bits_per_image
from vqswitch.codec import CodecError, CodecModel
from vqswitch.codec.images import _safe
from vqswitch.codes import Codes
from vqswitch.entropy import FILE_NAME, EntropyModel

M, K, SIZE = 3, 12, 32  # M and K not powers of two: fixed-length fields can hold out-of-range values


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """A 32x32 MaskGIT-VQGAN (T = 16 tokens) swapped to M=3 groups of K=12 token-specific codes, with random
    codebooks (so that images pick different groups) and skewed usage counts (what the entropy model learns)."""
    torch.manual_seed(seed)
    model = MaskGitVQGAN(resolution=SIZE, hidden_channels=32, channel_mult=(1, 1, 1, 1), num_res_blocks=1,
                         attn_resolutions=(), z_channels=8, num_embeddings=32, quantized_embed_dim=8)
    swap_quantizer(model, num_groups=M, codebook_size=K, token_specific=True, seed=seed)
    q = swapped_quantizer(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        q.codebooks.copy_(torch.randn(q.codebooks.shape, generator=g) * q.codebooks.std())
        ranks = torch.argsort(torch.rand(M, q.num_tokens, K, generator=g), dim=-1).double()
        q.usage.copy_((4000.0 / (1.0 + ranks) ** 2).long())  # Zipf-like: a few codes take most of the use
        q.group_counts.copy_(torch.tensor([700, 250, 50]))
    return model.eval()


def images(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, 32, 32) smooth random images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIZE // 4, SIZE // 4, generator=g)
    return torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("codec") / "model"
    save_swapped(tiny_model(), folder)
    return folder


@pytest.fixture(scope="module")
def cm(saved) -> CodecModel:
    return codec.load_codec_model(saved)


@pytest.fixture(scope="module")
def containers(cm) -> dict:
    x = images(5)
    return {mode: codec.compress(cm, x, mode=mode) for mode in codec.MODES}


def restamp(data: bytes) -> bytes:
    """Recompute the trailing CRC32 so that a crafted container passes the CRC check."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("mode", codec.MODES)
def test_round_trip_is_lossless_on_codes(cm, mode):
    x = images(6, seed=1)
    data = codec.compress(cm, x, mode=mode)
    out = codec.decompress(data, cm)
    codes = encode_codes(cm.model, x)
    assert len(set(codes.groups.tolist())) > 1  # the router uses several groups
    assert out.codes == codes
    assert torch.equal(out.images, decode_codes(cm.model, codes).clamp(0.0, 1.0))
    assert out.images.shape == (6, 3, SIZE, SIZE) and out.images.dtype == torch.float32
    assert out.names == [f"{i:06d}" for i in range(6)]
    h = out.header
    assert (h.mode, h.version, h.count, h.height, h.width) == (mode, 1, 6, SIZE, SIZE)
    assert (h.num_tokens, h.codebook_size, h.num_groups) == (16, K, M)
    assert h.identity == cm.identity and h.source == cm.source and h.revision is None
    assert h.total_bytes == len(data) and codec.read_header(data) == h


def test_fixed_payload_is_exactly_bits_per_image(cm):
    x = images(5, seed=2)
    data = codec.compress(cm, x, mode="fixed")
    h = codec.read_header(data)
    bpi = bits_per_image(16, K, M)
    assert h.fixed_bits_per_image == bpi == 16 * 4 + 2
    assert h.payload_bits == 5 * bpi and h.payload_bytes == (5 * bpi + 7) // 8
    # the payload is the vqswitch.codes bitstream of the same codes (its VQSC payload after the 25-byte header)
    codes = encode_codes(cm.model, x)
    payload = data[-4 - h.payload_bytes:-4]
    assert payload == codes.to_bytes()[25:]


def test_entropy_payload_is_the_entropy_models_stream(cm, containers):
    h, codes = codec.decompress_codes(containers["entropy"], cm)
    assert h.mode == "entropy" and h.payload_bits == 8 * h.payload_bytes
    assert containers["entropy"][-4 - h.payload_bytes:-4] == cm.entropy.encode(codes.groups, codes.indices)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 9), seed=st.integers(0, 2**31), mode=st.sampled_from(codec.MODES))
def test_codes_round_trip_property(cm, n, seed, mode):
    """Any valid codes (not only what the encoder picks: rare codes too) come back exactly."""
    g = torch.Generator().manual_seed(seed)
    codes = Codes(torch.randint(0, M, (n,), generator=g), torch.randint(0, K, (n, 16), generator=g), K, M)
    names = [f"im{i}-é" for i in range(n)]
    data = codec.compress_codes(cm, codes, mode=mode, names=names)
    header, back = codec.decompress_codes(data, cm)
    assert back == codes and list(header.names) == names and header.count == n


def test_tensor_and_pil_and_file_inputs_agree(cm, tmp_path):
    x = images(3, seed=3)
    arrays = [(x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for i in range(3)]
    as_pixels = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays])
    paths = [write_png(tmp_path / f"face{i}.png", a) for i, a in enumerate(arrays)]
    from_files = codec.decompress(codec.compress(cm, paths), cm)
    from_pil = codec.decompress(codec.compress(cm, [Image.fromarray(a) for a in arrays]), cm)
    from_tensor = codec.decompress(codec.compress(cm, as_pixels), cm)
    assert codec.decompress(codec.compress(cm, as_pixels.double()), cm).codes == from_tensor.codes
    assert from_files.codes == from_pil.codes == from_tensor.codes == encode_codes(cm.model, as_pixels)
    assert from_files.names == ["face0", "face1", "face2"]
    assert from_pil.names == ["000000", "000001", "000002"]


def test_greyscale_and_opaque_rgba_are_converted(cm, tmp_path):
    grey = (images(1, seed=4)[0, 0].numpy() * 255).astype(np.uint8)
    grey_path = write_png(tmp_path / "grey.png", grey)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((SIZE, SIZE, 1), 255, np.uint8)], axis=2)
    rgba_path = write_png(tmp_path / "opaque.png", rgba)
    want = codec.decompress(codec.compress(cm, [Image.fromarray(rgb)]), cm).codes
    assert codec.decompress(codec.compress(cm, [grey_path]), cm).codes == want
    assert codec.decompress(codec.compress(cm, [rgba_path]), cm).codes == want


# ---------------------------------------------------------------- bad images


def test_wrong_size_is_refused_naming_file_and_sizes(cm, tmp_path):
    path = write_png(tmp_path / "small.png", np.zeros((16, 24, 3), np.uint8))
    with pytest.raises(ValueError, match=r"small\.png.*24x16.*32x32"):
        codec.compress(cm, [path])
    with pytest.raises(ValueError, match="32x32"):
        codec.compress(cm, torch.rand(2, 3, 16, 16))


@pytest.mark.parametrize("mode_name", ["CMYK", "I;16", "F"])
def test_unsupported_pillow_modes_are_refused(cm, tmp_path, mode_name):
    im = Image.new(mode_name, (SIZE, SIZE))
    path = tmp_path / ("im.tiff" if mode_name != "I;16" else "im.png")
    im.save(path)
    with Image.open(path) as check:
        file_mode = check.mode
    with pytest.raises(ValueError, match=rf"im\.(tiff|png).*mode {file_mode!r}"):
        codec.compress(cm, [path])
    with pytest.raises(ValueError, match=f"mode {mode_name!r}"):
        codec.compress(cm, [im])


def test_transparency_is_refused(cm, tmp_path):
    rgba = np.full((SIZE, SIZE, 4), 200, np.uint8)
    rgba[3, 5, 3] = 0
    path = write_png(tmp_path / "hole.png", rgba)
    with pytest.raises(ValueError, match=r"hole\.png.*'RGBA'.*transparent"):
        codec.compress(cm, [path])


def test_not_an_image_file_is_refused(cm, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.png.*not an image"):
        codec.compress(cm, [path])


def test_bad_arguments(cm):
    x = images(2)
    with pytest.raises(ValueError, match="mode"):
        codec.compress(cm, x, mode="zip")
    with pytest.raises(ValueError, match="one name per image"):
        codec.compress(cm, x, names=["a"])
    with pytest.raises(TypeError, match=r"names\[1\]"):
        codec.compress(cm, x, names=["a", 3])
    with pytest.raises(ValueError, match="no images"):
        codec.compress(cm, [])
    with pytest.raises(TypeError, match="images"):
        codec.compress(cm, "face.png")
    with pytest.raises(ValueError, match="pixel range"):
        codec.compress(cm, x * 255)
    with pytest.raises(TypeError, match="bytes"):
        codec.read_header("VQSF")


# ---------------------------------------------------------------- broken containers


@pytest.mark.parametrize("mode", codec.MODES)
def test_every_truncation_is_detected(cm, containers, mode):
    data = containers[mode]
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            codec.read_header(data[:cut])
    with pytest.raises(CodecError, match="truncated"):
        codec.decompress(data[:-7], cm)
    with pytest.raises(CodecError, match="corrupted"):
        codec.decompress(data + b"\0", cm)


def test_every_single_byte_change_is_detected(cm):
    data = codec.compress(cm, images(1), mode="fixed", names=["a"])
    assert len(data) < 400
    for pos in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= flip
            with pytest.raises(CodecError):
                codec.read_header(bytes(bad))
    bad = bytearray(data)
    bad[-10] ^= 0x10
    with pytest.raises(CodecError, match="CRC32"):
        codec.decompress(bytes(bad), cm)


@pytest.mark.parametrize("blob", [b"", b"VQ", b"\x89PNG\r\n\x1a\n" + bytes(100), b"VQSC" + bytes(60), b"hello world"])
def test_foreign_data_is_refused(blob):
    with pytest.raises(CodecError, match="not a vqswitch|truncated"):
        codec.read_header(blob)


def test_newer_version_and_unknown_mode_are_refused(containers):
    data = bytearray(containers["fixed"])
    data[4] = 2
    with pytest.raises(CodecError, match="version 2.*upgrade"):
        codec.read_header(restamp(bytes(data)))
    data = bytearray(containers["fixed"])
    data[5] = 7
    with pytest.raises(CodecError, match="unknown mode 7"):
        codec.read_header(restamp(bytes(data)))


def test_huge_counts_allocate_nothing(containers):
    data = bytearray(containers["fixed"])
    n_at = 4 + 1 + 1 + 32 + 2 + len((codec.read_header(bytes(data)).source or "").encode()) + 2
    data[n_at:n_at + 4] = struct.pack("<I", 4_000_000_000)
    with pytest.raises(CodecError, match="4000000000 images"):
        codec.read_header(restamp(bytes(data)))


def test_forged_header_sizes_are_refused(cm, containers):
    data = bytearray(containers["fixed"])
    h = codec.read_header(bytes(data))
    sizes_at = 4 + 1 + 1 + 32 + 2 + len((h.source or "").encode()) + 2
    data[sizes_at + 8:sizes_at + 12] = struct.pack("<I", 17)  # T = 17: payload length no longer fits
    with pytest.raises(CodecError, match="payload"):
        codec.read_header(restamp(bytes(data)))
    data = bytearray(containers["entropy"])
    data[sizes_at + 16:sizes_at + 20] = struct.pack("<I", 4)  # M = 4: not what the model has
    with pytest.raises(CodecError, match="disagrees"):
        codec.decompress(restamp(bytes(data)), cm)


def test_fixed_values_out_of_range_are_refused(cm):
    # K = 12 codes take 4 bits: the bit pattern 1111 (= 15) is not a code
    codes = Codes(torch.zeros(1, dtype=torch.long), torch.zeros(1, 16, dtype=torch.long), K, M)
    data = bytearray(codec.compress_codes(cm, codes, mode="fixed"))
    h = codec.read_header(bytes(data))
    start = len(data) - 4 - h.payload_bytes
    data[start] |= 0x3C  # group bits 00, then the first token's 4 bits -> 1111
    with pytest.raises(CodecError, match="token index"):
        codec.decompress(restamp(bytes(data)), cm)


def test_entropy_payload_corruption_is_a_codec_error(cm, containers):
    data = bytearray(containers["entropy"])
    h = codec.read_header(bytes(data))
    data[len(data) - 4 - h.payload_bytes:-4] = bytes(h.payload_bytes)[:-4] + b"\xff\xff\xff\xff"
    try:
        out = codec.decompress(restamp(bytes(data)), cm)
    except CodecError as err:
        assert "entropy" in str(err)
    else:  # another valid stream: then it still decodes to valid codes
        assert out.codes.indices.shape == (5, 16)


def test_a_different_model_is_refused(cm, containers, tmp_path):
    other = CodecModel(tiny_model(seed=1))
    with pytest.raises(CodecError, match=rf"compressed with model {cm.identity.hex()[:12]}.*not "
                                         rf"{other.identity.hex()[:12]}"):
        codec.decompress(containers["entropy"], other)
    # the same weights with another entropy model are another model too
    q = swapped_quantizer(cm.model)
    resmoothed = CodecModel(cm.model, EntropyModel.from_quantizer(q, smoothing=2.0))
    assert resmoothed.identity != cm.identity
    with pytest.raises(CodecError, match="compressed with model"):
        codec.decompress(containers["fixed"], resmoothed)


# ---------------------------------------------------------------- identity and loading


def test_identity_is_stable_across_saves_and_sensitive_to_weights(cm, saved, tmp_path):
    model = tiny_model()
    again = save_swapped(model, tmp_path / "again")  # a new save id, same tensors
    assert codec.load_codec_model(again).identity == cm.identity == CodecModel(model, cm.entropy).identity
    with torch.no_grad():
        next(model.decoder.parameters()).view(-1)[0] += 1e-6
    assert CodecModel(model, cm.entropy).identity != cm.identity
    model = tiny_model()
    swapped_quantizer(model).usage[0, 0, 0] += 1
    assert CodecModel(model).identity != cm.identity


def test_entropy_file_is_used_and_optional(cm, saved, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    (folder / FILE_NAME).unlink(missing_ok=True)  # an older save: no entropy model
    plain = codec.load_codec_model(folder)
    q = swapped_quantizer(plain.model)
    assert plain.entropy == EntropyModel.from_quantizer(q)
    custom = EntropyModel.from_quantizer(q, smoothing=3.0)
    custom.save(folder / FILE_NAME)
    loaded = codec.load_codec_model(folder)
    assert loaded.entropy == custom and loaded.identity != plain.identity
    assert loaded.source is None and loaded.revision is None  # a local folder is never recorded


@pytest.mark.parametrize("with_entropy", [False, True])
def test_hub_repo_from_the_offline_cache(cm, saved, tmp_path, offline_cache, with_entropy):
    from hubcache import COMMIT, make_cached_repo

    folder = tmp_path / "repo"
    shutil.copytree(saved, folder)
    EntropyModel.from_quantizer(swapped_quantizer(cm.model), smoothing=3.0).save(folder / FILE_NAME)
    files = ["config.json", "model.safetensors"] + ([FILE_NAME] if with_entropy else [])
    make_cached_repo(offline_cache, "org/tiny-codec", folder, files=files)
    hub = codec.load_codec_model("org/tiny-codec")
    assert hub.source == "org/tiny-codec" and hub.revision == COMMIT
    assert (hub.entropy.smoothing == 3.0) is with_entropy
    x = images(2, seed=5)
    data = codec.compress(hub, x)
    h = codec.read_header(data)
    assert (h.source, h.revision) == ("org/tiny-codec", COMMIT)
    out = codec.decompress(data)  # loads the recorded repo at the recorded commit
    assert out.codes == encode_codes(cm.model, x)


def test_a_file_from_a_local_folder_records_no_path(cm, saved, containers):
    """Local paths are never written into a container (they leak the machine's layout and break elsewhere): the
    file names its model by identity only, and decoding needs the model."""
    for data in containers.values():
        h = codec.read_header(data)
        assert (h.source, h.revision) == (None, None)
        assert str(saved).encode() not in data and saved.name.encode() not in data
    in_memory = CodecModel(cm.model, cm.entropy)  # records no source either
    assert codec.read_header(codec.compress(in_memory, images(1))).source is None
    with pytest.raises(CodecError, match=rf"does not record.*{cm.identity.hex()[:12]}.*--model") as info:
        codec.decompress(containers["entropy"])
    assert "codec_model=" not in str(info.value)  # named generically: the CLI shows it as it is
    assert codec.decompress(containers["entropy"], saved).codes == codec.decompress(containers["entropy"], cm).codes


def test_relative_model_path_decodes_from_another_folder(saved, tmp_path, monkeypatch):
    monkeypatch.chdir(saved.parent.parent)
    relative = Path(saved.parent.name) / saved.name
    data = codec.compress(codec.load_codec_model(relative), images(2, seed=8))
    assert codec.read_header(data).source is None
    monkeypatch.chdir(tmp_path)  # another folder: the model is given again, by its absolute path
    assert codec.decompress(data, saved).codes.batch_size == 2


def test_a_hub_cache_snapshot_folder_records_its_repo_and_commit(saved, offline_cache):
    from hubcache import COMMIT, make_cached_repo

    snap = make_cached_repo(offline_cache, "org/snap-codec", saved, files=["config.json", "model.safetensors",
                                                                          FILE_NAME])
    cm = codec.load_codec_model(snap)
    assert (cm.source, cm.revision) == ("org/snap-codec", COMMIT)
    assert str(offline_cache).encode() not in codec.compress(cm, images(1))


@pytest.mark.parametrize("source", ["/home/someone/models/stscq", "./model", "~/model", "model", "a/b/c", "org/x--y"])
def test_codec_model_refuses_a_source_that_is_not_a_hub_id(cm, source):
    with pytest.raises(ValueError, match="source must be a Hub repo id"):
        CodecModel(cm.model, cm.entropy, source=source)
    assert CodecModel(cm.model, cm.entropy, source="org/name", revision="main").source == "org/name"


def test_recorded_source_that_cannot_be_loaded(cm, saved, tmp_path, offline_cache):
    from hubcache import make_cached_repo

    snap = make_cached_repo(offline_cache, "org/gone", saved)
    data = codec.compress(codec.load_codec_model("org/gone"), images(1))
    shutil.rmtree(snap.parent.parent)  # no longer in the (offline) cache
    with pytest.raises(CodecError, match="cannot load the model.*org/gone.*--model") as info:
        codec.decompress(data)
    assert "codec_model=" not in str(info.value)


# ---------------------------------------------------------------- files


def test_compress_files_report_and_decompress_file(cm, saved, tmp_path):
    x = images(4, seed=6)
    arrays = [(x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for i in range(4)]
    paths = [write_png(tmp_path / f"p{i}.png", a) for i, a in enumerate(arrays)]
    out = tmp_path / "faces.vqsf"
    report = codec.compress_files(paths, saved, out, mode="fixed", progress=False)
    data = out.read_bytes()
    h, codes = codec.decompress_codes(data, cm)
    assert report.total_bytes == len(data) and report.count == 4 and report.mode == "fixed"
    assert report.fixed_bits_per_image == bits_per_image(16, K, M)
    assert report.bits_per_image == report.fixed_bits_per_image
    entropy_bytes = len(cm.entropy.encode(codes.groups, codes.indices))
    assert report.entropy_bits_per_image == 8 * entropy_bytes / 4
    assert report.fixed_bpp == report.fixed_bits_per_image / SIZE**2
    assert report.information_bits_per_image == pytest.approx(
        float(cm.entropy.information_bits(codes.groups, codes.indices).sum()) / 4)
    assert report.to_dict()["saving"] == pytest.approx(1 - report.entropy_bits_per_image / report.fixed_bits_per_image)

    written = codec.decompress_file(out, tmp_path / "decoded", model=cm, progress=False)
    assert [p.name for p in written] == [f"p{i}.png" for i in range(4)]
    expect = codec.decompress(data, cm).images
    for i, p in enumerate(written):
        got = np.asarray(Image.open(p))
        assert np.array_equal(got, (expect[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    with pytest.raises(FileExistsError, match="p0.png"):
        codec.decompress_file(out, tmp_path / "decoded", model=cm, progress=False)
    assert codec.decompress_file(out, tmp_path / "decoded", model=cm, progress=False, overwrite=True) == written


def test_interrupted_compress_leaves_the_old_file(cm, tmp_path, monkeypatch):
    paths = [write_png(tmp_path / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))]
    out = tmp_path / "out" / "a.vqsf"
    out.parent.mkdir()
    out.write_bytes(b"old content")

    def half_then_fail(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        codec.compress_files(paths, cm, out, progress=False)
    with pytest.raises(OSError, match="disk full"):
        codec.compress_files(paths, cm, tmp_path / "out" / "new.vqsf", progress=False)
    monkeypatch.undo()
    assert out.read_bytes() == b"old content"
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.vqsf"]


def test_interrupted_decompress_writes_nothing(cm, tmp_path, monkeypatch):
    src = tmp_path / "x.vqsf"
    src.write_bytes(codec.compress(cm, images(3)))
    saves = []
    real_save = Image.Image.save

    def fail_on_third(self, *args, **kwargs):
        saves.append(1)
        if len(saves) == 3:
            raise OSError("disk full")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        codec.decompress_file(src, tmp_path / "out", model=cm, progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.vqsf"]


def test_output_names_are_sanitised():
    names = ["../../etc/passwd", "ok", "OK", "a/b", "..", ".hidden", "con", "x" * 300, "", "a\x00b", "ok",
             "c:\\evil", "000000", "face 1", "été"]
    got = codec.output_file_names(names)
    assert got == ["000000.png", "ok.png", "OK-000002.png", "000003.png", "000004.png", "000005.png", "000006.png",
                   "000007.png", "000008.png", "000009.png", "ok-000010.png", "000011.png", "000000-000012.png",
                   "face 1.png", "été.png"]
    assert len({n.casefold() for n in got}) == len(got)
    for n in got:
        assert Path(n).name == n and ".." not in n and "/" not in n and "\\" not in n


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=12), st.sampled_from(["..", ".", "a", "A", "000001", "x/../y"])),
                max_size=12))
def test_output_names_property(names):
    got = codec.output_file_names(names)
    assert len(got) == len(names) and len({n.casefold() for n in got}) == len(got)
    for i, (name, out) in enumerate(zip(names, got)):
        stem = out[:-4]
        assert out.endswith(".png") and Path(out).name == out and ".." not in stem and stem.strip() == stem
        assert not any(c in stem for c in '/\\:\0') and not stem.startswith(".")
        assert stem.startswith(name) if _safe(name) else stem.startswith(f"{i:06d}")


def test_decompress_file_stays_inside_out_dir(cm, tmp_path):
    src = tmp_path / "x.vqsf"
    src.write_bytes(codec.compress(cm, images(2), names=["../../escape", "/abs/path"]))
    out = tmp_path / "deep" / "out"
    written = codec.decompress_file(src, out, model=cm, progress=False)
    assert [p.name for p in written] == ["000000.png", "000001.png"]
    assert all(p.parent == out and p.is_file() for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "x.vqsf"]


# ---------------------------------------------------------------- fuzzing


def _only_codec_errors(data: bytes, cm) -> None:
    try:
        codec.read_header(data)
    except CodecError:
        pass
    try:
        out = codec.decompress(data, cm)
    except CodecError:
        return
    assert out.images.shape[0] == out.header.count == len(out.names) == out.codes.batch_size


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda b: b"VQSF\x01" + b),
                 st.binary(max_size=300).map(lambda b: restamp(b"VQSF\x01" + b + bytes(4)))))
def test_fuzz_random_bytes_raise_only_codec_errors(cm, data):
    _only_codec_errors(data, cm)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(codec.MODES), data=st.data())
def test_fuzz_mutated_containers_raise_only_codec_errors(cm, containers, mode, data):
    blob = bytearray(containers[mode])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(blob) - 1)))
        if kind == "set" and blob:
            blob[pos] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del blob[pos:pos + data.draw(st.integers(1, 8))]
        else:
            del blob[pos:]
    mutated = bytes(blob)
    if data.draw(st.booleans()) and len(mutated) >= 4:
        mutated = restamp(mutated)  # get past the CRC: exercise the parser and the decoders
    _only_codec_errors(mutated, cm)


def test_auto_mode_writes_the_smaller_payload(cm, saved):
    x = images(4, seed=5)
    sizes = {m: len(codec.compress(cm, x, mode=m)) for m in ("fixed", "entropy")}
    auto = codec.compress(cm, x)  # the default
    assert len(auto) == min(sizes.values())
    assert codec.read_header(auto).mode == min(sizes, key=sizes.get)
    # statistics that do not fit the images: entropy coding would cost more, so auto stores fixed-length codes
    model = cm.model
    q = swapped_quantizer(model)
    codes = encode_codes(model, x)
    counts = torch.full_like(q.usage, 1000)
    counts[codes.groups[:, None], torch.arange(q.num_tokens)[None, :], codes.indices] = 0
    misfit = CodecModel(model, EntropyModel(counts, torch.ones_like(q.group_counts), num_tokens=q.num_tokens))
    fixed, entropy = (codec.compress(misfit, x, mode=m) for m in ("fixed", "entropy"))
    assert len(entropy) > len(fixed)
    assert codec.compress(misfit, x) == fixed
    with pytest.raises(ValueError, match=r"mode must be one of \('auto', 'fixed', 'entropy'\)"):
        codec.compress(cm, x, mode="best")


# ---------------------------------------------------------------- hostile sizes: bounded work (issue 15)


def forge(mode: int, t: int, k: int, m: int, names: list[bytes], payload: bytes, identity=b"\0" * 32) -> bytes:
    """A container with a valid CRC and whatever sizes it is given."""
    body = struct.pack("<4sBB32s", b"VQSF", 1, mode, identity) + struct.pack("<HH", 0, 0)
    body += struct.pack("<IHHIII", len(names), SIZE, SIZE, t, k, m)
    body += b"".join(struct.pack("<H", len(x)) + x for x in names) + struct.pack("<Q", len(payload)) + payload
    return restamp(body + b"\0\0\0\0")


def _peak_and_seconds(fn):
    import time
    import tracemalloc

    tracemalloc.start()
    t0 = time.process_time()  # CPU seconds: the work done, not how busy the (shared) machine is
    try:
        fn()
        err = None
    except Exception as e:  # noqa: BLE001 - returned for the caller to check
        err = e
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return err, peak, time.process_time() - t0


def test_a_77_byte_fixed_container_cannot_claim_many_zero_bit_tokens():
    from vqswitch.codec import container

    data = forge(0, 50_000_000, 1, 1, [b""], b"")  # K = M = 1: 0 bits per image, T = 5e7 free tokens
    assert len(data) < 80
    err, peak, seconds = _peak_and_seconds(lambda: container.unpack_fixed(*container.parse(data)))
    assert isinstance(err, CodecError) and "N*T" in str(err), err
    assert peak < 2**20 and seconds < 1.0


def test_an_entropy_container_cannot_claim_many_images_for_almost_nothing(cm):
    # every image costs a 2-byte empty name; before, all N*T symbols were decoded before the stream was refused
    data = forge(1, 16, K, M, [b""] * 70_000, b"\0" * 8, identity=cm.identity)  # N*T > 2**20
    err, peak, seconds = _peak_and_seconds(lambda: codec.decompress_codes(data, cm))
    assert isinstance(err, CodecError) and "N*T" in str(err), err
    assert peak < 8 * 2**20 and seconds < 3.0


def test_entropy_decode_refuses_more_values_than_the_stream_may_hold(cm):
    from vqswitch.entropy import MAX_VALUES_PER_BYTE, EntropyDecodeError

    err, peak, seconds = _peak_and_seconds(lambda: cm.entropy.decode(b"\0" * 8, 2**20))
    assert isinstance(err, EntropyDecodeError) and "N*T" in str(err), err
    assert peak < 2**20 and seconds < 1.0
    assert MAX_VALUES_PER_BYTE * 8 < 2**20 * 16


def test_too_compressible_codes_are_refused_by_the_entropy_encoder():
    from vqswitch.entropy import EntropyDensityError

    t = 1024  # one dominant code per token: each costs ~2**-24 bits, far below the format's bound
    model = EntropyModel(torch.tensor([[[2**50] + [0] * 3]]), torch.tensor([1]), num_tokens=t)
    n = 1025  # N*T just above MAX_ZERO_BIT_VALUES = 2**20
    with pytest.raises(EntropyDensityError, match="N\\*T"):
        model.encode(torch.zeros(n, dtype=torch.long), torch.zeros(n, t, dtype=torch.long))
    small = model.encode(torch.zeros(2, dtype=torch.long), torch.zeros(2, t, dtype=torch.long))
    assert model.decode(small, 2)[1].shape == (2, t)


def test_a_dangling_symlink_in_the_output_folder_is_taken(cm, tmp_path):
    src = tmp_path / "one.vqsf"
    src.write_bytes(codec.compress(cm, images(1), names=["face"]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "face.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(FileExistsError, match="face.png"):
        codec.decompress_file(src, out, model=cm, progress=False)
    assert (out / "face.png").is_symlink() and not (tmp_path / "nowhere.png").exists()
    written = codec.decompress_file(src, out, model=cm, progress=False, overwrite=True)
    assert not written[0].is_symlink() and written[0].stat().st_size > 0


def test_decompress_file_removes_the_temporary_folder_a_killed_run_left(cm, tmp_path):
    import subprocess
    import sys

    from vqswitch._io import temp_prefix

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # its pid is now a process that no longer runs, like a killed decompress
    src = tmp_path / "one.vqsf"
    src.write_bytes(codec.compress(cm, images(1), names=["face"]))
    stale = tmp_path / f"{temp_prefix('out', proc.pid)}k1ll3d.tmp"
    stale.mkdir()
    (stale / "face.png").write_bytes(b"half a png")
    codec.decompress_file(src, tmp_path / "out", model=cm, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.vqsf", "out"]
