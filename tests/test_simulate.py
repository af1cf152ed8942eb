"""The simulator: reproducible frames whose truth labels, instances and metadata agree with the image."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from napari_ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from napari_ccdseg.errors import InputError
from napari_ccdseg.simulate import (
    E_PAIR_EV,
    FANO,
    SIM_PRESETS,
    AmplifierLayout,
    SimConfig,
    SimulatedFrame,
    _dominant_event,
    dark_current_map,
    diffusion_sigma_um,
    frame_seed,
    simulate_ccd,
    simulate_dataset,
    simulate_frame,
)

NO_DEFECTS = dict(
    amp_glow_e=0.0,
    glow_band_probability=0.0,
    hot_pixels=(0.0, 0.0),
    hot_segments=(0.0, 0.0),
    hot_columns=(0.0, 0.0),
)


def small(**changes) -> SimConfig:
    """A 64 × 64 conventional frame with a few extra clusters so every test sees some."""
    return dataclasses.replace(SimConfig(rows=64, cols=64, cluster_rate=2000.0, muon_rate=30.0), **changes)


def noiseless(**changes) -> SimConfig:
    """Only events: the image is exactly the collected cluster charge."""
    return small(read_noise_e=0.0, dark_current_e=0.0, **NO_DEFECTS, **changes)


def monoenergetic(side: int, energy_kev: float, **changes) -> SimConfig:
    """Noiseless point clusters of one energy only: isolates charge generation and diffusion."""
    return noiseless(
        rows=side, cols=side, energy_min_kev=energy_kev, energy_max_kev=energy_kev,
        muon_rate=0.0, electron_track_rate=0.0, **changes,
    )


def assert_same(a: SimulatedFrame, b: SimulatedFrame) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert a.metadata == b.metadata


def test_same_seed_same_frame_and_other_seed_differs():
    config = small()
    assert_same(simulate_frame(config, seed=7), simulate_frame(config, seed=7))
    other = simulate_frame(config, seed=8)
    assert not np.array_equal(simulate_frame(config, seed=7).image, other.image)


def test_default_frame_shapes_and_dtypes():
    frame = simulate_frame(small(prescan_cols=5, overscan_cols=11), seed=1)
    assert frame.image.shape == frame.labels.shape == frame.instances.shape == (64, 80)
    assert frame.image.dtype == np.float32
    assert frame.labels.dtype == np.uint8
    assert frame.instances.dtype == np.int32
    assert set(np.unique(frame.labels)) <= {BACKGROUND, GLOWING, HOT_PIXEL, CLUSTER}
    assert frame.metadata["shape"] == [64, 80] and frame.metadata["active_cols"] == [5, 69]
    json.dumps(frame.metadata)  # JSON-serialisable as documented


def test_adu_is_pedestal_plus_gain_times_electrons():
    config = small(pedestal_adu=-39.0, gain_adu_per_e=3.5)
    electrons = simulate_frame(config, seed=2)
    adu = simulate_frame(dataclasses.replace(config, units="adu"), seed=2)
    np.testing.assert_allclose(adu.image, -39.0 + 3.5 * electrons.image, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(adu.labels, electrons.labels)


def test_prescan_and_overscan_hold_only_noise():
    config = SimConfig(
        rows=128, cols=64, prescan_cols=16, overscan_cols=48, glow_band_probability=1.0, hot_columns=(20, 20)
    )
    frame = simulate_frame(config, seed=3)
    outside = np.concatenate([frame.image[:, :16], frame.image[:, -48:]], axis=1)
    assert abs(outside.mean()) < 0.1
    assert outside.std() == pytest.approx(config.read_noise_e, rel=0.05)
    for columns in (slice(0, 16), slice(-48, None)):
        assert (frame.labels[:, columns] == BACKGROUND).all()
        assert (frame.instances[:, columns] == 0).all()
    assert frame.metadata["defects"]["glow_band_cols"][0] == 16  # the band starts at the first active column
    assert all(16 <= c < 80 for c in frame.metadata["defects"]["hot_columns"])
    assert all(16 <= c["col"] < 80 for c in frame.metadata["clusters"])


def test_instances_agree_with_labels_and_metadata():
    frame = simulate_frame(small(muon_rate=300.0, electron_track_rate=300.0), seed=4)
    clusters = frame.metadata["clusters"]
    assert {c["kind"] for c in clusters} == {"point", "muon", "electron"}
    assert [c["id"] for c in clusters] == list(range(1, len(clusters) + 1))
    # cluster has the top precedence, so instance pixels and cluster pixels coincide
    np.testing.assert_array_equal(frame.instances > 0, frame.labels == CLUSTER)
    ids, counts = np.unique(frame.instances[frame.instances > 0], return_counts=True)
    visible = {c["id"]: c["pixels"] for c in clusters if c["pixels"] > 0}
    assert dict(zip(ids.tolist(), counts.tolist())) == visible
    assert len(visible) >= 0.9 * len(clusters)  # only clusters hidden under bigger ones vanish
    assert all(c["electrons"] > 0 for c in clusters)


def test_shared_pixel_goes_to_the_event_with_most_electrons():
    # pixel 0: events 0 (x1) and 2 (x2); pixel 1: events 1 and 3 tie (later wins); pixel 2: event 1 only
    pix = np.array([0, 0, 0, 1, 1, 2])
    event = np.array([0, 2, 2, 1, 3, 1], dtype=np.int32)
    np.testing.assert_array_equal(_dominant_event(pix, event, 4, 4), [3, 4, 2, 0])


def test_collected_charge_is_conserved_and_labelled():
    frame = simulate_frame(noiseless(), seed=5)
    clusters = frame.metadata["clusters"]
    assert frame.image.sum() == pytest.approx(sum(c["electrons"] for c in clusters), rel=1e-6)
    np.testing.assert_array_equal(frame.labels == CLUSTER, frame.image >= 1)  # truth: >= 1 e- from a cluster
    assert frame.image[frame.instances > 0].sum() == frame.image.sum()


def test_charge_in_noisy_frame_matches_metadata():
    frame = simulate_frame(small(dark_current_e=0.0, **NO_DEFECTS), seed=6)
    total = sum(c["electrons"] for c in frame.metadata["clusters"])
    noise = frame.metadata["read_noise_e"] * np.sqrt(frame.image.size)
    assert abs(frame.image.sum() - total) < 5 * noise


def test_fano_statistics_of_monoenergetic_clusters():
    frame = simulate_frame(monoenergetic(256, 5.9, cluster_rate=8000.0), seed=7)
    inner = [c["electrons"] for c in frame.metadata["clusters"] if 5 < c["row"] < 250 and 5 < c["col"] < 250]
    mean = 5900 / E_PAIR_EV
    assert len(inner) > 1000
    assert np.mean(inner) == pytest.approx(mean, rel=0.005)
    assert np.var(inner) == pytest.approx(FANO * mean, rel=0.15)


def test_diffusion_grows_with_depth():
    sigma = diffusion_sigma_um(np.array([0.0, 100.0, 300.0, 675.0]))
    assert sigma[0] == 0 and np.all(np.diff(sigma) > 0)
    assert sigma[-1] == pytest.approx(np.sqrt(-216.2 * np.log(1 - 8.86e-4 * 675)), rel=1e-9)
    frame = simulate_frame(monoenergetic(128, 10.0), seed=8)
    depths, spreads = [], []
    rows, cols = np.indices(frame.image.shape)
    for c in frame.metadata["clusters"]:
        mask = frame.instances == c["id"]
        inner = 5 < c["row"] < 122 and 5 < c["col"] < 122
        if inner and c["pixels"] > 0 and frame.image[mask].sum() == c["electrons"]:  # isolated
            w = frame.image[mask]
            spreads.append(np.average((rows[mask] - c["row"]) ** 2 + (cols[mask] - c["col"]) ** 2, weights=w))
            depths.append(c["depth_um"])
    assert len(depths) > 50
    assert np.corrcoef(depths, spreads)[0, 1] > 0.8


def test_defects_are_labelled_by_expected_charge_with_precedence():
    config = small(
        glow_band_probability=1.0, glow_band_width=(6, 6), glow_band_e=(3.0, 3.0), hot_columns=(64, 64), amp_glow_e=0.0
    )
    frame = simulate_frame(config, seed=9)
    defects = frame.metadata["defects"]
    assert defects["glow_band_cols"] == [0, 6] and defects["hot_columns"]
    band = frame.labels[:, :6]
    assert np.isin(band, [GLOWING, HOT_PIXEL, CLUSTER]).all() and (band == GLOWING).mean() > 0.5
    for column in defects["hot_columns"]:
        assert np.isin(frame.labels[:, column], [HOT_PIXEL, CLUSTER]).all()
    faint = dataclasses.replace(config, glow_band_e=(0.5, 0.5), defect_label_sigma=1.0)  # 0.4–0.6 e⁻ < 1.6 e⁻
    assert not (simulate_frame(faint, seed=9).labels[:, :6] == GLOWING).any()


def test_presets():
    assert {"conventional", "skipper", "seed-v1"} <= set(SIM_PRESETS)
    skipper_config = dataclasses.replace(SIM_PRESETS["skipper"], rows=64, cols=32, overscan_cols=64)
    skipper = simulate_frame(skipper_config, seed=0)
    assert skipper.image[:, 32:].std() == pytest.approx(0.16, rel=0.05)
    v1 = SIM_PRESETS["seed-v1"]
    assert (v1.rows, v1.cols) == (256, 256)
    bands = [simulate_frame(v1, seed=s).metadata["defects"] for s in range(6)]
    for defects in bands:
        assert 330 <= defects["hot_segments"] <= 600
        band = defects["glow_band_cols"]
        assert band is None or (band[0] == 0 and 40 <= band[1] <= 61)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"rows": -5}, "rows"),
        ({"rows": 6145}, "6144"),
        ({"cols": 0}, "cols"),
        ({"units": "photons"}, "units"),
        ({"read_noise_e": -1.0}, "read_noise_e"),
        ({"energy_min_kev": 10.0, "energy_max_kev": 1.0}, "energy_max_kev"),
        ({"glow_band_width": (5, 2)}, "glow_band_width"),
        ({"thickness_um": 2000.0}, "diffusion_b_per_um"),
    ],
)
def test_bad_config_is_refused_with_the_parameter_named(changes, words):
    with pytest.raises(InputError, match=words):
        SimConfig(**changes)
    mutated = SimConfig(rows=16, cols=16)
    for key, value in changes.items():
        setattr(mutated, key, value)  # as the CLI does; simulate_frame checks again
    with pytest.raises(InputError, match=words):
        simulate_frame(mutated)


def test_bad_seed_and_unknown_key_are_refused():
    with pytest.raises(InputError, match="seed"):
        simulate_frame(small(), seed=-1)
    with pytest.raises(InputError, match="colour"):
        SimConfig.from_dict({"colour": 1})


def test_config_round_trips_through_json():
    config = dataclasses.replace(SIM_PRESETS["seed-v1"], line_energies_kev=(5.9, 8.05), line_fraction=0.3)
    data = json.loads(json.dumps(config.to_dict()))
    assert SimConfig.from_dict(data) == config


def test_energy_lines_are_drawn():
    config = noiseless(rows=128, cols=128, energy_min_kev=0.1, energy_max_kev=0.2)
    config = dataclasses.replace(config, line_energies_kev=(5.9,), line_fraction=0.5)
    clusters = simulate_frame(config, seed=10).metadata["clusters"]
    energies = [c["energy_kev"] for c in clusters if c["kind"] == "point"]
    assert 0.3 < np.mean(np.isclose(energies, 5.9)) < 0.7


@pytest.mark.parametrize("fmt", ["npy", "fits"])
def test_simulate_dataset_writes_documented_files(tmp_path, fmt):
    config = small(rows=32, cols=32, prescan_cols=4)
    paths = simulate_dataset(tmp_path / "data", 2, config, seed=3, fmt=fmt)
    assert [p.name for p in paths] == [f"sim_000.{fmt}", f"sim_001.{fmt}"]
    ends = (f".{fmt}", "_labels.png", "_instances.npy", "_meta.json")
    expected = {f"sim_00{i}{end}" for i in range(2) for end in ends}
    assert {p.name for p in (tmp_path / "data").iterdir()} == expected  # no temp files left behind
    meta = json.loads((tmp_path / "data" / "sim_001_meta.json").read_text())
    assert meta["seed"] == frame_seed(3, 1) and meta["dataset"]["index"] == 1
    again = simulate_frame(SimConfig.from_dict(meta["config"]), seed=meta["seed"])
    if fmt == "npy":
        image = np.load(paths[1])
    else:
        from astropy.io import fits

        image = fits.getdata(paths[1])
    np.testing.assert_array_equal(image, again.image)
    labels = np.asarray(Image.open(tmp_path / "data" / "sim_001_labels.png"))
    np.testing.assert_array_equal(labels, again.labels)
    np.testing.assert_array_equal(np.load(tmp_path / "data" / "sim_001_instances.npy"), again.instances)


def test_simulate_dataset_refuses_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="fmt"):
        simulate_dataset(tmp_path, 1, small(), fmt="tiff")
    with pytest.raises(InputError, match="n must"):
        simulate_dataset(tmp_path, -1, small())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        simulate_dataset(blocker, 1, small())


def test_default_frame_has_realistic_cluster_density():
    frame = simulate_frame(SimConfig(), seed=0)
    clusters = frame.metadata["clusters"]
    assert 50 <= len(clusters) <= 150
    sigma = frame.metadata["read_noise_e"]
    peaks = [frame.image[frame.instances == c["id"]].max() for c in clusters if c["pixels"] > 0]
    assert np.mean(np.asarray(peaks) >= 4 * sigma) > 0.85  # a 4σ threshold finds most clusters…
    faint = (frame.labels == CLUSTER) & (frame.image < 3 * sigma)
    assert faint.sum() > 0.1 * (frame.labels == CLUSTER).sum()  # …but misses their faint edges


# ---------------------------------------------------------------- readout realism (real skipper frames)


def test_overscan_rows_hold_only_noise():
    frame = simulate_frame(small(overscan_rows=16, read_noise_e=1.0), seed=2)
    assert frame.image.shape == (80, 64) and frame.metadata["shape"] == [80, 64]
    assert (frame.labels[64:] == BACKGROUND).all() and (frame.instances[64:] == 0).all()
    assert frame.image[64:].std() == pytest.approx(1.0, rel=0.1)


def test_pedestal_drifts_along_rows_with_the_asked_rms():
    quiet = noiseless(rows=512, cols=256, cluster_rate=0.0, muon_rate=0.0, electron_track_rate=0.0)
    still = simulate_frame(quiet, seed=0).image
    drifting = simulate_frame(dataclasses.replace(quiet, pedestal_drift_e=0.7), seed=0).image
    assert np.median(still, axis=1).std() == 0
    row_level = np.median(drifting, axis=1)
    assert row_level.std() == pytest.approx(0.7, rel=0.01)
    assert np.abs(np.diff(row_level)).mean() < 0.2  # a slow walk, not white row noise


def test_cti_trails_cluster_charge_towards_later_read_columns():
    config = monoenergetic(256, 5.0, cluster_rate=100.0)
    sharp, trailed = (simulate_frame(dataclasses.replace(config, cti_trail=p), seed=4) for p in (0.0, 0.5))

    def mean_shift(frame: SimulatedFrame) -> float:
        cols = np.broadcast_to(np.arange(frame.image.shape[1]), frame.image.shape)
        shifts = []
        for cluster in frame.metadata["clusters"]:
            mask = frame.instances == cluster["id"]
            shifts.append(np.average(cols[mask], weights=frame.image[mask]) - cluster["col"])
        return float(np.mean(shifts))

    assert abs(mean_shift(sharp)) < 0.1
    assert mean_shift(trailed) == pytest.approx(1.0, abs=0.15)  # geometric tail: p / (1 − p) pixels
    assert trailed.image.sum() <= sharp.image.sum()  # charge trailed off the frame is lost, never made


def test_serial_register_hits_are_horizontal_cluster_trails():
    config = noiseless(cluster_rate=0.0, muon_rate=0.0, electron_track_rate=0.0, serial_trail_rate=300.0,
                       serial_trail_length=(20, 30), serial_trail_e=(5.0, 8.0))
    frame = simulate_frame(config, seed=1)
    trails = [c for c in frame.metadata["clusters"] if c["kind"] == "trail"]
    assert trails and len(trails) == len(frame.metadata["clusters"])
    for trail in trails:
        rows, cols = np.nonzero(frame.instances == trail["id"])
        assert len(set(rows)) == 1  # one row
        assert cols.max() - cols.min() + 1 <= 30


def test_few_electron_hits_carry_a_few_electrons_in_one_to_few_pixels():
    config = noiseless(cluster_rate=0.0, muon_rate=0.0, electron_track_rate=0.0, few_electron_rate=2000.0)
    hits = simulate_frame(config, seed=3).metadata["clusters"]
    assert hits and {c["kind"] for c in hits} == {"few-electron"}
    assert all(1 <= c["electrons"] <= 10 and 1 <= c["pixels"] <= c["electrons"] for c in hits)


def test_glitch_pixels_read_millions_of_adu_and_are_labelled_hot():
    config = small(units="adu", glitch_rate=2000.0)
    frame = simulate_frame(config, seed=5)
    glitched = frame.image >= 1e6
    assert glitched.sum() == frame.metadata["defects"]["glitches"] > 0
    assert (frame.labels[glitched] == HOT_PIXEL).all() and (frame.instances[glitched] == 0).all()
    assert frame.image[glitched].max() <= 1e7


def test_quantised_output_sits_on_the_step_grid():
    frame = simulate_frame(small(units="adu", quantisation_step=0.25, pedestal_adu=-39.0), seed=0)
    steps = frame.image / 0.25
    np.testing.assert_array_equal(steps, np.round(steps))
    assert len(np.unique(frame.image)) > 10


def test_a_ccd_has_amplifiers_with_own_pedestals_and_a_dead_one():
    config = small(units="adu", pedestal_adu=1000.0, gain_adu_per_e=5.0)
    amps = simulate_ccd(config, seed=7, layout=AmplifierLayout(amplifiers=3, dead=(2,), dead_noise_adu=3000.0))
    assert [a.metadata["amplifier"]["name"] for a in amps] == ["AMP1", "AMP2", "AMP3"]
    pedestals = [np.median(a.image) for a in amps[:2]]
    assert abs(pedestals[0] - pedestals[1]) > 1 and all(abs(p - 1000) <= 100 + 20 for p in pedestals)
    dead = amps[2]
    assert dead.metadata["amplifier"]["dead"] and not dead.metadata["clusters"]
    assert (dead.labels == BACKGROUND).all()
    assert dead.image.std() == pytest.approx(3000.0, rel=0.1)
    assert all((a.labels == CLUSTER).any() for a in amps[:2])


def test_multi_amplifier_dataset_is_one_fits_file_with_truth_per_extension(tmp_path):
    from napari_ccdseg.dataset import load_labelled
    from napari_ccdseg.io import read_frames

    layout = AmplifierLayout(amplifiers=2)
    (path,) = simulate_dataset(tmp_path, 1, small(units="adu"), seed=9, fmt="fits", layout=layout)
    frames = read_frames(path)
    assert [f.name for f in frames] == ["sim_000[AMP1]", "sim_000[AMP2]"]
    truth = simulate_ccd(small(units="adu"), frame_seed(9, 0), layout)
    labelled = load_labelled([tmp_path])
    for frame, expected, found in zip(frames, truth, labelled):
        np.testing.assert_allclose(frame.data, expected.image)
        np.testing.assert_array_equal(found.labels, expected.labels)
        np.testing.assert_array_equal(found.instances, expected.instances)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: SimConfig(cti_trail=1.0), "cti_trail"),
        (lambda: SimConfig(overscan_rows=-1), "overscan_rows"),
        (lambda: SimConfig(glitch_adu=(1e7, 1e6)), "glitch_adu"),
        (lambda: AmplifierLayout(amplifiers=4, dead=(4,)), "dead amplifiers"),
        (lambda: AmplifierLayout(amplifiers=0), "amplifiers"),
    ],
)
def test_bad_readout_settings_are_refused(make, words):
    with pytest.raises(InputError, match=words):
        make()


@pytest.mark.parametrize("preset", ["damic-m", "single-sample"])
def test_real_detector_presets_look_like_their_detectors(preset):
    config = SIM_PRESETS[preset]
    frame = simulate_frame(config, seed=0)
    assert frame.image.shape == (config.total_rows, config.total_cols)
    overscan = frame.image[config.rows :, config.prescan_cols : config.prescan_cols + config.cols]
    noise_adu = config.read_noise_e * config.gain_adu_per_e
    assert np.median(overscan) == pytest.approx(config.pedestal_adu, abs=max(3 * noise_adu, 1.5))
    assert (frame.labels == CLUSTER).any()



# ---------------------------------------------------------------- electron-counting frames, alphas, saturation

# Frames made before dark-current ramps, alphas and the full well were added (sha256 of image,
# labels and instances, first 16 hex digits, 96 × 128 active, seed 5): the new options default
# off and draw no random numbers when off, so these must stay bit for bit the same. "old damic-m"
# is the damic-m preset as it was, which the new preset replaced. Hot segments were then half
# along rows; they now lie along columns unless ``hot_segments_along_rows`` says otherwise, and
# with it at 0.5 every preset's frame is still the one made before.
OLD_DAMIC_M = SimConfig(
    rows=320, cols=640, prescan_cols=8, overscan_cols=64, overscan_rows=16, units="adu", pedestal_adu=-39.0,
    gain_adu_per_e=6.0, read_noise_e=0.16, dark_current_e=0.005, pedestal_drift_e=1 / 6, cti_trail=0.05,
    cluster_rate=130.0, few_electron_rate=40.0, serial_trail_rate=2.0, glitch_rate=0.5, quantisation_step=0.25,
    amp_glow_e=2.0,
)
FRAMES_MADE_BEFORE = {
    "conventional": "556587628e0b3ea9",
    "skipper": "35d9fc4ce1a3da6c",
    "seed-v1": "4c91cb120135fa75",
    "single-sample": "fa91acc3c7433c2e",
    "old damic-m": "be0df9349898ef45",
}


def frame_digest(frame: SimulatedFrame) -> str:
    digest = hashlib.sha256()
    for array in (frame.image, frame.labels, frame.instances):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(FRAMES_MADE_BEFORE))
def test_existing_presets_keep_their_frames_bit_for_bit(name):
    config = OLD_DAMIC_M if name == "old damic-m" else SIM_PRESETS[name]
    frame = simulate_frame(dataclasses.replace(config, rows=96, cols=128, hot_segments_along_rows=0.5), seed=5)
    assert frame_digest(frame) == FRAMES_MADE_BEFORE[name]


@pytest.mark.parametrize("along_rows, horizontal_share", [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)])
def test_hot_segments_lie_along_columns_unless_told_otherwise(along_rows, horizontal_share):
    config = SimConfig(
        rows=256, cols=256, read_noise_e=0.0, dark_current_e=0.0, cluster_rate=0.0, muon_rate=0.0,
        electron_track_rate=0.0, **{**NO_DEFECTS, "hot_segments": (400.0, 400.0)}, hot_segment_length=(3, 3),
        hot_segments_along_rows=along_rows,
    )
    hot = simulate_frame(config, seed=2).labels == HOT_PIXEL
    pieces, n = ndimage.label(hot)
    shapes = [(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndimage.find_objects(pieces)]
    straight = [shape for shape in shapes if sorted(shape) == [1, 3]]  # lone segments, not crossed or cut
    assert len(straight) > 50
    share = np.mean([height == 1 for height, _ in straight])
    assert share == pytest.approx(horizontal_share, abs=0.1)


def dark_only(**changes) -> SimConfig:
    """Dark current alone, read without noise: the image is the dark-current electrons."""
    return small(read_noise_e=0.0, cluster_rate=0.0, muon_rate=0.0, electron_track_rate=0.0, **NO_DEFECTS, **changes)


def test_dark_current_rises_along_the_readout_rows_as_recorded():
    config = dark_only(rows=400, cols=250, dark_current_e=1.0, dark_current_row_ramp=0.7)
    frame = simulate_frame(config, seed=3)
    truth = np.asarray(frame.metadata["dark_current_e_per_row"])
    assert truth[0] == pytest.approx(0.3, abs=0.01) and truth[-1] == pytest.approx(1.7, abs=0.01)
    assert truth.mean() == pytest.approx(1.0, rel=1e-6) and frame.metadata["dark_current_e"] == 1.0
    assert np.all(np.diff(truth) > 0)
    for band in np.split(np.arange(400), 8):  # 50-row bands: mean λ known to ~1 %
        measured = frame.image[band].mean()
        expected = truth[band].mean()
        assert measured == pytest.approx(expected, abs=4 * np.sqrt(expected / frame.image[band].size))
    assert (frame.labels == BACKGROUND).all()  # dark current is never a cluster or a defect


def test_dark_current_can_ramp_along_the_columns_too():
    config = dark_only(rows=250, cols=400, dark_current_e=0.5, dark_current_col_ramp=0.5)
    frame = simulate_frame(config, seed=4)
    assert frame.metadata["dark_current_e_per_row"] == [0.5] * 250  # column-averaged: flat along the rows
    truth = dark_current_map(config)
    assert truth.shape == (250, 400) and truth.mean() == pytest.approx(0.5, rel=1e-9)
    cols = np.arange(400)
    for band in np.split(cols, 4):
        expected = 0.5 * (1 + 0.5 * (2 * (band + 0.5) / 400 - 1)).mean()
        assert truth[:, band].mean() == pytest.approx(expected, rel=1e-9)
        measured = frame.image[:, band].mean()
        assert measured == pytest.approx(expected, abs=4 * np.sqrt(expected / frame.image[:, band].size))


def test_metadata_has_gain_pedestal_and_dark_current_at_top_level():
    frame = simulate_frame(small(units="adu", gain_adu_per_e=5.5, pedestal_adu=-20.0), seed=1)
    meta = frame.metadata
    assert (meta["gain_adu_per_e"], meta["pedestal_adu"], meta["dark_current_e"]) == (5.5, -20.0, 0.05)
    assert meta["full_well_e"] == 0 and meta["saturated_pixels"] == 0


def alphas_only(side: int = 256, **changes) -> SimConfig:
    """Noiseless alphas alone, ~6 per frame of 256²."""
    return noiseless(rows=side, cols=side, cluster_rate=0.0, muon_rate=0.0, electron_track_rate=0.0,
                     alpha_rate=24.0, **changes)


def test_alphas_are_bright_round_blobs_tens_of_pixels_across():
    frame = simulate_frame(alphas_only(), seed=2)
    alphas = frame.metadata["clusters"]
    assert len(alphas) >= 5 and {c["kind"] for c in alphas} == {"alpha"}
    inside = [c for c in alphas if 30 < c["row"] < 226 and 30 < c["col"] < 226 and c["pixels"] > 200]
    assert inside
    for alpha in inside:
        assert 3000 <= alpha["energy_kev"] <= 8000
        assert alpha["electrons"] == pytest.approx(alpha["energy_kev"] * 1e3 / E_PAIR_EV, rel=0.01)
        assert alpha["depth_um"] < 60 or alpha["depth_um"] > 675 - 60  # from a surface, range < 60 µm
        rows, cols = np.nonzero(frame.instances == alpha["id"])
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert 15 <= min(height, width) and max(height, width) <= 80  # tens of pixels across
        assert 0.7 < height / width < 1.4  # round
        assert frame.image[frame.instances == alpha["id"]].max() > 5000  # very bright
    depths = [c["depth_um"] for c in alphas]
    assert min(depths) < 60 and max(depths) > 675 - 60  # both surfaces


def test_adding_alphas_keeps_the_other_events_of_a_seed():
    plain = simulate_frame(small(), seed=6).metadata["clusters"]
    with_alphas = simulate_frame(small(alpha_rate=500.0, alpha_energy_mev=(0.5, 0.5)), seed=6).metadata["clusters"]
    assert [c["kind"] for c in with_alphas[: len(plain)]] == [c["kind"] for c in plain]
    assert [(c["row"], c["col"]) for c in with_alphas[: len(plain)]] == [(c["row"], c["col"]) for c in plain]
    assert {c["kind"] for c in with_alphas[len(plain):]} == {"alpha"}


def test_full_well_clips_pixels_and_the_truth_counts_them():
    unlimited = simulate_frame(alphas_only(128), seed=2)
    clipped = simulate_frame(alphas_only(128, full_well_e=3000.0), seed=2)
    assert unlimited.image.max() > 3000 and clipped.image.max() == 3000
    at_full_well = clipped.image == 3000
    assert clipped.metadata["saturated_pixels"] == at_full_well.sum() > 0
    assert sum(c["saturated_pixels"] for c in clipped.metadata["clusters"]) == at_full_well.sum()
    np.testing.assert_array_equal(clipped.image, np.minimum(unlimited.image, 3000))
    np.testing.assert_array_equal(clipped.labels, unlimited.labels)  # saturated pixels stay cluster


def test_damic_m_with_alphas_saturates_at_its_full_well():
    config = dataclasses.replace(SIM_PRESETS["damic-m"], rows=200, cols=200, alpha_rate=20.0)
    frame = simulate_frame(config, seed=1)
    assert any(c["kind"] == "alpha" and c["saturated_pixels"] > 0 for c in frame.metadata["clusters"])
    ceiling = config.pedestal_adu + config.gain_adu_per_e * config.full_well_e
    charge = frame.image[frame.labels == CLUSTER]  # glitch pixels aside
    assert charge.max() == pytest.approx(ceiling, abs=6 * config.read_noise_e * config.gain_adu_per_e + 1)


def test_damic_m_trails_hold_hundreds_to_thousands_of_electrons_per_pixel():
    config = dataclasses.replace(
        SIM_PRESETS["damic-m"], serial_trail_rate=100.0, cluster_rate=0.0, few_electron_rate=0.0, muon_rate=0.0,
        electron_track_rate=0.0, cti_trail=0.0,
    )
    frame = simulate_frame(config, seed=2)
    trails = [c for c in frame.metadata["clusters"] if c["kind"] == "trail"]
    assert len(trails) > 20
    for trail in trails:
        rows, cols = np.nonzero(frame.instances == trail["id"])
        assert len(set(rows)) == 1 and len(cols) <= 60
        assert 150 <= trail["electrons"] / len(cols) <= 2100
    assert SimConfig().serial_trail_e == (1.0, 10.0)  # the default stays faint: old frames unchanged


def test_damic_m_histogram_resolves_zero_one_two_electron_peaks():
    """An averaged skipper image in a module test: a comb of peaks at k · gain whose heights follow
    Poisson(k; λ(row)), with λ rising along the readout from 0.3 to 1.5 e⁻/pixel."""
    config = SIM_PRESETS["damic-m"]
    frame = simulate_frame(config, seed=0)
    truth = np.asarray(frame.metadata["dark_current_e_per_row"])
    assert truth[0] == pytest.approx(0.3, abs=0.01) and truth[-1] == pytest.approx(1.5, abs=0.01)
    first, end = frame.metadata["active_cols"]
    pedestal = np.median(frame.image[: config.rows, end:], axis=1)  # each row's overscan
    electrons = (frame.image[: config.rows, first:end] - pedestal[:, None]) / config.gain_adu_per_e
    quiet = frame.labels[: config.rows, first:end] == BACKGROUND
    values, rows = electrons[quiet], np.nonzero(quiet)[0]
    window = math.erf(0.3 / (config.read_noise_e * math.sqrt(2)))  # share of a peak within ±0.3 e⁻
    assert np.mean(np.abs(values - np.round(values)) < 0.3) > 0.9 * window  # peaks, not a smear
    for k in range(3):
        poisson = np.mean(np.exp(-truth[rows]) * truth[rows] ** k / math.factorial(k))
        assert np.mean(np.abs(values - k) < 0.3) == pytest.approx(window * poisson, rel=0.05)
    gap = np.mean(np.abs(values - 0.5) < 0.1)  # between the 0 and 1 e⁻ peaks: almost empty
    assert gap < 0.01


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"dark_current_row_ramp": 1.5}, "dark_current_row_ramp"),
        ({"dark_current_col_ramp": -0.1}, "dark_current_col_ramp"),
        ({"full_well_e": -1.0}, "full_well_e"),
        ({"alpha_rate": -1.0}, "alpha_rate"),
        ({"alpha_energy_mev": (0.0, 5.0)}, "alpha_energy_mev"),
        ({"alpha_plasma_sigma_um": (60.0, 30.0)}, "alpha_plasma_sigma_um"),
    ],
)
def test_bad_electron_counting_settings_are_refused(changes, words):
    with pytest.raises(InputError, match=words):
        SimConfig(**changes)
