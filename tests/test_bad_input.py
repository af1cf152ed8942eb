"""Bad-input suite (issue 6, item 1): every odd input either works correctly or raises
InputError naming the file/frame and the problem; nothing else escapes, nothing hangs, and no
partial output file is left behind."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_ccdseg import io
from napari_ccdseg.autolabel import label_frame
from napari_ccdseg.cli import main
from napari_ccdseg.dataset import LabelledFrame
from napari_ccdseg.errors import InputError
from napari_ccdseg.normalise import normalisation_params
from napari_ccdseg.predict import predict_frame
from napari_ccdseg.train import TrainConfig, train
from napari_ccdseg.unet import build_unet

SETTINGS = settings(max_examples=20, deadline=None)
CLASS_SET = set(io.LABEL_VALUES)
DTYPES = [np.int16, np.uint16, np.int32, np.float32, np.float64, np.uint8]


def _noise(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 5, size=shape)
    return data.astype(dtype)


def _write_npy(path, array):
    np.save(path, array, allow_pickle=False)
    return path


def _write_fits(path, array):
    from astropy.io import fits

    fits.PrimaryHDU(array).writeto(path)
    return path


def _write_tiff(path, array):
    import tifffile

    tifffile.imwrite(path, array)
    return path


def _write_png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


WRITERS = {".npy": _write_npy, ".fits": _write_fits, ".tif": _write_tiff}


def _expect_input_error(call, *words):
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), message
    return message


# ----------------------------------------------------------------------------- readers


@pytest.mark.parametrize("suffix", [".fits", ".png", ".tif", ".npy", ".fits.fz"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(b"")
    _expect_input_error(lambda: io.read_frames(path), str(path), "empty")


@pytest.mark.parametrize("suffix", [".fits", ".png", ".tif", ".npy"])
def test_garbage_file(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(b"this is not an image at all\n" * 20)
    _expect_input_error(lambda: io.read_frames(path), str(path))


@pytest.mark.parametrize("suffix", [".fits", ".png", ".tif", ".npy"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_file(tmp_path, suffix, keep):
    whole = tmp_path / f"whole{suffix}"
    image = _noise((40, 50))
    if suffix == ".png":
        _write_png(whole, image.astype(np.uint8))
    else:
        WRITERS[suffix](whole, image)
    raw = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(raw[: max(1, int(len(raw) * keep))])
    _expect_input_error(lambda: io.read_frames(cut), str(cut))


@given(data=st.binary(min_size=1, max_size=400), suffix=st.sampled_from([".fits", ".png", ".tif", ".npy"]))
@SETTINGS
def test_random_bytes_never_crash(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("rand") / f"x{suffix}"
    path.write_bytes(data)
    try:
        frames = io.read_frames(path)
    except InputError as error:
        assert str(path) in str(error)
    else:  # random bytes that happen to parse must still give valid frames
        for frame in frames:
            assert frame.data.ndim in (2, 3) and frame.data.size


@pytest.mark.parametrize("suffix", [".fits", ".tif", ".npy"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (7, 300), (33, 17)])
def test_small_and_odd_frames_of_every_dtype(tmp_path, suffix, dtype, shape):
    path = WRITERS[suffix](tmp_path / f"x{suffix}", _noise(shape, dtype))
    (frame,) = io.read_frames(path)
    assert frame.data.shape == shape and frame.data.dtype == np.float32
    np.testing.assert_allclose(frame.data, _noise(shape, dtype).astype(np.float32))


@pytest.mark.parametrize("suffix", [".fits", ".tif", ".npy"])
@pytest.mark.parametrize("value", [0.0, 1e30, -1e30, 65535.0])
def test_constant_and_huge_frames_read(tmp_path, suffix, value):
    path = WRITERS[suffix](tmp_path / f"x{suffix}", np.full((5, 6), value, np.float32))
    (frame,) = io.read_frames(path)
    assert np.all(frame.data == np.float32(value))


@pytest.mark.parametrize("suffix", [".fits", ".tif", ".npy"])
def test_float64_beyond_float32_is_refused(tmp_path, suffix):
    image = np.full((4, 4), 1.0)
    image[1, 2] = 1e300
    path = WRITERS[suffix](tmp_path / f"x{suffix}", image)
    _expect_input_error(lambda: io.read_frames(path), str(path), "float32")


@pytest.mark.parametrize("suffix", [".fits", ".tif", ".npy"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_pixels(tmp_path, suffix, bad):
    image = _noise((6, 6))
    image[2, 3] = bad
    path = WRITERS[suffix](tmp_path / f"x{suffix}", image)
    _expect_input_error(lambda: io.read_frames(path), str(path), "NaN or infinite")


@pytest.mark.parametrize("suffix", [".fits", ".tif", ".npy"])
def test_3d_stack(tmp_path, suffix):
    path = WRITERS[suffix](tmp_path / f"x{suffix}", _noise((5, 6, 7)))
    _expect_input_error(lambda: io.read_frames(path), str(path), "3-D")


def test_empty_array_and_non_numeric_npy(tmp_path):
    path = _write_npy(tmp_path / "e.npy", np.zeros((0, 5), np.float32))
    _expect_input_error(lambda: io.read_frames(path), str(path), "no pixels")
    path = _write_npy(tmp_path / "s.npy", np.array([["a", "b"]]))
    _expect_input_error(lambda: io.read_frames(path), str(path), "not numeric")
    path = _write_npy(tmp_path / "v.npy", np.zeros(5, np.float32))
    _expect_input_error(lambda: io.read_frames(path), str(path), "1-D")


def test_png_grey_and_16_bit(tmp_path):
    for dtype in (np.uint8, np.uint16):
        path = _write_png(tmp_path / f"g{np.dtype(dtype).itemsize}.png", np.arange(12, dtype=dtype).reshape(1, 12))
        (frame,) = io.read_frames(path)
        assert frame.data.shape == (1, 12)


def test_missing_file_and_folder(tmp_path):
    _expect_input_error(lambda: io.read_frames(tmp_path / "no.fits"), "no.fits", "not found")
    _expect_input_error(lambda: io.read_frames(tmp_path / "x.jpg"), "x.jpg", "unsupported")
    _expect_input_error(lambda: io.find_dataset(tmp_path / "nowhere"), "nowhere", "no such folder")


# ----------------------------------------------------------------------------- label maps


@pytest.mark.parametrize("suffix", [".png", ".tif", ".npy"])
def test_label_map_unknown_values(tmp_path, suffix):
    labels = np.zeros((4, 5), np.uint8)
    labels[0, 0] = 7
    labels[1, 1] = 200
    writer = _write_png if suffix == ".png" else WRITERS[suffix]
    path = writer(tmp_path / f"x_labels{suffix}", labels)
    _expect_input_error(lambda: io.read_label_map(path), str(path), "unknown label value", "7", "200")


@pytest.mark.parametrize("suffix", [".png", ".tif", ".npy"])
def test_label_map_corrupt_empty_truncated(tmp_path, suffix):
    path = tmp_path / f"x_labels{suffix}"
    path.write_bytes(b"")
    _expect_input_error(lambda: io.read_label_map(path), str(path), "empty")
    good = tmp_path / f"good_labels{suffix}"
    io.write_label_map(good, np.zeros((30, 30), np.uint8))
    path.write_bytes(good.read_bytes()[:20])
    _expect_input_error(lambda: io.read_label_map(path), str(path))


def test_label_map_shape_and_size_mismatch(tmp_path):
    path = _write_npy(tmp_path / "x_labels.npy", np.zeros((4, 5, 2), np.uint8))
    _expect_input_error(lambda: io.read_label_map(path), str(path), "2-D")
    path = _write_npy(tmp_path / "y_labels.npy", np.zeros((4, 5), np.uint8))
    _expect_input_error(
        lambda: io.read_label_map(path, expected_shape=(5, 4), frame="y.fits"), str(path), "y.fits", "4x5", "5x4"
    )
    path = _write_npy(tmp_path / "f_labels.npy", np.zeros((4, 5), np.float64) + 0.5)
    _expect_input_error(lambda: io.read_label_map(path), str(path), "unknown")


@given(values=st.lists(st.integers(-5, 300), min_size=1, max_size=12))
@SETTINGS
def test_label_values_property(tmp_path_factory, values):
    array = np.array(values, np.int32).reshape(1, -1)
    path = _write_npy(tmp_path_factory.mktemp("lab") / "p_labels.npy", array)
    if set(values) <= CLASS_SET:
        labels = io.read_label_map(path)
        assert labels.dtype == np.uint8 and np.array_equal(labels, array)
    else:
        _expect_input_error(lambda: io.read_label_map(path), str(path), "unknown label value")


def test_failed_label_write_leaves_nothing(tmp_path):
    _expect_input_error(lambda: io.write_label_map(tmp_path / "x_labels.png", np.full((3, 3), 9)), "x_labels.png")
    _expect_input_error(lambda: io.write_frame(tmp_path / "x.npy", np.zeros((2, 3, 5))), "x.npy", "3-D")
    _expect_input_error(lambda: io.write_frame(tmp_path / "x.fits", np.zeros((0, 3))), "x.fits", "no pixels")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- auto-labeler


def _check_labels(labels, shape):
    assert labels.shape == shape and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) <= CLASS_SET


@pytest.mark.parametrize("preset", ["physical", "seed-v1"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (7, 300), (33, 17)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_label_frame_small_odd_dtypes(preset, shape, dtype):
    _check_labels(label_frame(_noise(shape, dtype), preset, name="odd.fits"), shape)


@pytest.mark.parametrize("preset", ["physical", "seed-v1"])
@pytest.mark.parametrize("value", [0.0, -3.0, 1e30, -1e30, 1e6])
def test_label_frame_constant_and_huge(preset, value):
    _check_labels(label_frame(np.full((12, 10), value, np.float32), preset, name="c"), (12, 10))
    image = _noise((12, 10))
    image[3, 4] = value
    _check_labels(label_frame(image, preset, name="c"), (12, 10))


@given(
    rows=st.integers(1, 20),
    cols=st.integers(1, 20),
    scale=st.sampled_from([0.0, 1e-30, 1.0, 1e10, 1e30]),
    seed=st.integers(0, 1000),
)
@SETTINGS
def test_label_frame_property(rows, cols, scale, seed):
    image = (np.random.default_rng(seed).standard_normal((rows, cols)) * scale).astype(np.float32)
    _check_labels(label_frame(image, "physical", name="p"), (rows, cols))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_label_frame_refuses_nan_3d_empty(bad):
    image = _noise((5, 5))
    image[0, 0] = bad
    _expect_input_error(lambda: label_frame(image, name="nanframe"), "nanframe", "NaN or infinite")
    _expect_input_error(lambda: label_frame(_noise((3, 4, 5)), name="stack"), "stack", "shape")
    _expect_input_error(lambda: label_frame(np.zeros((0, 4)), name="none"), "none", "non-empty")


# ----------------------------------------------------------------------------- prediction


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_unet("small")


META = {"normalisation": "sigma", "normalisation_params": normalisation_params("sigma")}


def _check_prediction(model, image):
    prediction = predict_frame(model, META, image, source="pred.fits", probabilities=True)
    assert prediction.labels.shape == image.shape and prediction.labels.dtype == np.uint8
    assert set(np.unique(prediction.labels).tolist()) <= set(range(model.config.n_classes))
    assert prediction.probabilities.shape == (model.config.n_classes, *image.shape)
    assert np.isfinite(prediction.probabilities).all()
    np.testing.assert_allclose(prediction.probabilities.sum(0), 1, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (37, 1), (7, 300), (13, 29)])
@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32, np.float64])
def test_predict_small_odd_dtypes(model, shape, dtype):
    _check_prediction(model, _noise(shape, dtype))


@pytest.mark.parametrize("value", [0.0, 1e30, -1e30])
def test_predict_constant_and_huge(model, value):
    _check_prediction(model, np.full((9, 11), value, np.float32))
    image = _noise((9, 11))
    image[4, 5] = value
    _check_prediction(model, image)


@given(rows=st.integers(1, 24), cols=st.integers(1, 24), scale=st.sampled_from([0.0, 1.0, 1e30]))
@settings(max_examples=15, deadline=None)
def test_predict_property(model, rows, cols, scale):
    image = (np.random.default_rng(rows * 31 + cols).standard_normal((rows, cols)) * scale).astype(np.float32)
    _check_prediction(model, image)


def test_predict_refuses_nan_3d_empty(model):
    image = _noise((5, 5))
    image[1, 1] = np.nan
    _expect_input_error(lambda: predict_frame(model, META, image, source="nan.fits"), "nan.fits", "NaN")
    _expect_input_error(lambda: predict_frame(model, META, _noise((2, 3, 5)), source="s.fits"), "s.fits", "shape")
    _expect_input_error(lambda: predict_frame(model, META, np.zeros((0, 3)), source="e.fits"), "e.fits", "empty")


# ----------------------------------------------------------------------------- training

TINY = TrainConfig(
    epochs=1, steps_per_epoch=1, batch_size=2, tile_size=16, device="cpu", augment=False, max_val_tiles=4
)


def _frame(name, shape, seed=0, labels=None):
    image = _noise(shape, seed=seed)
    if labels is None:
        labels = label_frame(image, "physical", name=name)
    return LabelledFrame(name, image, labels)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 300), (13, 29)])
def test_train_frames_smaller_than_tile_and_odd_sizes(tmp_path, shape):
    frames = [_frame("a", shape, 0), _frame("b", shape, 1)]
    result = train(frames, tmp_path / "m.safetensors", TINY)
    assert result.model_path.exists() and result.best_epoch == 1


def test_train_single_one_pixel_frame(tmp_path):
    result = train([_frame("only", (1, 1))], tmp_path / "m.safetensors", TINY)
    assert result.model_path.exists()


def test_train_with_absent_classes(tmp_path):
    frames = [
        _frame("a", (20, 20), 0, labels=np.zeros((20, 20), np.uint8)),
        _frame("b", (20, 20), 1, labels=np.zeros((20, 20), np.uint8)),
    ]
    result = train(frames, tmp_path / "m.safetensors", TINY)
    assert result.model_path.exists()


def test_train_all_unlabelled_is_refused_and_writes_nothing(tmp_path):
    frames = [_frame("a", (20, 20), 0, labels=np.full((20, 20), 255, np.uint8))]
    _expect_input_error(lambda: train(frames, tmp_path / "m.safetensors", TINY), "unlabelled")
    assert list(tmp_path.iterdir()) == []


def test_labelled_frame_size_mismatch():
    _expect_input_error(
        lambda: LabelledFrame("mismatch.fits", _noise((4, 5)), np.zeros((5, 4), np.uint8)),
        "mismatch.fits", "4x5", "5x4",
    )
    image = _noise((4, 5))
    image[0, 0] = np.inf
    _expect_input_error(lambda: LabelledFrame("inf.fits", image, np.zeros((4, 5), np.uint8)), "inf.fits", "NaN")


def test_train_label_map_with_unknown_values(tmp_path):
    path = _write_npy(tmp_path / "a_labels.npy", np.full((6, 6), 9, np.uint8))
    _expect_input_error(lambda: io.read_label_map(path, expected_shape=(6, 6), frame="a.npy"), str(path), "9")


def test_train_huge_and_constant_frames(tmp_path):
    frames = [
        LabelledFrame("const", np.full((10, 12), 5.0, np.float32), np.zeros((10, 12), np.uint8)),
        LabelledFrame("huge", np.full((10, 12), 1e30, np.float32), np.zeros((10, 12), np.uint8)),
    ]
    result = train(frames, tmp_path / "m.safetensors", TINY)
    assert all(np.isfinite(row["train_loss"]) for row in result.history)


def test_train_bad_config_writes_nothing(tmp_path):
    _expect_input_error(
        lambda: train([_frame("a", (8, 8))], tmp_path / "m.safetensors", TrainConfig(tile_size=0, device="cpu")),
        "tile size",
    )
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- CLI


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("ccdseg ") and ": error: " in line]
    assert len(errors) == 1, err  # progress bars may share stderr; the error itself is one line
    err = errors[0]
    for word in words:
        assert word in err, err
    return err


def test_cli_corrupt_frame(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "bad.fits").write_bytes(b"SIMPLE  = garbage" * 10)
    assert main(["label", str(data), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "bad.fits")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_cli_corrupt_model_file(tmp_path, capsys):
    frame = _write_npy(tmp_path / "f.npy", _noise((8, 8)))
    model_path = tmp_path / "m.safetensors"
    model_path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + b"\0" * 50)
    out = tmp_path / "pred"
    assert main(["predict", str(model_path), str(frame), "--out", str(out)]) == 2
    _one_line_error(capsys, "m.safetensors")
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_missing_folder(tmp_path, capsys):
    assert main(["label", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "nowhere")
    assert main(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.safetensors")]) == 2
    _one_line_error(capsys, "nowhere")
    assert not (tmp_path / "m.safetensors").exists()
