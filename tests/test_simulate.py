"""The simulator: reproducible frames whose truth labels, instances and metadata agree with the image."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from napari_ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from napari_ccdseg.errors import InputError
from napari_ccdseg.simulate import (
    E_PAIR_EV,
    FANO,
    SIM_PRESETS,
    SimConfig,
    SimulatedFrame,
    _dominant_event,
    diffusion_sigma_um,
    frame_seed,
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
