import dataclasses

import numpy as np
import pytest

from napari_ccdseg.autolabel import label_frame
from napari_ccdseg.classes import GLOWING
from napari_ccdseg.errors import InputError
from napari_ccdseg.io import monochrome
from napari_ccdseg.seedv1 import BALANCED, REALISTIC, rendered_frames


@pytest.mark.parametrize("config", [REALISTIC, BALANCED], ids=["realistic", "balanced"])
def test_the_colour_rules_read_back_the_simulated_truth(config):
    for image, frame in rendered_frames(config, 2, seed=3):
        assert image.shape == frame.labels.shape + (4,) and image.dtype == np.uint8
        assert np.array_equal(label_frame(image, "seed-v1"), frame.labels)


def test_realistic_frames_have_a_thin_glowing_strip_at_the_left_edge_and_little_else():
    for image, frame in rendered_frames(REALISTIC, 4, seed=0):
        glowing_columns = np.flatnonzero((frame.labels == GLOWING).mean(axis=0) > 0.5)
        assert 2 <= len(glowing_columns) <= 10
        assert glowing_columns.tolist() == list(range(len(glowing_columns)))
        assert (frame.labels > 0).mean() < 0.06
        assert monochrome(image, "x")[:, 0].min() > monochrome(image, "x")[:, -1].min()  # glow drawn brighter


def test_rendering_refuses_a_noisy_frame():
    with pytest.raises(InputError, match="noiseless"):
        rendered_frames(dataclasses.replace(REALISTIC, read_noise_e=1.0), 1, seed=0)
