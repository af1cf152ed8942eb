import numpy as np
import pytest
import torch
from torch import nn

from napari_ccdseg.predict import blend_window, predict_normalised, tile_starts
from napari_ccdseg.unet import UNetConfig, build_unet
from napari_ccdseg.updates import StepUpdate


class PointwiseModel(nn.Module):
    """Logits that depend on each pixel alone: tiling must then change nothing."""

    def __init__(self):
        super().__init__()
        self.config = UNetConfig()
        self.head = nn.Conv2d(1, self.config.n_classes, 1)
        with torch.no_grad():
            self.head.weight[:] = torch.tensor([-1.0, 0.5, 1.0, 2.0])[:, None, None, None]
            self.head.bias[:] = torch.tensor([0.0, 0.2, -0.5, -2.0])

    def forward(self, x):
        return self.head(x)


@pytest.mark.parametrize("length,tile,overlap", [(64, 64, 8), (100, 32, 8), (257, 64, 16), (5, 64, 8)])
def test_tiles_cover_every_pixel(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for start in starts:
        covered[start : start + tile] = True
    assert covered.all()
    assert starts[-1] + min(tile, length) == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_blend_window_positive_and_tapered():
    window = blend_window(32, 8)
    assert window.min() > 0
    assert window[16, 16] == 1
    assert window[0, 0] < window[4, 4] < window[16, 16]


@pytest.mark.parametrize("shape", [(64, 64), (70, 131), (1, 50), (9, 9)])
def test_tiled_equals_whole_frame_for_pointwise_model(shape):
    model = PointwiseModel()
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32) * 2
    whole = model(torch.from_numpy(image)[None, None]).softmax(1)[0].detach().numpy()
    pred = predict_normalised(
        model, image, tile=32, overlap=8, batch_size=3, precision="float32", probabilities=True
    )
    assert pred.labels.shape == shape
    assert np.array_equal(pred.labels, whole.argmax(0))
    np.testing.assert_allclose(pred.probabilities, whole, atol=1e-5)


def test_unet_prediction_shapes_and_progress():
    model = build_unet("small")
    updates = []
    pred = predict_normalised(
        model, np.zeros((45, 77), np.float32), tile=32, overlap=8, progress=updates.append
    )
    assert pred.labels.shape == (45, 77) and pred.labels.dtype == np.uint8
    assert pred.probabilities is None
    assert all(isinstance(u, StepUpdate) for u in updates)
    assert updates[-1].step == updates[-1].steps


class RunsOutOfMemory(PointwiseModel):
    """Pretends a GPU that holds at most two tiles at a time."""

    def forward(self, x):
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(x)


def test_out_of_memory_retries_with_smaller_batches_and_says_so():
    image = np.random.default_rng(1).normal(size=(40, 100)).astype(np.float32)
    expected = predict_normalised(PointwiseModel(), image, tile=32, overlap=8, batch_size=8)
    with pytest.warns(UserWarning, match="ran out of memory: retrying with batches of 2 tile"):
        pred = predict_normalised(RunsOutOfMemory(), image, tile=32, overlap=8, batch_size=8)
    assert np.array_equal(pred.labels, expected.labels)


def test_out_of_memory_with_one_tile_is_a_clear_error():
    class NeverFits(PointwiseModel):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    from napari_ccdseg.errors import InputError

    with pytest.raises(InputError, match="out of memory even for one tile"):
        predict_normalised(NeverFits(), np.zeros((32, 32), np.float32), tile=32, batch_size=4)


def test_auto_precision_is_bfloat16_only_where_the_hardware_has_it(monkeypatch):
    from napari_ccdseg import devices

    cpu = torch.device("cpu")
    for native, expected in [(True, torch.bfloat16), (False, torch.float32)]:
        monkeypatch.setattr(devices, "native_bfloat16", lambda device, native=native: native)
        assert devices.resolve_precision("auto", cpu) == expected
    assert devices.resolve_precision("float32", cpu) == torch.float32
    assert devices.resolve_precision("bfloat16", cpu) == torch.bfloat16


def test_unknown_precision_is_a_clear_error():
    from napari_ccdseg.errors import InputError

    with pytest.raises(InputError, match="precision 'half': expected one of auto, float32, bfloat16"):
        predict_normalised(PointwiseModel(), np.zeros((32, 32), np.float32), precision="half")


def test_bfloat16_prediction_matches_float32_on_the_default_model():
    """The speed-up must not change what is found: the bundled model on a simulated frame."""
    from dataclasses import replace

    from napari_ccdseg.bundled import resolve_model
    from napari_ccdseg.classes import CLUSTER
    from napari_ccdseg.modelfile import load_model
    from napari_ccdseg.normalise import normalise
    from napari_ccdseg.simulate import SIM_PRESETS, simulate_frame

    model, meta = load_model(resolve_model("default"))
    frame = simulate_frame(replace(SIM_PRESETS["conventional"], rows=128, cols=128), seed=3)
    image = normalise(frame.image, meta["normalisation"], **meta["normalisation_params"])
    runs = {
        precision: predict_normalised(model, image, precision=precision, probabilities=True)
        for precision in ("float32", "bfloat16")
    }
    full, half = runs["float32"], runs["bfloat16"]
    assert (full.labels == CLUSTER).sum() > 20  # the frame has clusters to find
    assert (full.labels != half.labels).mean() < 1e-3
    assert np.abs(full.probabilities - half.probabilities).max() < 0.05
