"""The npe2 contributions: reader, Labels writer and sample data, directly and through a real viewer."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import napari
import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from napari_ccdseg import _napari, io
from napari_ccdseg.errors import InputError

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before napari starts Qt; pytest-xvfb gives it a display

SHAPE = (64, 64)
NPE2 = Path(sys.executable).with_name("npe2")


@pytest.fixture
def frame() -> np.ndarray:
    return np.random.default_rng(0).normal(100.0, 2.0, SHAPE).astype(np.float32)


@pytest.fixture
def two_amplifiers(tmp_path, frame) -> Path:
    path = tmp_path / "run.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(frame, name="AMP1"), fits.ImageHDU(frame + 5, name="AMP2")]).writeto(
        path
    )
    return path


def test_manifest_validates():
    result = subprocess.run([str(NPE2), "validate", "napari-ccdseg"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_widget_is_imported_from_its_own_module_and_simulate_needs_no_torch():
    """The Plugins menu opens a widget by its manifest entry: Simulate must not pull in torch."""
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-ccdseg")
    widgets = {c.python_name for c in manifest.contributions.commands if c.id.endswith("_widget")}
    assert all(name.startswith("napari_ccdseg.widgets.") for name in widgets), widgets
    import napari_ccdseg.widgets as package

    for python_name in widgets:  # every manifest widget is also `from napari_ccdseg.widgets import X`
        module_name, class_name = python_name.split(":")
        assert class_name in package.__all__
        assert getattr(package, class_name) is getattr(importlib.import_module(module_name), class_name)
    module, name = next(n for n in widgets if n.endswith(":SimulateWidget")).split(":")
    code = f"import sys, {module}; {module}.{name}; print(sorted(m for m in ('torch', 'napari_ccdseg.train') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("path", ["notes.txt", "image.jpg", ["a.fits", "b.csv"], []])
def test_reader_declines_files_it_does_not_handle(path):
    assert _napari.get_reader(path) is None


def test_reader_declines_directories(tmp_path):
    (tmp_path / "folder.fits").mkdir()
    assert _napari.get_reader(str(tmp_path / "folder.fits")) is None


def test_reader_gives_one_image_layer_per_extension(two_amplifiers, frame):
    layers = _napari.get_reader(str(two_amplifiers))(str(two_amplifiers))
    assert [(kw["name"], kind) for _, kw, kind in layers] == [("AMP1 · run", "image"), ("AMP2 · run", "image")]
    data, kwargs, _ = layers[1]
    np.testing.assert_array_equal(data, frame + 5)
    meta = kwargs["metadata"]
    assert meta["header"]["EXTNAME"] == "AMP2" and meta["source"] == str(two_amplifiers)
    assert (meta["ccdseg_frame"], meta["ccdseg_hdu"], meta["ccdseg_extname"]) == ("run[AMP2]", 2, "AMP2")
    # side by side: the second amplifier starts right of the first, with a gap
    assert layers[0][1]["translate"] == (0.0, 0.0)
    assert layers[1][1]["translate"][0] == 0.0 and layers[1][1]["translate"][1] > SHAPE[1]


def test_one_amplifier_alone_through_the_environment(two_amplifiers, frame, monkeypatch):
    monkeypatch.setenv(_napari.AMPLIFIER_ENV, "amp2")
    (data, kwargs, _), = _napari.read_layers(two_amplifiers)
    np.testing.assert_array_equal(data, frame + 5)
    assert kwargs["name"] == "AMP2 · run" and kwargs["translate"] == (0.0, 0.0)
    monkeypatch.setenv(_napari.AMPLIFIER_ENV, "AMP9")
    with pytest.raises(InputError, match=r"run.fits.*AMP9.*AMP1, AMP2"):
        _napari.read_layers(two_amplifiers)


def test_long_file_names_keep_the_amplifier_and_their_end_in_view(tmp_path, frame):
    path = tmp_path / "damicm_avg_Image_skipper_2024-05-17_run15.fits"
    fits.HDUList([fits.PrimaryHDU(), *(fits.ImageHDU(frame, name=f"CCD_{c}") for c in "AB")]).writeto(path)
    names = [kw["name"] for _, kw, _ in _napari.read_layers(path)]
    assert names == ["CCD_A · …2024-05-17_run15", "CCD_B · …2024-05-17_run15"]


def test_reader_contrast_ignores_glitch_pixels(tmp_path, frame):
    frame[3, 3] = 1e7
    path = io.write_frame(tmp_path / "g.npy", frame)
    (_, kwargs, _), = _napari.get_reader(str(path))(str(path))
    assert kwargs["contrast_limits"][1] < 200


def test_reader_reads_a_list_of_frames(tmp_path, frame):
    paths = [str(io.write_frame(tmp_path / f"{n}.npy", frame)) for n in "ab"]
    layers = _napari.get_reader(paths)(paths)
    assert [kw["name"] for _, kw, _ in layers] == ["a", "b"]


def test_reader_adds_the_label_map_beside_the_frame(tmp_path, frame):
    path = io.write_frame(tmp_path / "x.fits", frame)
    labels = np.zeros(SHAPE, np.uint8)
    labels[10:20, 10:20] = 3
    io.write_label_map(tmp_path / "x_labels.png", labels)
    layers = _napari.get_reader(str(path))(str(path))
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    data, kwargs, _ = layers[1]
    assert kwargs["name"] == "x labels"
    assert "colormap" in kwargs
    assert kwargs["metadata"]["ccdseg_reference"] == "file"  # a reference, not a simulation's truth
    np.testing.assert_array_equal(data, labels)


def test_a_simulated_files_labels_are_marked_as_its_truth(tmp_path):
    import dataclasses

    from napari_ccdseg.simulate import SIM_PRESETS, AmplifierLayout, simulate_dataset

    config = dataclasses.replace(SIM_PRESETS["conventional"], rows=32, cols=48)
    path, = simulate_dataset(tmp_path, 1, config, fmt="fits", layout=AmplifierLayout(amplifiers=2))
    layers = _napari.read_layers(path)
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("AMP1 · sim_000", "image"), ("AMP1 · sim_000 labels", "labels"),
        ("AMP2 · sim_000", "image"), ("AMP2 · sim_000 labels", "labels"),
    ]
    for (_, image, _), (_, labels, _) in (layers[:2], layers[2:]):
        assert labels["metadata"]["ccdseg_reference"] == "simulation"
        assert labels["metadata"]["simulation"]["config"]["rows"] == 32
        assert (labels["translate"], labels["scale"]) == (image["translate"], image["scale"])


def test_reader_refuses_a_label_map_of_the_wrong_size(tmp_path, frame):
    path = io.write_frame(tmp_path / "x.npy", frame)
    io.write_label_map(tmp_path / "x_labels.npy", np.zeros((32, 64), np.uint8))
    with pytest.raises(InputError, match="x_labels.npy.*x.npy"):
        _napari.get_reader(str(path))(str(path))


def test_reader_opens_colour_images_as_rgb(tmp_path):
    Image.fromarray(np.zeros((*SHAPE, 3), np.uint8)).save(tmp_path / "c.png")
    (data, kwargs, _), = _napari.get_reader(str(tmp_path / "c.png"))(str(tmp_path / "c.png"))
    assert data.shape == (*SHAPE, 3) and kwargs["rgb"] is True


def test_reader_errors_name_the_file(tmp_path):
    (tmp_path / "bad.fits").write_bytes(b"not fits" * 100)
    reader = _napari.get_reader(str(tmp_path / "bad.fits"))
    with pytest.raises(InputError, match="bad.fits"):
        reader(str(tmp_path / "bad.fits"))


def test_write_labels(tmp_path):
    labels = np.full(SHAPE, 255, dtype=np.int32)
    labels[:5] = 2
    written = _napari.write_labels(str(tmp_path / "x_labels.png"), labels, {})
    assert written == [str(tmp_path / "x_labels.png")]
    np.testing.assert_array_equal(io.read_label_map(written[0]), labels)


def test_write_labels_refuses_values_outside_the_classes(tmp_path):
    with pytest.raises(InputError, match="unknown label value"):
        _napari.write_labels(str(tmp_path / "x_labels.png"), np.full(SHAPE, 5), {})


def test_viewer_opens_each_fits_extension_as_a_layer(make_napari_viewer, two_amplifiers):
    viewer = make_napari_viewer()
    viewer.open(str(two_amplifiers), plugin="napari-ccdseg")
    assert [layer.name for layer in viewer.layers] == ["AMP1 · run", "AMP2 · run"]
    assert all(isinstance(layer, napari.layers.Image) for layer in viewer.layers)
    amp1, amp2 = viewer.layers
    assert amp1.extent.world[1, 1] < amp2.extent.world[0, 1]  # side by side, not stacked


def test_viewer_sample_adds_frame_and_truth(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ccdseg", "simulated_frame")
    assert [layer.name for layer in viewer.layers] == ["simulated frame", "simulated frame truth"]
    image, truth = viewer.layers
    assert isinstance(image, napari.layers.Image) and isinstance(truth, napari.layers.Labels)
    assert image.data.shape == truth.data.shape
    assert set(np.unique(truth.data)) <= set(io.LABEL_VALUES)


def test_a_label_map_opened_alone_becomes_a_labels_layer(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:6, 3:6] = 3
    path = io.write_label_map(tmp_path / "run1_labels.png", labels)
    layers = _napari.get_reader(str(path))(str(path))
    assert [(kwargs["name"], kind) for _, kwargs, kind in layers] == [("run1 labels", "labels")]
    np.testing.assert_array_equal(layers[0][0], labels)


def test_each_extension_gets_its_own_label_map(tmp_path):
    from astropy.io import fits

    path = tmp_path / "multi.fits"
    hdus = [fits.PrimaryHDU()] + [
        fits.ImageHDU(np.zeros(SHAPE, np.float32), name=name) for name in ("AMP1", "AMP2")
    ]
    fits.HDUList(hdus).writeto(path)
    amp2 = np.zeros(SHAPE, np.uint8)
    amp2[0, 0] = 3
    io.write_label_map(tmp_path / "multi_AMP2_labels.png", amp2)
    layers = _napari.read_layers(path)
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["AMP1 · multi", "AMP2 · multi", "AMP2 · multi labels"]
    np.testing.assert_array_equal(layers[-1][0], amp2)
    assert layers[-1][1]["translate"] == layers[1][1]["translate"] != (0.0, 0.0)


@pytest.mark.parametrize("suffix", [".fits.gz", ".fit.gz", ".fts.gz"])
def test_gzipped_fits_is_offered_to_napari_and_read(tmp_path, frame, suffix):
    import fnmatch
    import gzip

    from npe2 import PluginManifest

    readers = PluginManifest.from_distribution("napari-ccdseg").contributions.readers
    assert any(fnmatch.fnmatch(f"run{suffix}", p) for r in readers for p in r.filename_patterns)
    fits.PrimaryHDU(frame).writeto(tmp_path / "run.fits")
    path = tmp_path / f"run{suffix}"
    path.write_bytes(gzip.compress((tmp_path / "run.fits").read_bytes()))
    (data, kwargs, kind), = _napari.get_reader(str(path))(str(path))
    assert kind == "image" and "run" in kwargs["name"]
    np.testing.assert_array_equal(data, frame)


def test_a_sample_opened_twice_pairs_each_copy_with_its_own_truth(make_napari_viewer):
    """napari renames the second copies `simulated frame [1]` and `simulated frame truth [1]`:
    the copy's truth must pair with the copy, not be lost (nor taken for the first frame's)."""
    from napari_ccdseg.widgets._layers import derived_from, own_class_map, paired_labels, split_labels_name

    viewer = make_napari_viewer()
    viewer.open_sample("napari-ccdseg", "simulated_frame")
    viewer.open_sample("napari-ccdseg", "simulated_frame")
    first, copy = viewer.layers["simulated frame"], viewer.layers["simulated frame [1]"]
    assert paired_labels(viewer, first)["truth"] is viewer.layers["simulated frame truth"]
    assert paired_labels(viewer, copy)["truth"] is viewer.layers["simulated frame truth [1]"]
    assert own_class_map(viewer, copy) == "simulated frame truth [1]"
    assert derived_from(viewer, first) == [viewer.layers["simulated frame truth"]]
    assert derived_from(viewer, copy) == [viewer.layers["simulated frame truth [1]"]]
    assert split_labels_name("simulated frame truth [1]") == ("simulated frame [1]", "truth")
    assert split_labels_name("simulated frame [1] prediction") == ("simulated frame [1]", "prediction")
