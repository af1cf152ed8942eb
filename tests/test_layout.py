"""Placement of amplifiers on screen, their names, and the contrast an uncalibrated frame opens with."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_ccdseg.layout import (
    Placement,
    detector_pixel,
    display_name,
    electron_contrast,
    gap,
    noise_contrast,
    parse_section,
    place_frames,
    short_stem,
)
from napari_ccdseg.simulate import SIM_PRESETS, simulate_frame

SHAPE = (64, 96)


def world_box(placement: Placement, shape) -> tuple[float, float, float, float]:
    """(row min, row max, col min, col max) of a frame's pixel centres in the viewer."""
    corners = [np.asarray(placement.scale) * (r, c) + placement.translate for r in (0, shape[0] - 1) for c in (0, shape[1] - 1)]
    rows, cols = zip(*corners)
    return min(rows), max(rows), min(cols), max(cols)


def overlap(a, b) -> bool:
    return not (a[1] < b[0] or b[1] < a[0] or a[3] < b[2] or b[3] < a[2])


def test_without_keywords_four_amplifiers_sit_in_one_row_without_overlap():
    placements = place_frames([SHAPE] * 4)
    boxes = [world_box(p, SHAPE) for p in placements]
    assert {p.how for p in placements} == {"grid"}
    assert [b[0] for b in boxes] == [0.0] * 4  # one row
    lefts = [b[2] for b in boxes]
    assert lefts == sorted(lefts) and np.diff(lefts).tolist() == [SHAPE[1] + gap([SHAPE])] * 3
    assert not any(overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_more_amplifiers_than_a_row_make_a_square_grid():
    placements = place_frames([SHAPE] * 9)
    tops = sorted({p.translate[0] for p in placements})
    lefts = sorted({p.translate[1] for p in placements})
    assert len(tops) == 3 and len(lefts) == 3


def test_detsec_puts_amplifiers_in_their_detector_cells_and_mirrors_reversed_readout():
    # a 2 x 2 CCD read by four corner amplifiers: the right ones read right-to-left, the top ones top-down
    headers = [
        {"DETSEC": "[1:96,1:64]"},
        {"DETSEC": "[192:97,1:64]"},
        {"DETSEC": "[1:96,128:65]"},
        {"DETSEC": "[192:97,128:65]"},
    ]
    placements = place_frames([SHAPE] * 4, headers)
    assert {p.how for p in placements} == {"detsec"}
    assert [p.scale for p in placements] == [(1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)]
    boxes = [world_box(p, SHAPE) for p in placements]
    assert not any(overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    # DETSEC 192:97 starts at detector column 192: its pixel 0 is at the right edge of the CCD
    assert placements[1].translate[1] == boxes[1][3] > boxes[0][3]
    assert boxes[2][0] > boxes[0][1]  # the y = 65..128 amplifiers are below


def test_ccd_keywords_give_one_row_per_ccd():
    headers = [{"CCDNUM": ccd} for ccd in (1, 1, 2, 2)]
    placements = place_frames([SHAPE] * 4, headers)
    assert {p.how for p in placements} == {"ccd"}
    assert [p.translate[0] for p in placements][:2] == [0.0, 0.0]
    assert placements[2].translate[0] == placements[3].translate[0] > SHAPE[0]
    assert placements[0].translate[1] == placements[2].translate[1] == 0.0


def test_repeated_or_malformed_detsec_falls_back_to_the_grid():
    assert parse_section("[1:96, 1:64]") == (1, 96, 1, 64)
    assert parse_section("1:96,1:64") is None and parse_section(None) is None
    assert {p.how for p in place_frames([SHAPE] * 2, [{"DETSEC": "[1:96,1:64]"}] * 2)} == {"grid"}
    assert {p.how for p in place_frames([SHAPE] * 2, [{"DETSEC": "[1:96,1:64]"}, {"DETSEC": "bad"}])} == {"grid"}


def test_a_lone_frame_stays_at_the_origin():
    assert place_frames([SHAPE], [{"DETSEC": "[192:97,1:64]"}]) == [Placement()]


def test_names_keep_the_amplifier_first_and_the_end_of_a_long_stem():
    assert display_name("run15", "AMP2") == "AMP2 · run15"
    assert display_name("run15", None) == "run15"
    long = "damicm_avg_Image_skipper_2024-05-17_run15"
    assert short_stem(long).endswith("run15") and len(short_stem(long)) <= 18


@pytest.mark.parametrize("preset", ["skipper", "conventional"])
def test_noise_contrast_spans_minus_3_to_plus_20_sigma_of_the_read_noise(preset):
    config = dataclasses.replace(SIM_PRESETS[preset], rows=256, cols=256)
    sim = simulate_frame(config, seed=3)
    meta = sim.metadata
    sigma = meta["read_noise_e"] * (1.0 if meta["units"] == "e" else meta["gain_adu_per_e"])
    low, high = noise_contrast(sim.image)
    centre = low + 3 * (high - low) / 23
    assert (high - low) / 23 == pytest.approx(sigma, rel=0.15)
    assert np.median(sim.image) == pytest.approx(centre, abs=0.5 * sigma)


def test_noise_contrast_shows_single_electrons_of_a_skipper_frame():
    rng = np.random.default_rng(0)
    gain, noise = 10.0, 0.15  # ADU per e-, e-
    electrons = rng.poisson(0.05, (256, 256))
    image = (1000.0 + gain * (electrons + rng.normal(0, noise, electrons.shape))).astype(np.float32)
    image[100:104, 100:104] += gain * 600  # one bright track
    low, high = noise_contrast(image)
    assert low < 1000 < 1000 + gain < 1000 + 2 * gain < high  # 0, 1 and 2 e- all inside the scale
    assert high < 1000 + 5 * gain  # the bright track does not stretch it


def test_electron_contrast_goes_from_the_pedestal_to_n_electrons():
    low, high = electron_contrast({"gain_adu_per_e": 10.0, "pedestal_adu": 1000.0}, 5)
    assert (low, high) == (995.0, 1050.0)


def test_detector_pixel_follows_detsec_and_datasec_and_their_readout_direction():
    shape = (64, 96 + 8)  # 8 overscan columns right of the data
    header = {"DETSEC": "[192:97,1:64]", "DATASEC": "[1:96,1:64]"}
    assert detector_pixel(header, shape, 0, 0) == (192, 1)  # read out right to left
    assert detector_pixel(header, shape, 63, 95) == (97, 64)
    assert detector_pixel(header, shape, 0, 100) is None  # overscan is on no detector pixel
    assert detector_pixel({"DETSEC": "[1:96,65:128]"}, (64, 96), 2, 3) == (4, 67)  # DATASEC: the whole frame
    assert detector_pixel({"DETSEC": "[1:192,1:128]"}, (64, 96), 0, 0) is None  # binned 2 x 2
    assert detector_pixel({}, (64, 96), 0, 0) is None
