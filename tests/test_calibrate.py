"""Calibration from the comb of electron peaks, checked against the simulator's truth."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from napari_ccdseg.calibrate import (
    Calibration,
    calibrate_file,
    calibrate_frame,
    find_calibration,
    plot_calibration,
    read_calibration,
    write_calibration,
)
from napari_ccdseg.classes import BACKGROUND
from napari_ccdseg.cli import main
from napari_ccdseg.errors import InputError
from napari_ccdseg.simulate import AmplifierLayout, SimConfig, dark_current_per_row, simulate_dataset, simulate_frame

NO_DEFECTS = dict(
    hot_pixels=(0.0, 0.0), hot_segments=(0.0, 0.0), hot_columns=(0.0, 0.0), glow_band_probability=0.0, amp_glow_e=0.0
)
BASE = SimConfig(
    rows=200, cols=300, units="adu", gain_adu_per_e=6.0, read_noise_e=0.15, dark_current_e=0.3, pedestal_adu=-39.0,
    cluster_rate=40.0, **NO_DEFECTS,
)


def _sim(seed: int = 0, **changes):
    return simulate_frame(dataclasses.replace(BASE, **changes), seed)


def _calibrate(sim, **kwargs) -> Calibration:
    """Calibrate with the true clusters left out, as a class map would leave them out."""
    return calibrate_frame(sim.image, exclude=sim.labels != BACKGROUND, **kwargs)


@pytest.mark.parametrize(
    ("noise", "dark", "step", "drift", "gain"),
    [
        (0.1, 0.05, 0.0, 0.0, 6.0),  # few electrons: the gain rests on a small one-electron peak
        (0.15, 0.3, 0.25, 1 / 6, 6.0),  # the damic-m preset's readout: fpack grid, drifting pedestal
        (0.2, 1.5, 1.0, 0.3, 4.5),  # warm module: the one-electron peak is the tallest; integer ADC codes
    ],
)
def test_peaks_recover_gain_noise_and_dark_current(noise, dark, step, drift, gain):
    sim = _sim(read_noise_e=noise, dark_current_e=dark, quantisation_step=step, pedestal_drift_e=drift,
               gain_adu_per_e=gain)
    cal = _calibrate(sim)
    assert cal.method == "peaks" and cal.resolves_electrons
    assert cal.gain_adu_per_e == pytest.approx(gain, rel=0.01)
    assert cal.noise_e == pytest.approx(noise, rel=0.10)
    assert abs(cal.dark_current_e_per_px - dark) < 4 * cal.dark_err  # λ within its stated error
    assert 0 < cal.gain_err < 0.01 * gain and 0 < cal.noise_err < 0.05 * noise
    assert cal.noise_adu == pytest.approx(cal.noise_e * cal.gain_adu_per_e)
    assert cal.row_pedestal_adu.shape == (sim.image.shape[0],)


@pytest.mark.parametrize(("noise", "dark", "seed"), [(0.1, 0.001, 1), (0.3, 0.01, 0)])
def test_a_small_one_electron_peak_is_a_peak(noise, dark, seed):
    """bench_calibrate's frames that the one-electron-peak check refused from 0d63401 on: at σ = 0.1 e⁻
    the window below the peak lay in the zero-electron peak's tail, at σ = 0.3 e⁻ that tail drowns the dip."""
    sim = _sim(seed, rows=400, cols=600, read_noise_e=noise, dark_current_e=dark, quantisation_step=0.25,
               pedestal_drift_e=1 / 6, cluster_rate=60.0)
    cal = _calibrate(sim)
    assert cal.method == "peaks"
    assert cal.gain_adu_per_e == pytest.approx(6.0, rel=0.02)
    assert cal.noise_e == pytest.approx(noise, rel=0.10)
    assert abs(cal.dark_current_e_per_px - dark) < 4 * cal.dark_err


def test_dark_current_per_band_follows_a_ramp_with_honest_errors():
    sim = _sim(seed=3, rows=256, cols=320, dark_current_e=1.0, dark_current_row_ramp=0.6)
    cal = _calibrate(sim)
    truth = dark_current_per_row(dataclasses.replace(BASE, rows=256, cols=320, dark_current_e=1.0,
                                                     dark_current_row_ramp=0.6))
    bands = cal.dark_bands
    assert len(bands) == 16 and bands[0]["row_start"] == 0 and bands[-1]["row_stop"] == 256
    pulls = np.array([(b["dark_current_e_per_px"] - truth[b["row_start"]:b["row_stop"]].mean()) / b["dark_err"]
                      for b in bands])
    assert np.all(np.abs(pulls) < 4)
    assert abs(pulls.mean()) < 1.0 and 0.4 < pulls.std() < 1.8  # errors neither too small nor too large
    assert bands[-1]["dark_current_e_per_px"] - bands[0]["dark_current_e_per_px"] > 0.8  # 0.42 → 1.58 e-/px
    assert abs(cal.dark_current_e_per_px - 1.0) < 4 * cal.dark_err


def test_a_linear_ramp_is_dark_current_not_hot_rows():
    """Rows read last hold the most dark current: the bright-line test must not cut them away."""
    config = dataclasses.replace(BASE, rows=320, cols=300, dark_current_e=1.0, dark_current_row_ramp=0.8,
                                 cluster_rate=0.0, muon_rate=0.0, electron_track_rate=0.0)
    cal = calibrate_frame(simulate_frame(config, 6).image)
    assert cal.fit["excluded_pixels"] < 100
    truth = dark_current_per_row(config)
    last = cal.dark_bands[-1]
    assert abs(last["dark_current_e_per_px"] - truth[last["row_start"]:].mean()) < 4 * last["dark_err"]


def test_row_pedestal_is_the_zero_electron_peak_of_a_drifting_row():
    """At λ = 1.5 e-/px the row median sits on the 1- or 2-electron peak; the row pedestal must not."""
    changes = dict(seed=5, dark_current_e=1.5, pedestal_drift_e=0.5)
    sim = _sim(**changes)
    noiseless = _sim(read_noise_e=0.0, **changes)  # the same random draws: the same drift
    truth = np.where(noiseless.labels == BACKGROUND, noiseless.image, np.inf).min(axis=1)  # empty pixels
    cal = _calibrate(sim)
    gain = BASE.gain_adu_per_e
    assert np.ptp(truth) > 1.5 * gain  # the drift spans electrons
    error = cal.row_pedestal_adu - truth
    assert np.sqrt(np.mean(error**2)) < 0.03 * gain and np.abs(error).max() < 0.15 * gain
    median_error = np.median(sim.image, axis=1) - truth
    assert np.median(np.abs(median_error)) > 0.5 * gain  # what a median pedestal would have done
    electrons = cal.electrons(sim.image)[sim.labels == BACKGROUND]
    assert np.mean(np.round(electrons)) == pytest.approx(1.5, abs=0.05)


def test_active_area_from_the_header_keeps_overscan_out_of_lambda():
    sim = _sim(seed=2, prescan_cols=8, overscan_cols=60, overscan_rows=10, dark_current_e=0.5)
    header = {"PRESCAN": 8, "OVERSCAN": 60, "OVERSCNR": 10}
    cal = _calibrate(sim, header=header)
    assert abs(cal.dark_current_e_per_px - 0.5) < 4 * cal.dark_err
    assert cal.fit["active_region"] == [[0, 200], [8, 308]]
    assert cal.row_pedestal_adu.shape == (210,)
    found = _calibrate(sim)  # without the header the empty overscan columns and rows are found in the data
    assert abs(found.dark_current_e_per_px - 0.5) < 4 * found.dark_err
    assert found.fit["excluded_pixels"] >= 60 * 210 + 10 * 300  # they hold no dark current: left out of λ


def test_bright_pixels_and_glowing_columns_leave_the_fit_without_a_class_map():
    cfg = dataclasses.replace(BASE, dark_current_e=0.2, cluster_rate=150.0, muon_rate=3.0, glow_band_probability=1.0,
                              glow_band_width=(12, 20), glow_band_position="random", hot_columns=(2.0, 2.0))
    sim = simulate_frame(cfg, 4)
    cal = calibrate_frame(sim.image)
    assert cal.fit["excluded_pixels"] > 0.05 * sim.image.size
    assert cal.dark_current_e_per_px == pytest.approx(0.2, rel=0.05)
    assert cal.gain_adu_per_e == pytest.approx(6.0, rel=0.01)


def test_unresolved_frame_without_a_gain_is_refused_naming_the_frame():
    sim = _sim(read_noise_e=2.0)
    with pytest.raises(InputError, match=r"run7\.fits HDU 2 \(AMP2\).*--gain.*--calibration"):
        calibrate_frame(sim.image, frame="run7.fits", hdu=2, extname="AMP2")


def test_a_frame_without_electrons_gives_no_gain():
    """Without dark current only the clusters' pixels hold electrons, and they are left out."""
    with pytest.raises(InputError, match="too few pixels hold an electron|no second electron peak"):
        calibrate_frame(_sim(dark_current_e=0.0).image, frame="dark.fits")


def test_unresolved_frame_takes_the_gain_given_from_a_file_or_the_header():
    sim = _sim(read_noise_e=2.0)
    given = calibrate_frame(sim.image, frame="a.fits", gain=6.0)
    assert given.method == "given" and not given.resolves_electrons
    assert given.gain_adu_per_e == 6.0 and given.gain_err == 0.0
    assert given.noise_e == pytest.approx(2.0, rel=0.10)
    assert math.isnan(given.dark_current_e_per_px) and given.dark_bands == []
    assert given.row_pedestal_adu.shape == (200,)
    assert calibrate_frame(sim.image, header={"GAIN": "6.5"}).method == "header"
    in_electrons = calibrate_frame(sim.image / 6.0, header={"BUNIT": "electron"})  # `simulate --units e` writes it
    assert in_electrons.method == "header" and in_electrons.gain_adu_per_e == 1.0
    from_file = calibrate_frame(sim.image, previous=dataclasses.replace(given, gain_adu_per_e=5.5))
    assert from_file.method == "file" and from_file.gain_adu_per_e == 5.5
    # what the user passes wins over what the header says
    assert calibrate_frame(sim.image, header={"GAIN": 6.5}, gain=6.0).method == "given"
    assert calibrate_frame(sim.image, header={"GAIN": 6.5}, previous=given).method == "file"
    with pytest.raises(InputError, match="GAIN"):
        calibrate_frame(sim.image, header={"GAIN": "fast"})


def test_a_resolving_frame_fits_its_own_gain_whatever_is_given():
    cal = _calibrate(_sim(seed=1), gain=99.0, header={"GAIN": 50.0})
    assert cal.method == "peaks" and cal.gain_adu_per_e == pytest.approx(6.0, rel=0.01)


def test_bad_images_are_refused():
    with pytest.raises(InputError, match="2-D"):
        calibrate_frame(np.zeros((4, 5, 3)))
    with pytest.raises(InputError, match="NaN"):
        calibrate_frame(np.full((10, 10), np.nan), frame="nan.npy")
    with pytest.raises(InputError, match="exclusion mask"):
        calibrate_frame(np.zeros((10, 10)), exclude=np.zeros((5, 5), bool))


def test_calibration_json_round_trip(tmp_path):
    peaks = _calibrate(_sim(seed=1))
    unresolved = calibrate_frame(_sim(read_noise_e=2.0).image, frame="b.fits", hdu=1, extname="AMP1", gain=6.0)
    path = write_calibration(tmp_path / "calibration.json", [peaks, unresolved])
    text = path.read_text()
    assert "NaN" not in text  # strict JSON: λ of an unresolved frame is null
    entries = json.loads(text)["amplifiers"]
    required = ["frame", "hdu", "extname", "gain_adu_per_e", "gain_err", "noise_e", "noise_err",
                "dark_current_e_per_px", "dark_err", "pedestal_adu", "method"]
    assert all(key in entry for entry in entries for key in required)
    assert entries[1]["dark_current_e_per_px"] is None and entries[1]["hdu"] == 1
    back = read_calibration(path)
    for before, after in zip([peaks, unresolved], back):
        for name in ("frame", "hdu", "extname", "method", "gain_adu_per_e", "noise_e", "pedestal_adu", "dark_bands"):
            assert getattr(after, name) == getattr(before, name) or (
                isinstance(getattr(before, name), float) and math.isnan(getattr(before, name))
            )
        np.testing.assert_allclose(after.row_pedestal_adu, before.row_pedestal_adu)
    assert math.isnan(back[1].dark_current_e_per_px)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json {", "not a JSON calibration file"),
        ('{"frames": []}', "amplifiers"),
        ('{"amplifiers": [{"frame": "a.fits"}]}', "lacks hdu"),
        ('{"amplifiers": [{"frame": "a.fits", "hdu": "x", "extname": null, "gain_adu_per_e": 6, "gain_err": 0, '
         '"noise_e": 0.2, "noise_err": 0, "dark_current_e_per_px": null, "dark_err": null, "pedestal_adu": 0, '
         '"pedestal_err": 0, "method": "given", "row_pedestal_adu": [0]}]}', "bad value"),
        ('{"amplifiers": [{"frame": "a.fits", "hdu": 0, "extname": null, "gain_adu_per_e": -6, "gain_err": 0, '
         '"noise_e": 0.2, "noise_err": 0, "dark_current_e_per_px": null, "dark_err": null, "pedestal_adu": 0, '
         '"pedestal_err": 0, "method": "given", "row_pedestal_adu": [0]}]}', "gain must be a positive"),
        ('{"amplifiers": [{"frame": "a.fits", "hdu": 0, "extname": null, "gain_adu_per_e": 6, "gain_err": 0, '
         '"noise_e": 0.2, "noise_err": 0, "dark_current_e_per_px": 0.5, "dark_err": 0.01, "pedestal_adu": 0, '
         '"pedestal_err": 0, "method": "peaks", "row_pedestal_adu": [0], '
         '"dark_bands": [{"row_stop": 1, "dark_current_e_per_px": 0.5, "dark_err": 0.01}]}]}', "bad value.*row_start"),
    ],
)
def test_read_calibration_names_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as caught:
        read_calibration(path)
    assert str(path) in str(caught.value)
    with pytest.raises(InputError, match="not found"):
        read_calibration(tmp_path / "missing.json")


def test_find_calibration_matches_file_then_amplifier():
    def cal(frame, hdu, extname):
        return Calibration(frame, hdu, extname, 6.0, 0.0, 0.2, 0.0, math.nan, math.nan, 0.0, 0.0, "given", [0.0])

    a1, a2, b1 = cal("a.fits", 1, "AMP1"), cal("a.fits", 2, "AMP2"), cal("b.fits", 1, "AMP1")
    assert find_calibration([a1, a2, b1], "b.fits", 1, "AMP1") is b1
    assert find_calibration([a1, a2], "c.fits", 2, "AMP2") is a2  # same amplifier, another exposure
    assert find_calibration([a1, b1], "c.fits", 1) is None  # two candidates: no guess
    assert find_calibration(None, "a.fits", 1) is None


def test_electrons_and_plots(tmp_path):
    sim = _sim(seed=1)
    cal = _calibrate(sim)
    with pytest.raises(InputError, match="row pedestals"):
        cal.electrons(sim.image[:10])
    png = plot_calibration(cal, sim.image, tmp_path / "peaks.png", exclude=sim.labels != BACKGROUND)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    unresolved = calibrate_frame(_sim(read_noise_e=2.0).image, gain=6.0)
    assert plot_calibration(unresolved, _sim(read_noise_e=2.0).image, tmp_path / "noise.png").stat().st_size > 10_000
    with pytest.raises(InputError, match="does not match"):
        plot_calibration(cal, sim.image[:50], tmp_path / "bad.png")


def test_cli_calibrates_each_extension_of_a_fits_file(tmp_path, capsys):
    config = dataclasses.replace(BASE, dark_current_e=0.5, quantisation_step=0.25, pedestal_drift_e=1 / 6)
    [path] = simulate_dataset(tmp_path / "data", 1, config, seed=3, fmt="fits", layout=AmplifierLayout(amplifiers=2))
    assert main(["calibrate", str(path), "--out", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out
    assert "sim_000.fits[AMP1]" in table and "peaks" in table
    entries = json.loads((tmp_path / "out" / "calibration.json").read_text())["amplifiers"]
    assert [(e["frame"], e["hdu"], e["extname"], e["method"]) for e in entries] == [
        ("sim_000.fits", 1, "AMP1", "peaks"), ("sim_000.fits", 2, "AMP2", "peaks")
    ]
    for entry, amp in zip(entries, ("AMP1", "AMP2")):
        truth = json.loads((tmp_path / "data" / f"sim_000_{amp}_meta.json").read_text())["config"]
        assert entry["gain_adu_per_e"] == pytest.approx(truth["gain_adu_per_e"], rel=0.01)
        assert (tmp_path / "out" / f"sim_000_{amp}_calibration.png").stat().st_size > 10_000
    in_python = calibrate_file(path)
    assert [(c.frame, c.hdu, c.extname) for c in in_python] == [(e["frame"], e["hdu"], e["extname"]) for e in entries]
    assert [c.gain_adu_per_e for c in in_python] == pytest.approx([e["gain_adu_per_e"] for e in entries])


def test_cli_unresolved_frames_need_a_gain(tmp_path, capsys):
    [path] = simulate_dataset(tmp_path / "data", 1, dataclasses.replace(BASE, read_noise_e=2.0), fmt="npy")
    assert main(["calibrate", str(path), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("ccdseg calibrate: error: sim_000.npy") and "--gain" in error
    assert main(["calibrate", str(path), "--out", str(tmp_path / "out"), "--gain", "6"]) == 0
    assert read_calibration(tmp_path / "out" / "calibration.json")[0].method == "given"
    assert main(["calibrate", str(path), "--out", str(tmp_path / "again"), "--calibration",
                 str(tmp_path / "out" / "calibration.json")]) == 0
    assert read_calibration(tmp_path / "again" / "calibration.json")[0].method == "file"
