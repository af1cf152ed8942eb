"""Model files: exact round trips, atomic saves, and clear refusals of anything unsafe or wrong."""

import json
import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_ccdseg import modelfile
from napari_ccdseg.classes import CLASS_NAMES
from napari_ccdseg.errors import InputError
from napari_ccdseg.modelfile import FORMAT_VERSION, load_model, read_metadata, save_model
from napari_ccdseg.unet import UNetConfig, build_unet

TINY = UNetConfig(widths=(4, 8, 16))
METADATA = {
    "normalisation": "sigma",
    "label_preset": "physical",
    "label_params": {"seed_sigma": np.float64(5.0)},
    "training": {"epochs": 3, "data": [Path("frames")]},
    "history_summary": {"best_val_loss": np.float32(0.25)},
}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_unet(TINY).eval()


@pytest.fixture
def saved(tmp_path, model):
    return save_model(tmp_path / "model.safetensors", model, METADATA)


def _rewrite_metadata(path: Path, change) -> None:
    """Re-save the same weights with edited metadata, as a hand-edited or foreign file would be."""
    model, metadata = load_model(path)
    change(metadata)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, path, metadata={"ccdseg": json.dumps(metadata)})


class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_round_trip_gives_identical_outputs(saved, model):
    loaded, metadata = load_model(saved)
    x = torch.randn(2, 1, 37, 45)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.config == TINY and not loaded.training
    assert metadata["classes"] == list(CLASS_NAMES)
    assert metadata["format_version"] == FORMAT_VERSION
    assert metadata["label_params"] == {"seed_sigma": 5.0}
    assert metadata["normalisation"] == "sigma"
    assert metadata["normalisation_params"] == {"clip": 10.0, "scale": "robust"}  # none recorded: pre-frame_scale
    assert metadata["training"]["data"] == ["frames"]
    assert metadata == read_metadata(saved)


def test_channels_last_model_saves(tmp_path, model):
    path = save_model(tmp_path / "m", model.to(memory_format=torch.channels_last), METADATA)
    assert path.name == "m.safetensors"
    assert load_model(path)[0].config == TINY


def test_normalisation_is_required_and_completed(tmp_path, model):
    with pytest.raises(ValueError, match="normalisation"):
        save_model(tmp_path / "m.safetensors", model, {})
    path = save_model(tmp_path / "m.safetensors", model, {"normalisation": "unit"})
    assert read_metadata(path)["normalisation_params"] == {}
    meta = {"normalisation": "sigma", "normalisation_params": {"clip": 4}}
    assert read_metadata(save_model(path, model, meta))["normalisation_params"] == {"clip": 4.0, "scale": "robust"}


def test_save_leaves_no_temp_file(saved):
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model.safetensors"]


def _full_disk(*args):
    raise OSError(28, "No space left on device")


def _ctrl_c(*args):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("target", "failure", "error"),
    [
        ((os, "replace"), _full_disk, InputError),
        ((Path, "write_bytes"), _ctrl_c, KeyboardInterrupt),
    ],
)
def test_failing_save_keeps_the_previous_file(saved, model, monkeypatch, target, failure, error):
    monkeypatch.setattr(*target, failure)
    with pytest.raises(error):
        save_model(saved, build_unet(TINY), METADATA)
    monkeypatch.undo()
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model.safetensors"]
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(load_model(saved)[0](x), model(x), rtol=0, atol=0)


def test_write_error_names_the_file(saved, monkeypatch):
    monkeypatch.setattr(os, "replace", _full_disk)
    with pytest.raises(InputError, match=r"model.safetensors: could not write the file \(No space left.*unchanged"):
        save_model(saved, build_unet(TINY), METADATA)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_payload_is_refused_without_running(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    payload = {"state_dict": _Payload(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(InputError, match="model.safetensors.*pickled"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 5, 8, 100, -10])
def test_truncated_file_names_the_file(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[:keep])
    with pytest.raises(InputError, match="model.safetensors"):
        load_model(saved)


def test_other_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="missing.safetensors not found"):
        load_model(tmp_path / "missing.safetensors")
    text = tmp_path / "notes.safetensors"
    text.write_text("a model, honestly " * 10)
    with pytest.raises(InputError, match="notes.safetensors is not a safetensors"):
        load_model(text)
    header = b"[1, 2]"
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(InputError, match="bare.safetensors is not a safetensors"):
        load_model(bare)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, plain)
    with pytest.raises(InputError, match="not a ccdseg model"):
        load_model(plain)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(classes=["background", "muon"]), "classes"),
        (lambda m: m.pop("format_version"), "no format_version"),
        (lambda m: m.update(format_version=FORMAT_VERSION + 1), "upgrade"),
        (lambda m: m["architecture"].update(in_channels=3), "input channels"),
        (lambda m: m["architecture"].update(kernel=5), "architecture"),
        (lambda m: m.update(normalisation="zscore"), "normalisation"),
        (lambda m: m.update(normalisation_params={"knee": 3}), "normalisation"),
        (lambda m: m.pop("normalisation"), "normalisation"),
    ],
)
def test_wrong_metadata_is_refused(saved, change, message):
    _rewrite_metadata(saved, change)
    with pytest.raises(InputError, match=f"model.safetensors.*{message}"):
        load_model(saved)


def test_weights_that_do_not_fit_are_refused(saved):
    _rewrite_metadata(saved, lambda m: m["architecture"].update(widths=[4, 8, 32]))
    with pytest.raises(InputError, match="wrong shapes"):
        load_model(saved)


def test_other_package_version_only_warns(saved, monkeypatch):
    _rewrite_metadata(saved, lambda m: m.update(package_version="0.0.9"))
    with pytest.warns(UserWarning, match="0.0.9"):
        load_model(saved)
    monkeypatch.setattr(modelfile, "__version__", "0.0.1")  # same minor release: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_metadata(saved)
