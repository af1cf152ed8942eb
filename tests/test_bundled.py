"""Bundled models by name in the CLI: ``ccdseg models``, and ``predict``/``evaluate`` with ``default``."""

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from napari_ccdseg import bundled
from napari_ccdseg.cli import main
from napari_ccdseg.io import read_label_map
from napari_ccdseg.modelfile import save_model
from napari_ccdseg.unet import UNetConfig, build_unet


def _tiny_model(path):
    """An untrained three-level U-Net: loads and predicts in a blink."""
    return save_model(path, build_unet(UNetConfig(widths=(4, 8, 16))), {"normalisation": "sigma"})


@pytest.fixture
def bundled_dir(tmp_path, monkeypatch):
    """A package models/ folder holding ``default`` with its card."""
    folder = tmp_path / "models"
    folder.mkdir()
    _tiny_model(folder / "default.safetensors")
    (folder / "default.json").write_text(json.dumps({"description": "tiny test model"}))
    monkeypatch.setattr(bundled, "BUNDLED_DIR", folder)
    return folder


@pytest.fixture
def frame(tmp_path):
    path = tmp_path / "frame.npy"
    np.save(path, np.random.default_rng(0).normal(100.0, 2.0, size=(64, 64)).astype(np.float32))
    return path


def test_models_lists_bundled_models_with_their_card(bundled_dir, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "default: tiny test model (" in out
    assert str(bundled_dir / "default.safetensors") in out


def test_models_says_when_none_is_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bundled, "BUNDLED_DIR", tmp_path)
    assert main(["models"]) == 0
    assert "no bundled models installed" in capsys.readouterr().out


def test_predict_with_the_bundled_default(bundled_dir, frame, tmp_path):
    out = tmp_path / "pred"
    assert main(["predict", "default", str(frame), "--out", str(out), "--device", "cpu"]) == 0
    assert read_label_map(out / "frame_labels.png").shape == (64, 64)


def test_evaluate_against_physical_with_the_bundled_default(bundled_dir, frame, tmp_path):
    out = tmp_path / "agree"
    assert main(["evaluate", "default", str(frame), "--against", "physical", "--out", str(out)]) == 0
    assert json.loads((out / "agreement.json").read_text())["model"] == "default"


def test_unknown_name_lists_the_bundled_models(bundled_dir, frame, tmp_path, capsys):
    assert main(["predict", "nosuch", str(frame), "--out", str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err
    assert "nosuch: no such model file" in err and "(bundled: default)" in err
    assert "Traceback" not in err


def test_a_real_file_named_like_a_bundled_model_wins(bundled_dir, frame, tmp_path, monkeypatch):
    (bundled_dir / "default.safetensors").write_bytes(b"broken")  # using it would fail
    monkeypatch.chdir(tmp_path)
    _tiny_model(tmp_path / "default.safetensors").rename(tmp_path / "default")
    assert main(["predict", "default", str(frame), "--out", "pred", "--device", "cpu"]) == 0
    assert (tmp_path / "pred" / "frame_labels.png").exists()


def test_scheduler_path_resolves_the_name_before_starting_workers(bundled_dir, frame, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    from napari_ccdseg import batch

    @contextmanager
    def in_process(scheduler):
        """One worker thread in this process instead of a cluster of worker processes: fast."""
        with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
            yield client

    monkeypatch.setattr(batch, "connect", in_process)
    out = tmp_path / "pred"
    assert main(["predict", "default", str(frame), "--out", str(out), "--scheduler", "local", "--device", "cpu"]) == 0
    assert read_label_map(out / "frame_labels.png").shape == (64, 64)
    assert main(["predict", "nosuch", str(frame), "--out", str(out), "--scheduler", "local"]) == 2


def test_the_name_train_out_was_given_is_the_name_predict_and_fine_tune_take(frame, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "data", "--n", "2", "--size", "64", "64"]) == 0
    tiny = ["--epochs", "1", "--steps", "1", "--batch-size", "2", "--tile", "32", "--device", "cpu"]
    assert main(["train", "data", "--out", "m", *tiny]) == 0
    assert (tmp_path / "m.safetensors").is_file() and not (tmp_path / "m").exists()
    assert main(["predict", "m", str(frame), "--out", "pred", "--device", "cpu"]) == 0
    assert (tmp_path / "pred" / "frame_labels.png").is_file()
    assert main(["train", "data", "--out", "tuned", "--fine-tune", "m", *tiny]) == 0
    capsys.readouterr()
    assert main(["predict", "nothing-here", str(frame), "--out", "pred2"]) == 2
    assert "nothing-here.safetensors" in capsys.readouterr().err


def test_resolve_model_rules(bundled_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = bundled_dir / "default.safetensors"
    assert bundled.resolve_model("") == bundled.resolve_model(None) == bundled.resolve_model("default") == default
    _tiny_model(tmp_path / "default")  # a user's own file named like the bundled model wins when typed
    assert bundled.resolve_model("default") == Path("default.safetensors")
    assert bundled.resolve_model(str(tmp_path / "default")) == tmp_path / "default.safetensors"
    assert bundled.resolve_model("") == default  # an empty field never means a file
    monkeypatch.setattr(bundled, "BUNDLED_DIR", tmp_path / "none")
    with pytest.raises(bundled.InputError, match="choose a model file"):
        bundled.resolve_model("")
