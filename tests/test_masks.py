"""Analysis masks and the single-electron rate, checked against simulated truth."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from napari_ccdseg.calibrate import Calibration
from napari_ccdseg.catalogue import CALIBRATION_EXCLUDED
from napari_ccdseg.classes import BACKGROUND, CLUSTER, GLOWING
from napari_ccdseg.errors import InputError
from napari_ccdseg.masks import (
    BITS,
    MASK_BITS,
    MaskParams,
    active_region,
    build_mask,
    halo_radius,
    header_times,
    rates,
)
from napari_ccdseg.simulate import SimConfig, simulate_frame

DOCS = Path(__file__).resolve().parents[1] / "docs" / "masks.md"


def skipper(rows: int = 160, cols: int = 320, **changes) -> SimConfig:
    """An electron-resolving amplifier in ADU: 0.15 e⁻ noise, gain 5, with overscan and prescan."""
    base = dict(
        rows=rows, cols=cols, prescan_cols=4, overscan_cols=16, overscan_rows=4, units="adu",
        pedestal_adu=-39.0, gain_adu_per_e=5.0, read_noise_e=0.15, dark_current_e=0.01,
        cluster_rate=100.0, muon_rate=1.0, electron_track_rate=3.0, amp_glow_e=2.0,
        glow_band_probability=0.0, hot_columns=(1.0, 2.0),
    )
    base.update(changes)
    return SimConfig(**base)


def truth_calibration(sim, resolved: bool = True) -> Calibration:
    """The calibration the simulator used: constant pedestal, its gain and noise."""
    cfg = sim.metadata["config"]
    return Calibration(
        frame="sim", hdu=0, extname=None, gain_adu_per_e=cfg["gain_adu_per_e"], gain_err=0.0,
        noise_e=cfg["read_noise_e"], noise_err=0.0, dark_current_e_per_px=cfg["dark_current_e"], dark_err=0.0,
        pedestal_adu=cfg["pedestal_adu"], pedestal_err=0.0, method="peaks" if resolved else "given",
        row_pedestal_adu=np.full(sim.image.shape[0], cfg["pedestal_adu"]),
    )


def flat_calibration(shape, noise_e=0.15, gain=1.0) -> Calibration:
    return Calibration(
        frame="flat", hdu=0, extname=None, gain_adu_per_e=gain, gain_err=0.0, noise_e=noise_e, noise_err=0.0,
        dark_current_e_per_px=float("nan"), dark_err=0.0, pedestal_adu=0.0, pedestal_err=0.0, method="peaks",
        row_pedestal_adu=np.zeros(shape[0]),
    )


def sim_mask(sim, labels=None, **params):
    region = active_region(sim.image.shape, metadata=sim.metadata)
    return build_mask(sim.image, sim.labels if labels is None else labels, truth_calibration(sim),
                      params=MaskParams(**params), region=region)


def bit(mask, name):
    return (mask & MASK_BITS[name]) > 0


def test_bits_are_distinct_single_bits_and_each_is_documented():
    values = list(MASK_BITS.values())
    assert len(set(values)) == len(values) == len(BITS)
    assert all(v > 0 and v & (v - 1) == 0 and v < 2**16 for v in values)
    documented = set(re.findall(r"^\| `(\w+)` \| (\d+) \|", DOCS.read_text(encoding="utf-8"), flags=re.M))
    assert documented == {(name, str(value)) for name, value in MASK_BITS.items()}


@pytest.mark.parametrize("dark", [0.002, 0.05])
def test_masked_rate_recovers_the_simulated_dark_current_and_the_unmasked_one_does_not(dark):
    sim = simulate_frame(skipper(dark_current_e=dark), seed=3)
    calibration = truth_calibration(sim)
    electrons = calibration.electrons(sim.image)
    mask = sim_mask(sim)
    masked = rates(electrons, mask, calibration)
    unmasked = rates(electrons, np.zeros_like(mask), calibration)
    assert abs(masked.ser_e_per_px - dark) < 3.5 * masked.ser_err
    assert abs(unmasked.ser_e_per_px - dark) > 5 * unmasked.ser_err
    assert masked.unmasked_pixels > 0.3 * sim.image.size  # the amplifier glow covers a corner of this small frame
    assert masked.misassigned_fraction == pytest.approx(4.3e-4, rel=0.3)  # Φ(−0.5 / 0.15)


def test_rate_follows_dark_current_growing_along_the_readout():
    sim = simulate_frame(skipper(dark_current_e=0.5, dark_current_row_ramp=0.9), seed=2)
    calibration = truth_calibration(sim)
    mask = sim_mask(sim)
    result = rates(calibration.electrons(sim.image), mask, calibration)
    per_row = np.asarray(sim.metadata["dark_current_e_per_row"])
    truth = per_row[np.nonzero(mask == 0)[0]].mean()  # the unmasked pixels' mean λ
    assert abs(result.ser_e_per_px - truth) < 3.5 * result.ser_err
    bands = result.fit.bands
    assert len(bands) > 4 and bands[-1]["lam"] > 2 * bands[0]["lam"]  # 0.05 → 0.95 e⁻/px along the rows
    no_glow = simulate_frame(skipper(dark_current_e=0.5, dark_current_row_ramp=0.9, amp_glow_e=0.0), seed=2)
    assert bit(sim_mask(no_glow), "glowing").mean() < 0.01  # a ramp is not glow


def test_masked_rate_with_the_real_calibration_and_the_physical_preset():
    from napari_ccdseg.autolabel import label_frame
    from napari_ccdseg.calibrate import calibrate_frame

    dark = 0.005
    sim = simulate_frame(skipper(dark_current_e=dark), seed=5)
    labels = label_frame(sim.image, "physical")
    calibration = calibrate_frame(sim.image, exclude=np.isin(labels, CALIBRATION_EXCLUDED))
    region = active_region(sim.image.shape, metadata=sim.metadata)
    mask = build_mask(sim.image, labels, calibration, region=region)
    result = rates(calibration.electrons(sim.image), mask, calibration)
    assert abs(result.ser_e_per_px - dark) < 3.5 * result.ser_err
    assert abs(result.noise_e - 0.15) < 0.01


def test_halo_radius_grows_with_cluster_charge():
    params = MaskParams(halo_px=2.0, halo_px_per_decade=3.0, halo_q0_e=10.0)
    assert halo_radius(5.0, params) == pytest.approx(2.0)
    assert halo_radius(1000.0, params) == pytest.approx(8.0)
    labels = np.zeros((80, 80), dtype=np.uint8)
    image = np.zeros((80, 80), dtype=np.float32)
    for (r, c), q in (((20, 20), 20.0), ((55, 55), 20000.0)):
        labels[r, c] = CLUSTER
        image[r, c] = q
    mask = build_mask(image, labels, flat_calibration(image.shape), params=params, region=((0, 80), (0, 80)))
    halo = bit(mask, "halo")
    width = [int(halo[r, :].sum()) + 1 for r in (20, 55)]
    assert width[0] == 2 * int(halo_radius(20.0, params)) + 1
    assert width[1] == 2 * int(halo_radius(20000.0, params)) + 1


def test_bleed_runs_towards_later_read_columns_and_rows_after_bright_clusters_only():
    labels = np.zeros((60, 60), dtype=np.uint8)
    image = np.zeros((60, 60), dtype=np.float32)
    labels[10, 10], image[10, 10] = CLUSTER, 500.0  # bright
    labels[40, 40], image[40, 40] = CLUSTER, 20.0  # faint: no bleed
    params = MaskParams(halo_px=0, halo_px_per_decade=0, bleed_px=7, parallel_bleed_px=3, bleed_min_e=100)
    bleed = bit(build_mask(image, labels, flat_calibration(image.shape), params=params,
                           region=((0, 60), (0, 60))), "bleed")
    assert bleed[10, 11:18].all() and not bleed[10, 18] and not bleed[10, :10].any()
    assert bleed[11:14, 10].all() and not bleed[14, 10] and not bleed[:10, 10].any()
    assert not bleed[30:, 30:].any()


def test_a_hot_column_missing_from_the_class_map_is_found_by_its_excess():
    rng = np.random.default_rng(1)
    shape = (200, 150)
    electrons = rng.poisson(0.01, shape).astype(np.float32)
    electrons[:, 70] += rng.poisson(0.15, shape[0])  # 30 e⁻ expected in the column instead of 2
    image = electrons + rng.normal(0, 0.15, shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    mask = build_mask(image, labels, flat_calibration(shape), region=((0, 200), (0, 150)))
    assert np.flatnonzero(bit(mask, "hot_column").all(axis=0)).tolist() == [70]
    assert not bit(mask, "serial_row").any() and not bit(mask, "glowing").any()


def test_serial_register_rows_flagged_from_flat_clusters_and_from_unlabelled_trails():
    sim = simulate_frame(skipper(serial_trail_rate=4.0, dark_current_e=0.001, serial_trail_e=(1.0, 3.0)), seed=2)
    trails = [c for c in sim.metadata["clusters"] if c["kind"] == "trail" and c["electrons"] >= 30]
    assert trails
    rows_with_trails = {int(round(c["row"])) for c in trails}
    flagged = set(np.flatnonzero(bit(sim_mask(sim), "serial_row").all(axis=1)).tolist())
    assert rows_with_trails <= flagged
    # the same trails absent from the class map: found by the excess of their row
    blind = np.where(sim.labels == CLUSTER, BACKGROUND, sim.labels)
    blind[sim.instances > 0] = BACKGROUND
    for c in sim.metadata["clusters"]:
        if c["kind"] != "trail":
            blind[sim.instances == c["id"]] = CLUSTER
    flagged_blind = set(np.flatnonzero(bit(sim_mask(sim, blind), "serial_row").all(axis=1)).tolist())
    assert rows_with_trails <= flagged_blind


def test_faint_glow_beyond_the_class_map_is_masked_by_its_excess():
    sim = simulate_frame(skipper(dark_current_e=0.002, amp_glow_e=8.0, cluster_rate=0.0, muon_rate=0.0,
                                 electron_track_rate=0.0, hot_pixels=(0, 0), hot_segments=(0, 0),
                                 hot_columns=(0, 0)), seed=1)
    mask = sim_mask(sim)
    glowing = bit(mask, "glowing")
    assert glowing.sum() > 3 * (sim.labels == GLOWING).sum()
    result = rates(truth_calibration(sim).electrons(sim.image), mask, truth_calibration(sim))
    assert abs(result.ser_e_per_px - 0.002) < 3.5 * result.ser_err


def test_edge_bits_follow_metadata_header_and_edge_width():
    assert active_region((20, 30), metadata={"active_rows": [0, 16], "active_cols": [4, 26]}) == ((0, 16), (4, 26))
    header = {"PRESCAN": 4, "OVERSCAN": 4, "OVERSCNR": 4}
    assert active_region((20, 30), header=header) == ((0, 16), (4, 26))
    assert active_region((20, 30)) is None
    with pytest.raises(InputError, match="PRESCAN"):
        active_region((20, 30), header={"PRESCAN": 40})
    image = np.zeros((20, 30), dtype=np.float32)
    labels = np.zeros((20, 30), dtype=np.uint8)
    edge = bit(build_mask(image, labels, flat_calibration(image.shape), params=MaskParams(edge_px=1),
                          region=((0, 16), (4, 26))), "edge")
    assert edge.sum() == 20 * 30 - 14 * 20
    assert not edge[1:15, 5:25].any()


def test_saturated_pixels_from_setting_header_and_flat_top():
    image = np.zeros((30, 30), dtype=np.float32)
    image[5, 5:9] = 65535.0
    image[20, 20] = 60000.0
    labels = np.zeros_like(image, dtype=np.uint8)
    cal = flat_calibration(image.shape, noise_e=1.0)
    assert bit(build_mask(image, labels, cal), "saturated").sum() == 4  # flat top shared by 4 pixels
    assert bit(build_mask(image, labels, cal, header={"SATURATE": 50000}), "saturated").sum() == 5
    assert bit(build_mask(image, labels, cal, params=MaskParams(saturation_adu=1e9)), "saturated").sum() == 0


def test_pixels_at_full_well_are_saturated():
    sim = simulate_frame(skipper(full_well_e=400.0, cluster_rate=300.0), seed=1)
    saturated = bit(sim_mask(sim), "saturated")
    assert sim.metadata["saturated_pixels"] > 3
    assert saturated.sum() == sim.metadata["saturated_pixels"]
    assert (truth_calibration(sim).electrons(sim.image)[saturated] > 398).all()


def test_counts_follow_the_rounding_rule_and_the_rate_per_day():
    electrons = np.array([[-0.4, 0.49, 0.5, 1.49], [1.5, 2.6, 3.5, 4.4], [9.0, 0.0, 0.1, 0.2]], dtype=np.float32)
    mask = np.zeros(electrons.shape, dtype=np.uint16)
    mask[2, 0] = MASK_BITS["hot_pixel"]
    result = rates(electrons, mask, flat_calibration(electrons.shape), exposure_s=3600.0, readout_s=600.0)
    assert result.pixels_by_charge == [5, 2, 1, 1, 2]
    assert result.unmasked_pixels == 11
    rows = np.array([0] * 4 + [1] * 4 + [2] * 3)
    expected_t = 3600.0 + 600.0 * np.mean((rows + 0.5) / 3)
    assert result.mean_time_s == pytest.approx(expected_t)
    assert result.ser_e_per_px_day == pytest.approx(result.ser_e_per_px * 86400 / expected_t)


def test_unresolved_frames_get_counts_but_no_rate():
    rng = np.random.default_rng(0)
    electrons = rng.normal(0, 2.0, (50, 50)).astype(np.float32)
    cal = dataclasses.replace(flat_calibration(electrons.shape, noise_e=2.0), method="given")
    result = rates(electrons, np.zeros((50, 50), dtype=np.uint16), cal)
    assert np.isnan(result.ser_e_per_px) and sum(result.pixels_by_charge) > 0


def test_header_times_and_bad_input():
    assert header_times({"EXPTIME": "3600", "RDTIME": 120}) == (3600.0, 120.0)
    assert header_times({}) == (None, None)
    with pytest.raises(InputError, match="EXPTIME"):
        header_times({"EXPTIME": "long"})
    cal = flat_calibration((10, 10))
    with pytest.raises(InputError, match="class map"):
        build_mask(np.zeros((10, 10)), np.zeros((10, 9), dtype=np.uint8), cal)
    with pytest.raises(InputError, match="halo_px"):
        MaskParams(halo_px=-1)


def test_cli_mask_writes_masks_rates_and_fit_figures(tmp_path, capsys):
    import tifffile

    from napari_ccdseg.cli import main
    from napari_ccdseg.simulate import simulate_dataset

    data = tmp_path / "data"
    simulate_dataset(data, 1, skipper(rows=96, cols=192, dark_current_e=0.02), seed=4, fmt="npy")
    out = tmp_path / "out"
    code = main(["mask", str(data), "--out", str(out), "--labels", str(data), "--exposure", "3600",
                 "--readout", "400", "--halo", "3"])
    assert code == 0
    mask = tifffile.imread(out / "sim_000_mask.tif")
    assert mask.dtype == np.uint16 and mask.shape == (100, 212)
    assert (mask[:, :4] & MASK_BITS["edge"]).all()  # prescan, from sim_000_meta.json
    assert (mask[np.load(data / "sim_000_instances.npy") > 0] != 0).all()
    lines = (out / "rates.csv").read_text().splitlines()
    header = lines[0].split(",")
    for column in ("frame", "hdu", "unmasked_pixels", "pixels_1e", "pixels_2e", "pixels_3e", "pixels_4e",
                   "ser_e_per_px", "ser_err"):
        assert column in header
    row = dict(zip(header, lines[1].split(",")))
    assert int(row["unmasked_pixels"]) == int((mask == 0).sum())
    assert abs(float(row["ser_e_per_px"]) - 0.02) < 4 * float(row["ser_err"])
    assert row["fit_valid"] == "True"
    assert float(row["ser_e_per_px_day"]) == pytest.approx(float(row["ser_e_per_px"]) * 86400 / float(row["mean_time_s"]))
    assert "halo_px = 3.0" in (out / "rates.md").read_text()
    assert (out / "sim_000_rate.png").stat().st_size > 0 and (out / "calibration.json").is_file()


def test_cli_mask_bad_input_is_one_line(tmp_path, capsys):
    from napari_ccdseg.cli import main
    from napari_ccdseg.simulate import simulate_dataset

    data = tmp_path / "data"
    simulate_dataset(data, 1, skipper(rows=64, cols=64), seed=1)
    code = main(["mask", str(data), "--out", str(tmp_path / "out"), "--labels", str(tmp_path)])
    assert code == 2
    assert "no label map" in capsys.readouterr().err
    code = main(["mask", str(data), "--out", str(tmp_path / "out"), "--preset", "physical", "--halo", "-1"])
    assert code == 2
    assert "halo_px" in capsys.readouterr().err
