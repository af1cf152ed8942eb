import json

import numpy as np
import pytest

from napari_ccdseg.dataset import LabelledFrame
from napari_ccdseg.errors import InputError
from napari_ccdseg.modelfile import load_model, read_metadata
from napari_ccdseg.train import TrainConfig, scores_from_confusion, split_frames, train
from napari_ccdseg.updates import EpochUpdate, LogUpdate, StepUpdate

FAST = dict(epochs=2, steps_per_epoch=2, batch_size=2, tile_size=32, device="cpu")


def test_training_writes_model_and_history(tiny_frames, tmp_path):
    updates = []
    result = train(tiny_frames, tmp_path / "m.safetensors", TrainConfig(**FAST), progress=updates.append)
    model, meta = load_model(result.model_path)
    assert meta["normalisation"] == "sigma"
    assert meta["training"]["epochs"] == 2
    assert len(result.history) == 2 and result.stopped is None
    for key in ("train_loss", "val_loss", "val_accuracy", "val_f1_cluster", "lr"):
        assert np.isfinite(result.history[0][key])
    history = json.loads((tmp_path / "m_history.json").read_text())
    assert history == result.history
    csv_lines = (tmp_path / "m_history.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,train_loss") and len(csv_lines) == 3
    kinds = {type(u) for u in updates}
    assert kinds == {StepUpdate, EpochUpdate, LogUpdate}
    assert any("training on cpu" in u.message for u in updates if isinstance(u, LogUpdate))


@pytest.mark.parametrize("native,requested,used", [(True, True, True), (False, True, False), (True, False, False)])
def test_bfloat16_autocast_only_where_native_and_asked_and_it_is_recorded(
    tiny_frames, tmp_path, monkeypatch, native, requested, used
):
    from napari_ccdseg import train as train_module

    monkeypatch.setattr(train_module, "native_bfloat16", lambda device: native)
    updates = []
    config = TrainConfig(**{**FAST, "epochs": 1, "mixed_precision": requested})
    result = train(tiny_frames, tmp_path / "m.safetensors", config, progress=updates.append)
    assert read_metadata(result.model_path)["bfloat16_autocast"] is used
    logged = [u.message for u in updates if isinstance(u, LogUpdate) and "bfloat16 autocast" in u.message]
    assert len(logged) == int(used)


def test_cancel_stops_after_the_current_step_and_keeps_a_model(tiny_frames, tmp_path):
    steps = []

    def progress(update):
        if isinstance(update, StepUpdate):
            steps.append(update)

    result = train(
        tiny_frames, tmp_path / "m.safetensors", TrainConfig(**{**FAST, "epochs": 5}),
        progress=progress, should_stop=lambda: len(steps) >= 3,
    )
    assert result.stopped == "cancelled"
    assert len(steps) == 3
    assert load_model(result.model_path)[1]["history_summary"]["epoch"] == result.best_epoch


def test_training_is_deterministic_on_cpu(tiny_frames, tmp_path):
    a = train(tiny_frames, tmp_path / "a.safetensors", TrainConfig(**FAST))
    b = train(tiny_frames, tmp_path / "b.safetensors", TrainConfig(**FAST))
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]


def test_fine_tune_starts_from_the_saved_weights(tiny_frames, tmp_path):
    first = train(tiny_frames, tmp_path / "a.safetensors", TrainConfig(**FAST))
    # A learning rate so small that two Adam steps move no weight by more than ~1e-9: what comes
    # out is what the run started from.
    still = TrainConfig(**{**FAST, "epochs": 1, "learning_rate": 1e-9, "seed": 1})
    tuned = train(tiny_frames[:1], tmp_path / "b.safetensors", still, init_model=first.model_path)
    fresh = train(tiny_frames[:1], tmp_path / "c.safetensors", still)
    start = dict(load_model(first.model_path)[0].named_parameters())
    for name, weights in load_model(tuned.model_path)[0].named_parameters():
        np.testing.assert_allclose(weights.detach().numpy(), start[name].detach().numpy(), atol=1e-6, err_msg=name)
    fresh_weights = dict(load_model(fresh.model_path)[0].named_parameters())
    assert any(not np.allclose(fresh_weights[name].detach().numpy(), start[name].detach().numpy()) for name in start)
    assert read_metadata(tuned.model_path)["normalisation"] == "sigma"


def test_adadelta_and_seed_architecture_run(tiny_frames, tmp_path):
    config = TrainConfig(**{**FAST, "epochs": 1, "optimiser": "adadelta", "learning_rate": 1.0})
    config.architecture = "seed"
    result = train(tiny_frames[:2], tmp_path / "s.safetensors", config)
    assert read_metadata(result.model_path)["architecture"]["widths"][-1] == 512


def test_single_frame_is_split_by_rows(tiny_frames):
    train_part, val_part = split_frames(tiny_frames[:1], 0.25, seed=0)
    assert train_part[0].image.shape[0] == 48 and val_part[0].image.shape[0] == 16


def test_frame_split_is_seeded_and_disjoint(tiny_frames):
    a = split_frames(tiny_frames, 0.25, seed=1)
    b = split_frames(tiny_frames, 0.25, seed=1)
    assert [f.name for f in a[1]] == [f.name for f in b[1]]
    assert not {f.name for f in a[0]} & {f.name for f in a[1]}


def test_scores_from_confusion():
    confusion = np.array([[8, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]])
    scores = scores_from_confusion(confusion)
    assert scores["accuracy"] == pytest.approx(9 / 12)
    assert scores["f1_cluster"] == pytest.approx(2 * 1 / (1 + 2))
    assert scores["f1_glowing"] == 0


def test_bad_settings_and_data_give_clear_errors(tiny_frames, tmp_path):
    with pytest.raises(InputError, match="optimiser"):
        train(tiny_frames, tmp_path / "m.safetensors", TrainConfig(**{**FAST, "optimiser": "sgd"}))
    with pytest.raises(InputError, match="sim0: label map is 10x10 but the frame is 64x64"):
        LabelledFrame("sim0", tiny_frames[0].image, np.zeros((10, 10), np.uint8))
    colour = LabelledFrame("rgb", np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8))
    with pytest.raises(InputError, match="rgb: mixes colour images and CCD frames"):
        train([*tiny_frames[:2], colour], tmp_path / "m.safetensors", TrainConfig(**FAST))


def test_model_path_gets_its_suffix_and_history_keeps_dotted_names(tiny_frames, tmp_path):
    result = train(tiny_frames, tmp_path / "run.v1", TrainConfig(**{**FAST, "epochs": 1}))
    assert result.model_path == tmp_path / "run.v1.safetensors" and result.model_path.exists()
    assert (tmp_path / "run.v1_history.json").exists() and (tmp_path / "run.v1_history.csv").exists()


def test_fine_tuning_refuses_to_overwrite_its_starting_model(tiny_frames, tmp_path):
    first = train(tiny_frames, tmp_path / "m.safetensors", TrainConfig(**{**FAST, "epochs": 1}))
    before = first.model_path.read_bytes()
    with pytest.raises(InputError, match="would overwrite the model it starts from"):
        train(tiny_frames, first.model_path, TrainConfig(**FAST), init_model=first.model_path)
    assert first.model_path.read_bytes() == before


def test_an_exception_mid_epoch_keeps_the_last_good_model_and_history(tiny_frames, tmp_path):
    path = tmp_path / "m.safetensors"

    def progress(update):
        if isinstance(update, StepUpdate) and update.epoch == 2 and update.step == 1:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(tiny_frames, path, TrainConfig(**{**FAST, "epochs": 3}), progress=progress)
    model, meta = load_model(path)
    assert meta["history_summary"]["epoch"] == 1
    assert [row["epoch"] for row in json.loads((tmp_path / "m_history.json").read_text())] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "m_history.csv", "m_history.json"]


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_band_augment_puts_thin_strips_of_the_band_on_tiles_that_had_none(share):
    from napari_ccdseg.classes import GLOWING
    from napari_ccdseg.train import _prepare, _TileSampler

    labels = np.zeros((64, 256), np.uint8)
    labels[:, :40] = GLOWING
    image = np.random.default_rng(0).normal(size=labels.shape).astype(np.float32) + 5.0 * (labels == GLOWING)
    frames = _prepare([LabelledFrame("banded", image, labels)], "sigma", {"clip": 10.0, "scale": "robust"})
    config = TrainConfig(**{**FAST, "band_augment": share, "cluster_oversample": 0.0})
    sampler = _TileSampler(frames, config)
    strips = 0
    for _ in range(200):
        _, tile_labels = sampler.tile()
        glowing = tile_labels == GLOWING
        whole_lines = max(glowing.all(axis=0).sum(), glowing.all(axis=1).sum())
        strips += bool(0 < whole_lines <= 16 and glowing.sum() == 32 * whole_lines)
    assert (strips > 60) if share else (strips < 20)


def test_band_augment_must_be_a_share(tiny_frames, tmp_path):
    with pytest.raises(InputError, match="band augment"):
        train(tiny_frames, tmp_path / "m.safetensors", TrainConfig(**{**FAST, "band_augment": 1.5}))


def test_hot_augment_puts_hot_pixels_with_the_frames_values_on_tiles_far_from_its_hot_block():
    from napari_ccdseg.classes import HOT_PIXEL
    from napari_ccdseg.train import _prepare, _TileSampler

    labels = np.zeros((64, 256), np.uint8)
    labels[:, :40] = HOT_PIXEL  # hot pixels only in a dense block, as in the original's training images
    image = np.random.default_rng(0).normal(size=labels.shape).astype(np.float32) + 50.0 * (labels == HOT_PIXEL)
    frames = _prepare([LabelledFrame("block", image, labels)], "sigma", {"clip": 10.0, "scale": "robust"})
    sampler = _TileSampler(frames, TrainConfig(**{**FAST, "hot_augment": 1.0, "cluster_oversample": 0.0}))
    lone = 0
    for _ in range(100):
        tile_image, tile_labels = sampler.tile()
        hot = tile_labels == HOT_PIXEL
        if 0 < hot.sum() <= 8 * 6:  # a few pasted pixels, not a piece of the block
            lone += 1
            assert tile_image[hot].min() > 5  # the block's values (normalised), not noise
    assert lone > 30


def test_learning_rate_halves_on_plateaus_but_not_below_a_hundredth_of_its_start(tiny_frames, tmp_path):
    # a learning rate too small to move the loss: every epoch is a plateau, so it halves each time
    config = TrainConfig(**{**FAST, "epochs": 10, "steps_per_epoch": 1, "learning_rate": 1e-12, "plateau_patience": 0,
                            "early_stopping": 100})
    result = train(tiny_frames, tmp_path / "m.safetensors", config)
    rates = [row["lr"] for row in result.history]
    assert rates[0] == pytest.approx(1e-12)
    assert rates[-1] == pytest.approx(1e-14) and min(rates) == pytest.approx(1e-14)
