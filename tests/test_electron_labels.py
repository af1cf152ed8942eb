"""The `physical` preset on frames that resolve electrons: rules in electrons against the local
dark current, glowing only where it is local (the simulator's truth decides)."""

import dataclasses

import numpy as np
import pytest

from napari_ccdseg.autolabel import PhysicalParams, _label_physical, label_frame
from napari_ccdseg.calibrate import calibrate_frame
from napari_ccdseg.classes import BACKGROUND, CLUSTER, GLOWING
from napari_ccdseg.errors import InputError
from napari_ccdseg.metrics import match_clusters
from napari_ccdseg.simulate import SIM_PRESETS, SimConfig, simulate_frame

DAMIC = dataclasses.replace(SIM_PRESETS["damic-m"], rows=256, cols=384)
HEADER = {"PRESCAN": DAMIC.prescan_cols, "OVERSCAN": DAMIC.overscan_cols, "OVERSCNR": DAMIC.overscan_rows}


def _active(config):
    active = np.zeros((config.total_rows, config.total_cols), bool)
    active[: config.rows, config.prescan_cols : config.prescan_cols + config.cols] = True
    return active


def _fakes_per_mpix(sim, labels, active):
    return match_clusters(sim.instances, labels).n_fake / (active.sum() / 1e6)


def test_damic_m_clusters_in_electrons_and_no_glowing_ramp():
    """Dark current rising 0.3 → 1.5 e-/px along the rows: the σ rules called most of it glowing
    and each dark-current electron a seed; the electron rules do neither."""
    sim = simulate_frame(DAMIC, 1)
    active = _active(DAMIC)
    labels = label_frame(sim.image, "physical", header=HEADER)
    assert np.mean(labels[active] == GLOWING) < 0.05
    truth, found = sim.labels[active] == CLUSTER, labels[active] == CLUSTER
    assert np.count_nonzero(truth & found) / found.sum() > 0.85  # pixel precision
    match = match_clusters(sim.instances, labels)
    assert match.found[match.sizes >= 10].mean() > 0.8
    old = _label_physical(sim.image.astype(np.float32), PhysicalParams())  # the σ rules
    assert np.mean(old[active] == GLOWING) > 0.3
    assert _fakes_per_mpix(sim, labels, active) < 0.1 * _fakes_per_mpix(sim, old, active)


def test_a_smooth_dark_current_rise_is_never_glowing_an_amplifier_glow_is():
    smooth = dataclasses.replace(DAMIC, amp_glow_e=0.0, glow_band_probability=0.0, dark_current_col_ramp=0.5)
    sim = simulate_frame(smooth, 2)
    labels = label_frame(sim.image, "physical", header=HEADER)
    assert np.count_nonzero(labels == GLOWING) == 0
    glowing = dataclasses.replace(DAMIC, amp_glow_e=20.0, glow_band_probability=0.0)
    sim = simulate_frame(glowing, 2)
    labels = label_frame(sim.image, "physical", header=HEADER)
    truth = sim.labels == GLOWING
    assert truth.sum() > 200
    assert np.mean(labels[truth] != BACKGROUND) > 0.7  # glowing, or a cluster on the glow
    assert np.mean(labels[_active(glowing) & ~truth] == GLOWING) < 0.05  # windows of 32 px blur its edge


@pytest.mark.parametrize(("dark_e", "seed"), [(0.3, 2), (1.0, 1)])
def test_a_glow_band_is_glowing_not_one_big_cluster(dark_e, seed):
    """A band of 10–40 columns at 2–6 e-/px: found against the smooth trend it is one region of
    charge, and without its own λ the cluster rules called ~80 % of it cluster."""
    banded = SimConfig(rows=320, cols=320, units="adu", pedestal_adu=100.0, gain_adu_per_e=6.0, read_noise_e=0.16,
                       dark_current_e=dark_e, glow_band_probability=1.0, amp_glow_e=0.0, cluster_rate=100.0)
    sim = simulate_frame(banded, seed)
    labels = label_frame(sim.image, "physical")
    band = sim.labels == GLOWING
    assert band.sum() > 5000
    assert np.mean(labels[band] == GLOWING) > 0.9
    assert np.mean(labels[band] == CLUSTER) < 0.03
    match = match_clusters(sim.instances, labels)  # the clusters around it are still found
    assert match.found[match.sizes >= 10].mean() > 0.8


def test_a_calibration_decides_which_rules_apply():
    sim = simulate_frame(DAMIC, 3)
    calibration = calibrate_frame(sim.image, header=HEADER)
    assert calibration.method == "peaks"
    with_calibration = label_frame(sim.image, "physical", calibration=calibration, header=HEADER)
    assert np.mean(with_calibration == label_frame(sim.image, "physical", header=HEADER)) > 0.99
    unresolved = dataclasses.replace(calibration, method="given", dark_bands=[], fit={})
    np.testing.assert_array_equal(label_frame(sim.image, "physical", calibration=unresolved),
                                  _label_physical(sim.image.astype(np.float32), PhysicalParams()))


@pytest.mark.parametrize("changes", [dict(seed_probability=0.0), dict(seed_probability=0.1, grow_probability=0.01),
                                     dict(grow_probability=1.0), dict(min_cluster_e=-1.0)])
def test_electron_rule_parameters_are_checked(changes):
    with pytest.raises(InputError, match="seed_probability"):
        PhysicalParams(**changes)


LOW_DARK = SimConfig(rows=128, cols=256, prescan_cols=8, overscan_cols=32, overscan_rows=8, units="adu",
                     pedestal_adu=-39.0, gain_adu_per_e=5.0, read_noise_e=0.15, cluster_rate=100.0, muon_rate=1.0,
                     electron_track_rate=3.0, amp_glow_e=2.0, glow_band_probability=0.0, hot_columns=(1.0, 2.0))


@pytest.mark.parametrize("dark_e", [1e-3, 3e-3])
def test_low_dark_current_is_not_glowing_the_amplifier_glow_is(dark_e):
    """At 10⁻³ e-/px most blocks hold no electron: the trend fell to its floor and a window with
    2 electrons for 1 expected stood '5 σ' above it, so tens of % of the frame were glowing."""
    config = dataclasses.replace(LOW_DARK, dark_current_e=dark_e)
    sim = simulate_frame(config, 2)
    header = {"PRESCAN": config.prescan_cols, "OVERSCAN": config.overscan_cols, "OVERSCNR": config.overscan_rows}
    labels = label_frame(sim.image, "physical", header=header)
    truth = sim.labels == GLOWING
    assert truth.sum() > 500  # the amplifier corner
    assert abs(np.mean(labels == GLOWING) - truth.mean()) < 0.04  # its edge blurs over 32-px windows
    assert np.mean(labels[truth] == GLOWING) > 0.5
    far = np.ones(truth.shape, bool)
    far[:100, : config.prescan_cols + 100] = False
    assert np.mean(labels[far] == GLOWING) < 0.005
