"""Readers and writers: round trips, real-FITS layouts, and a clear error for every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from astropy.io import fits
from PIL import Image

from napari_ccdseg import io
from napari_ccdseg.errors import InputError

SHAPE = (64, 64)


@pytest.fixture
def frame() -> np.ndarray:
    return np.random.default_rng(0).normal(100.0, 2.0, SHAPE).astype(np.float32)


@pytest.fixture
def labels() -> np.ndarray:
    values = np.array([0, 1, 2, 3, 255], dtype=np.uint8)
    return values[np.random.default_rng(1).integers(0, 5, SHAPE)]


def read_one(path, **kwargs) -> io.Frame:
    frames = io.read_frames(path, **kwargs)
    assert len(frames) == 1
    return frames[0]


def assert_input_error(path, match: str, call=None) -> InputError:
    """The call raises InputError whose message names the file and contains ``match``."""
    with pytest.raises(InputError) as info:
        (call or (lambda: io.read_frames(path)))()
    message = str(info.value)
    assert path.name in message
    assert match.lower() in message.lower(), message
    return info.value


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".npy", ".fits", ".fit", ".fts"])
def test_write_frame_round_trip(tmp_path, frame, suffix):
    path = io.write_frame(tmp_path / f"x{suffix}", frame, {"GAIN": 4.5})
    result = read_one(path)
    assert result.data.dtype == np.float32
    np.testing.assert_array_equal(result.data, frame)
    assert result.name == "x"
    assert result.source == path
    if suffix != ".npy":
        assert result.header["GAIN"] == 4.5


def test_fits_header_is_a_plain_json_safe_dict(tmp_path, frame):
    header = {"NSAMP": "1", "EXPTIME": 3.0, "DETECTOR": "skipper", "FLIPPED": True, "UNSET": None,
              "COMMENT": ["first", "second"]}
    result = read_one(io.write_frame(tmp_path / "x.fits", frame, header))
    assert {k: result.header[k] for k in header} == header
    json.dumps(result.header)


def test_tiff_round_trip(tmp_path, frame):
    tifffile.imwrite(tmp_path / "x.tif", frame)
    np.testing.assert_array_equal(read_one(tmp_path / "x.tif").data, frame)


def test_png_grey_16_bit_becomes_float32(tmp_path):
    grey = np.arange(64 * 64, dtype=np.uint16).reshape(SHAPE)
    Image.fromarray(grey).save(tmp_path / "g.png")
    result = read_one(tmp_path / "g.png")
    assert result.data.dtype == np.float32
    np.testing.assert_array_equal(result.data, grey)
    assert result.header == {}


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_colour_images_are_kept_as_they_are(tmp_path, channels, suffix):
    rgb = np.random.default_rng(2).integers(0, 256, (*SHAPE, channels), dtype=np.uint8)
    path = tmp_path / f"c{suffix}"
    Image.fromarray(rgb).save(path) if suffix == ".png" else tifffile.imwrite(path, rgb)
    result = read_one(path)
    assert result.data.dtype == np.uint8
    np.testing.assert_array_equal(result.data, rgb)


def test_palette_png_frame_is_expanded_to_rgb(tmp_path):
    image = Image.fromarray(np.zeros(SHAPE, np.uint8), mode="L").convert("P")
    image.save(tmp_path / "p.png")
    assert read_one(tmp_path / "p.png").data.shape == (*SHAPE, 3)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff", ".npy"])
def test_label_map_round_trip(tmp_path, labels, suffix):
    path = io.write_label_map(tmp_path / f"x_labels{suffix}", labels.astype(np.int32))
    result = io.read_label_map(path, expected_shape=SHAPE)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, labels)


# ----------------------------------------------------------------------------- FITS as real files come


def test_multi_extension_fits_gives_one_frame_per_image_hdu(tmp_path, frame):
    table = fits.BinTableHDU.from_columns([fits.Column(name="t", format="E", array=np.ones(3))])
    fits.HDUList(
        [fits.PrimaryHDU(), fits.ImageHDU(frame, name="AMP1"), table, fits.ImageHDU(frame + 1),
         fits.ImageHDU(frame + 2)]
    ).writeto(tmp_path / "run.fits")
    frames = io.read_frames(tmp_path / "run.fits")
    assert [f.name for f in frames] == ["run[AMP1]", "run[3]", "run[4]"]
    np.testing.assert_array_equal(frames[2].data, frame + 2)


def test_repeated_extnames_fall_back_to_hdu_index(tmp_path, frame):
    fits.HDUList([fits.PrimaryHDU(frame), fits.ImageHDU(frame, name="AMP"), fits.ImageHDU(frame, name="AMP")]).writeto(
        tmp_path / "r.fits"
    )
    assert [f.name for f in io.read_frames(tmp_path / "r.fits")] == ["r[0]", "r[1]", "r[2]"]


def test_extensions_inherit_the_primary_header(tmp_path, frame):
    primary = fits.PrimaryHDU()
    primary.header["RUNID"] = 7
    primary.header["GAIN"] = 1.0
    extension = fits.ImageHDU(frame, name="A")
    extension.header["GAIN"] = 2.0
    fits.HDUList([primary, extension]).writeto(tmp_path / "h.fits")
    header = read_one(tmp_path / "h.fits").header
    assert (header["RUNID"], header["GAIN"], header["EXTNAME"]) == (7, 2.0, "A")


@pytest.mark.parametrize("name", ["c.fz", "c.fits.fz"])
def test_compressed_fits_reads(tmp_path, name):
    pixels = np.random.default_rng(3).integers(-50, 30000, SHAPE).astype(np.int32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(pixels, compression_type="RICE_1")]).writeto(tmp_path / name)
    result = read_one(tmp_path / name)
    assert result.name == "c"
    np.testing.assert_array_equal(result.data, pixels.astype(np.float32))


@pytest.mark.parametrize("name", ["g.fits.gz", "g.fit.gz", "g.fts.gz"])
def test_gzipped_fits_reads_every_extension_and_pairs_with_its_labels(tmp_path, frame, labels, name):
    import gzip

    hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(frame, name="AMP1"), fits.ImageHDU(frame + 5, name="AMP2")])
    hdus.writeto(tmp_path / "plain.fits")
    (tmp_path / name).write_bytes(gzip.compress((tmp_path / "plain.fits").read_bytes()))
    (tmp_path / "plain.fits").unlink()
    frames = io.read_frames(tmp_path / name)
    assert [f.extname for f in frames] == ["AMP1", "AMP2"]
    np.testing.assert_array_equal(frames[1].data, frame + 5)
    assert io.is_frame_file(tmp_path / name) and io.frame_stem(tmp_path / name) == "g"
    io.write_label_map(tmp_path / "g_labels.png", labels)
    assert [(f.name, lab.name) for f, lab in io.find_dataset(tmp_path)] == [(name, "g_labels.png")]


def test_truncated_gzipped_fits_is_an_input_error(tmp_path, frame):
    import gzip

    fits.PrimaryHDU(frame).writeto(tmp_path / "t.fits")
    packed = gzip.compress((tmp_path / "t.fits").read_bytes())
    (tmp_path / "t.fits.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InputError, match="t.fits.gz"):
        io.read_frames(tmp_path / "t.fits.gz")


def test_lossy_quantised_float_fz_reads_close_to_the_original(tmp_path, frame):
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(frame, quantize_level=16)]).writeto(tmp_path / "q.fz")
    np.testing.assert_allclose(read_one(tmp_path / "q.fz").data, frame, atol=0.2)


def skipper_file(tmp_path, nsamp, name="s.fits"):
    """A frame whose NSAMP samples per pixel sit in adjacent columns, each pixel's samples averaging to its value."""
    truth = np.random.default_rng(4).normal(0, 5, SHAPE).astype(np.float32)
    offsets = np.linspace(-1, 1, int(nsamp), dtype=np.float32)
    raw = (truth[:, :, None] + offsets).reshape(SHAPE[0], SHAPE[1] * int(nsamp))
    hdu = fits.PrimaryHDU(raw)
    hdu.header["NSAMP"] = nsamp
    hdu.writeto(tmp_path / name)
    return tmp_path / name, truth, raw


@pytest.mark.parametrize("nsamp", [4, "4", " 4 "])
def test_skipper_samples_are_averaged_including_string_nsamp(tmp_path, nsamp):
    path, truth, _ = skipper_file(tmp_path, nsamp)
    result = read_one(path)
    np.testing.assert_allclose(result.data, truth, atol=1e-5)
    assert (result.header["NSAMP"], result.header["NSAMPAVG"]) == (1, 4)


def test_averaged_frame_written_back_is_not_averaged_again(tmp_path):
    path, truth, _ = skipper_file(tmp_path, 4)
    result = read_one(path)
    again = read_one(io.write_frame(tmp_path / "again.fits", result.data, result.header))
    np.testing.assert_allclose(again.data, truth, atol=1e-5)


def test_skipper_averaging_can_be_turned_off(tmp_path):
    path, _, raw = skipper_file(tmp_path, 4)
    np.testing.assert_array_equal(read_one(path, average_samples=False).data, raw)


def test_nsamp_one_as_a_string_leaves_the_frame_alone(tmp_path):
    path, _, raw = skipper_file(tmp_path, "1")
    np.testing.assert_array_equal(read_one(path).data, raw)


def test_frame_already_averaged_to_ncol_is_left_alone(tmp_path, frame):
    hdu = fits.PrimaryHDU(frame)
    hdu.header["NSAMP"] = 4
    hdu.header["NCOL"] = SHAPE[1]
    hdu.writeto(tmp_path / "avg.fits")
    np.testing.assert_array_equal(read_one(tmp_path / "avg.fits").data, frame)


def test_width_not_a_multiple_of_nsamp_is_an_error(tmp_path, frame):
    hdu = fits.PrimaryHDU(frame[:, :63])
    hdu.header["NSAMP"] = 4
    hdu.writeto(tmp_path / "odd.fits")
    assert_input_error(tmp_path / "odd.fits", "multiple of NSAMP = 4")


def test_non_numeric_nsamp_is_an_error(tmp_path, frame):
    hdu = fits.PrimaryHDU(frame)
    hdu.header["NSAMP"] = "many"
    hdu.writeto(tmp_path / "n.fits")
    assert_input_error(tmp_path / "n.fits", "NSAMP")


def test_overscan_subtraction_removes_the_row_pedestal(tmp_path):
    rng = np.random.default_rng(5)
    pedestal = np.linspace(-39.0, 1000.0, SHAPE[0], dtype=np.float32)[:, None]
    signal = np.zeros(SHAPE, np.float32)
    signal[:, :48] = rng.integers(0, 10, (SHAPE[0], 48))
    path = io.write_frame(tmp_path / "o.fits", signal + pedestal)
    result = read_one(path, subtract_overscan=16)
    np.testing.assert_allclose(result.data, signal, atol=1e-3)


def test_overscan_after_sample_averaging(tmp_path):
    path, truth, _ = skipper_file(tmp_path, 2)
    expected = truth - np.median(truth[:, -8:], axis=1, keepdims=True)
    np.testing.assert_allclose(read_one(path, subtract_overscan=8).data, expected, atol=1e-4)


# ----------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    assert_input_error(tmp_path / "absent.fits", "not found")


@pytest.mark.parametrize("suffix", [".fits", ".fz", ".npy", ".tif", ".png"])
def test_empty_file(tmp_path, suffix):
    (tmp_path / f"empty{suffix}").touch()
    assert_input_error(tmp_path / f"empty{suffix}", "empty")


@pytest.mark.parametrize("suffix", [".fits", ".fits.fz", ".npy", ".tif", ".png"])
def test_garbage_file(tmp_path, suffix):
    (tmp_path / f"junk{suffix}").write_bytes(b"this is not an image " * 50)
    assert_input_error(tmp_path / f"junk{suffix}", "corrupt")


def truncate(path, keep: float = 0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_truncated_fits(tmp_path, frame):
    assert_input_error(truncate(io.write_frame(tmp_path / "t.fits", frame)), "corrupt or truncated")


def test_fits_cut_inside_a_later_header_is_not_silently_shortened(tmp_path, frame):
    """astropy only warns and drops the HDU here; the reader must refuse the file."""
    path = tmp_path / "t.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(frame), fits.ImageHDU(frame)]).writeto(path)
    with fits.open(path) as hdul:
        last_header = hdul.fileinfo(2)["hdrLoc"]
    path.write_bytes(path.read_bytes()[: last_header + 100])
    assert_input_error(path, "truncated")


def test_truncated_compressed_fits(tmp_path, frame):
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(frame)]).writeto(tmp_path / "t.fz")
    assert_input_error(truncate(tmp_path / "t.fz", 0.5), "truncated")


def test_truncated_npy_tiff_png(tmp_path, frame):
    paths = [io.write_frame(tmp_path / "t.npy", frame), tmp_path / "t.tif", tmp_path / "t.png"]
    tifffile.imwrite(paths[1], frame)
    Image.fromarray(np.zeros((*SHAPE, 3), np.uint8) + 7).save(paths[2])
    for path in paths:
        assert_input_error(truncate(path), "corrupt or truncated")


def test_unsupported_suffix(tmp_path):
    (tmp_path / "frame.jpg").write_bytes(b"x")
    assert_input_error(tmp_path / "frame.jpg", "unsupported")


def test_one_dimensional_data(tmp_path):
    np.save(tmp_path / "line.npy", np.zeros(64, np.float32))
    assert_input_error(tmp_path / "line.npy", "1-D")


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_stack_that_is_not_colour(tmp_path, suffix):
    stack = np.zeros((5, *SHAPE), np.float32)
    np.save(tmp_path / f"stack{suffix}", stack) if suffix == ".npy" else tifffile.imwrite(tmp_path / "stack.tif", stack)
    error = assert_input_error(tmp_path / f"stack{suffix}", "3-D stack")
    assert "colour" in str(error)


def test_fits_cube(tmp_path):
    fits.PrimaryHDU(np.zeros((3, *SHAPE), np.float32)).writeto(tmp_path / "cube.fits")
    assert_input_error(tmp_path / "cube.fits", "3-D")


def test_fits_without_image_data(tmp_path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="t", format="E", array=np.ones(3))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "table.fits")
    assert_input_error(tmp_path / "table.fits", "no image data")


def test_non_numeric_npy(tmp_path):
    np.save(tmp_path / "text.npy", np.full(SHAPE, "a"))
    assert_input_error(tmp_path / "text.npy", "not numeric")


@pytest.mark.parametrize("suffix", [".npy", ".fits"])
def test_nan_and_inf_pixels_are_counted(tmp_path, frame, suffix):
    frame[0, :3] = np.nan
    frame[5, 5] = np.inf
    error = assert_input_error(io.write_frame(tmp_path / f"nan{suffix}", frame), "NaN")
    assert "4 pixel(s) are NaN or infinite" in str(error)


def test_negative_overscan_count(tmp_path, frame):
    path = io.write_frame(tmp_path / "x.npy", frame)
    assert_input_error(path, "overscan", lambda: io.read_frames(path, subtract_overscan=-1))


def test_overscan_wider_than_frame(tmp_path, frame):
    path = io.write_frame(tmp_path / "x.npy", frame)
    assert_input_error(path, "overscan", lambda: io.read_frames(path, subtract_overscan=64))


def test_overscan_on_colour_image(tmp_path):
    Image.fromarray(np.zeros((*SHAPE, 3), np.uint8)).save(tmp_path / "c.png")
    assert_input_error(tmp_path / "c.png", "colour", lambda: io.read_frames(tmp_path / "c.png", subtract_overscan=4))


# ----------------------------------------------------------------------------- label maps


def test_unknown_label_values_are_listed(tmp_path, labels):
    labels[0, :3] = [4, 7, 200]
    np.save(tmp_path / "x_labels.npy", labels)
    path = tmp_path / "x_labels.npy"
    error = assert_input_error(path, "unknown", lambda: io.read_label_map(path))
    assert "4, 7, 200" in str(error)


def test_label_size_mismatch_names_both_files_and_sizes(tmp_path, labels):
    path = io.write_label_map(tmp_path / "x_labels.png", labels)
    error = assert_input_error(
        path, "64x64", lambda: io.read_label_map(path, expected_shape=(64, 32), frame=tmp_path / "x.fits")
    )
    assert "x.fits" in str(error) and "64x32" in str(error)


def test_label_map_must_be_2d(tmp_path):
    Image.fromarray(np.zeros((*SHAPE, 3), np.uint8)).save(tmp_path / "x_labels.png")
    assert_input_error(tmp_path / "x_labels.png", "2-D", lambda: io.read_label_map(tmp_path / "x_labels.png"))


@pytest.mark.parametrize("name", ["missing_labels.png", "x_labels.fits"])
def test_label_map_missing_or_wrong_type(tmp_path, name):
    error = pytest.raises(InputError, io.read_label_map, tmp_path / name)
    assert name in str(error.value)


def test_corrupt_label_map(tmp_path):
    (tmp_path / "x_labels.png").write_bytes(b"junk" * 20)
    assert_input_error(tmp_path / "x_labels.png", "corrupt", lambda: io.read_label_map(tmp_path / "x_labels.png"))


def test_palette_png_label_map_keeps_class_indices(tmp_path, labels):
    image = Image.new("P", SHAPE[::-1])
    image.putdata(labels.ravel().tolist())
    image.putpalette([255, 0, 0] * 256)  # colours that say nothing about the indices
    image.save(tmp_path / "x_labels.png")
    np.testing.assert_array_equal(io.read_label_map(tmp_path / "x_labels.png"), labels)


def test_write_label_map_rejects_unknown_values_and_suffixes(tmp_path, labels):
    labels[0, 0] = 9
    with pytest.raises(InputError, match="9"):
        io.write_label_map(tmp_path / "x_labels.png", labels)
    with pytest.raises(InputError, match="x_labels.jpg"):
        io.write_label_map(tmp_path / "x_labels.jpg", labels)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- atomic writes


def test_writers_leave_no_temp_files(tmp_path, frame, labels):
    io.write_frame(tmp_path / "a.fits", frame)
    io.write_frame(tmp_path / "a.npy", frame)
    for suffix in (".png", ".tif", ".npy"):
        io.write_label_map(tmp_path / f"a_labels{suffix}", labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.fits", "a.npy", "a_labels.png", "a_labels.tif", "a_labels.npy"]
    )


def test_failed_write_keeps_the_previous_file(tmp_path, labels, monkeypatch):
    path = io.write_label_map(tmp_path / "x_labels.npy", labels)
    before = path.read_bytes()

    def fail(handle, *args, **kwargs):
        handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", fail)
    with pytest.raises(InputError, match="x_labels.npy: could not write the file"):
        io.write_label_map(path, np.zeros(SHAPE, np.uint8))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x_labels.npy"]


def test_write_frame_rejects_bad_input(tmp_path, frame):
    with pytest.raises(InputError, match="x.png"):
        io.write_frame(tmp_path / "x.png", frame)
    with pytest.raises(InputError, match="x.fits"):
        io.write_frame(tmp_path / "x.fits", np.zeros((*SHAPE, 3), np.uint8))
    with pytest.raises(InputError, match="header"):
        io.write_frame(tmp_path / "x.fits", frame, {"BAD": [1, 2]})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- datasets


def test_find_dataset_pairs_frames_with_label_maps(tmp_path, frame, labels):
    for name in ("b.fits", "a.npy", "c.fits.fz", "d.tif"):
        (tmp_path / name).write_bytes(b"x")
    io.write_label_map(tmp_path / "a_labels.png", labels)
    io.write_label_map(tmp_path / "c_labels.npy", labels)
    io.write_label_map(tmp_path / "d_instances.tif", labels)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".a.npy.1234.tmp").write_bytes(b"x")
    pairs = io.find_dataset(tmp_path)
    assert [(f.name, lab.name if lab else None) for f, lab in pairs] == [
        ("a.npy", "a_labels.png"),
        ("b.fits", None),
        ("c.fits.fz", "c_labels.npy"),
        ("d.tif", None),
    ]


def test_labels_path_for(tmp_path):
    (tmp_path / "x_labels.tiff").write_bytes(b"x")
    assert io.labels_path_for(tmp_path / "x.fits.fz") == tmp_path / "x_labels.tiff"
    assert io.labels_path_for(tmp_path / "y.fits") is None


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no frames") as info:
        io.find_dataset(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_folder_with_only_label_maps(tmp_path, labels):
    io.write_label_map(tmp_path / "x_labels.png", labels)
    with pytest.raises(InputError, match="no frames"):
        io.find_dataset(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="nowhere"):
        io.find_dataset(tmp_path / "nowhere")


def test_write_into_an_unwritable_place_names_the_target(tmp_path):
    from napari_ccdseg.io import write_label_map

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    target = blocker / "x_labels.png"
    with pytest.raises(InputError, match="x_labels.png: cannot write here"):
        write_label_map(target, np.zeros((4, 4), np.uint8))


def test_write_fits_extensions_refuses_nothing_to_write(tmp_path):
    from napari_ccdseg.io import write_fits_extensions

    with pytest.raises(InputError, match="no frames to write"):
        write_fits_extensions(tmp_path / "empty.fits", [])
    assert not (tmp_path / "empty.fits").exists()
