"""Particle types and depths of clusters: features on known shapes, the bundled model on simulated
clusters it never saw, the depth inversion against the simulator's diffusion, bad input."""

import pickle

import numpy as np
import pandas as pd
import pytest

from napari_ccdseg import particles
from napari_ccdseg.errors import InputError
from napari_ccdseg.classes import CLUSTER
from napari_ccdseg.metrics import cluster_instances
from napari_ccdseg.simulate import SimConfig, diffusion_sigma_um, simulate_frame


def _shapes() -> tuple[np.ndarray, np.ndarray]:
    """Three clusters in one image: 1 a horizontal line, 2 a round blob, 3 a thin diagonal line."""
    image = np.zeros((40, 40))
    instances = np.zeros((40, 40), dtype=np.int32)
    image[5, 5:25] = 30.0
    instances[5, 5:25] = 1
    rr, cc = np.mgrid[:40, :40]
    blob = (rr - 20) ** 2 + (cc - 10) ** 2 <= 9
    image[blob] = 100.0 * np.exp(-((rr[blob] - 20) ** 2 + (cc[blob] - 10) ** 2) / 8.0)
    instances[blob] = 2
    for i in range(15):
        image[22 + i, 22 + i] = 50.0
        instances[22 + i, 22 + i] = 3
    return image, instances


def test_features_order_lines_blobs_and_diagonals():
    image, instances = _shapes()
    f = particles.cluster_features(image, instances, noise_e=0.2)
    line, blob, diagonal = (f.loc[i] for i in (1, 2, 3))
    assert list(f.index) == [1, 2, 3] and list(f.columns) == list(particles.FEATURE_NAMES)
    assert line["n_rows"] == 1 and line["row_share"] == pytest.approx(1.0) and line["n_cols"] == 20
    assert line["horizontal"] == pytest.approx(1.0) and line["std_t"] == pytest.approx(0.0, abs=1e-6)
    assert line["charge_e"] == pytest.approx(600.0) and line["length_px"] == pytest.approx(20.0)
    assert blob["elongation"] > 0.9 > 0.1 > diagonal["elongation"]
    assert diagonal["std_l"] > blob["std_l"] and diagonal["length_px"] == pytest.approx(14 * np.sqrt(2) + 1, rel=1e-6)
    assert diagonal["horizontal"] == pytest.approx(np.sqrt(0.5), abs=1e-6)
    assert diagonal["qmax_share"] == pytest.approx(1 / 15) and line["qmax_share"] == pytest.approx(1 / 20)
    assert blob["sigma_row"] == pytest.approx(blob["sigma_col"]) and blob["horizontal"] > 0
    assert blob["fill"] > line["fill"] * 0.5 and diagonal["fill"] == pytest.approx(15 / 225)


def test_local_level_is_taken_from_the_free_pixels_around_each_cluster():
    image = np.full((20, 20), 2.0)  # glow of 2 e⁻ per pixel
    instances = np.zeros((20, 20), np.int32)
    image[8:10, 8:10] = 12.0
    instances[8:10, 8:10] = 1
    image[15:17, 2] = 0.5
    instances[15:17, 2] = 2
    image[13:20, 0:5] = np.where(instances[13:20, 0:5] == 2, 0.5, 0.0)  # the second sits where there is no glow
    f = particles.cluster_features(image, instances, noise_e=0.1)
    assert f.loc[1, "level_e"] == 2.0 and f.loc[1, "net_charge_e"] == pytest.approx(48.0 - 4 * 2.0)
    assert f.loc[2, "level_e"] == 0.0 and f.loc[2, "net_charge_e"] == pytest.approx(1.0)


def test_hand_cuts_name_the_textbook_shapes():
    image, instances = _shapes()
    image[instances == 2] *= 1e4  # a very bright round blob: an alpha
    types = particles.hand_cut_types(particles.cluster_features(image, instances, noise_e=0.2))
    assert list(types) == ["trail", "alpha", "muon"]


HELD_OUT = SimConfig(
    rows=512, cols=512, units="adu", pedestal_adu=500.0, gain_adu_per_e=4.0, read_noise_e=0.16,
    dark_current_e=0.005, cluster_rate=150.0, few_electron_rate=60.0, muon_rate=10.0,
    electron_track_rate=16.0, serial_trail_rate=12.0, serial_trail_e=(5.0, 50.0), alpha_rate=6.0,
    hot_pixels=(0.0, 0.0), hot_segments=(0.0, 0.0), amp_glow_e=0.0,
)
"""Skipper noise, every type at a high rate; seeds far from the training seeds (< 1,000,000)."""


@pytest.fixture(scope="module")
def held_out_frame():
    return simulate_frame(HELD_OUT, 8_123_457)


@pytest.fixture(scope="module")
def held_out_clusters(held_out_frame):
    """Found clusters of two held-out frames with their true kinds, and the electrons/instances of each."""
    frames = [held_out_frame, simulate_frame(HELD_OUT, 8_123_458)]
    return [particles.simulated_clusters(frame) for frame in frames]


def test_bundled_model_loads_without_pickle_and_types_held_out_clusters(held_out_clusters, monkeypatch):
    monkeypatch.setattr(pickle, "loads", None)  # any unpickling would fail
    monkeypatch.setattr(pickle, "load", None)
    model = particles.load_particle_model()
    assert set(model.classes) == set(particles.PARTICLE_TYPES)
    assert particles.MODEL_FILE.stat().st_size < 1_000_000
    kinds, predicted, single = [], [], []
    for table, electrons, found in held_out_clusters:
        types, scores = particles.classify(electrons, found, model)
        assert len(types) == len(table) and ((scores > 0) & (scores <= 1)).all()
        known = table["kind"].isin(particles.PARTICLE_TYPES).to_numpy()
        kinds += list(table["kind"][known])
        predicted += list(types[known])
        single += list(table["merged"][known] == 1)
    confusion = particles.particle_confusion(kinds, predicted)
    assert particles.accuracy(confusion) >= 0.95
    # per type on clusters of one event: a muon crossing an electron track is either
    single = np.array(single)
    scores = particles.type_scores(particles.particle_confusion(np.array(kinds)[single], np.array(predicted)[single]))
    assert (scores["clusters"] >= 5).all() and (scores["recall"] >= 0.8).all(), scores


def test_learned_model_beats_the_hand_cuts(held_out_clusters):
    known = pd.concat([table[table["kind"].isin(particles.PARTICLE_TYPES)] for table, _, _ in held_out_clusters])
    learned, _ = particles.classify_features(known)
    cuts = particles.hand_cut_types(known)
    assert np.mean(learned == known["kind"]) > np.mean(cuts == known["kind"])


def test_saved_ensemble_round_trips(tmp_path):
    # one stump per class: feature 0 <= 1 → class 0 gains 2, else class 1 gains 2
    stump = dict(feature=[0, 0, 0], threshold=[1.0, 0.0, 0.0], left=[1, 0, 0], right=[2, 0, 0],
                 value=[0.0, 2.0, -2.0], is_leaf=[False, True, True], nan_left=[True, False, False])
    arrays = {k: np.array(v * 2) for k, v in stump.items()}
    arrays["left"] = np.array([1, 0, 0, 4, 0, 0])
    arrays["right"] = np.array([2, 0, 0, 5, 0, 0])
    arrays["value"] = np.array([0.0, 2.0, -2.0, 0.0, -2.0, 2.0])
    ensemble = particles.TreeEnsemble(
        **arrays, roots=np.array([0, 3]), tree_class=np.array([0, 1]), baseline=np.zeros(2),
        classes=("point", "muon"), feature_names=("charge_e",), card={"seed": 1},
    )
    x = np.array([[0.5], [3.0], [np.nan]])
    path = ensemble.save(tmp_path / "p.trees")
    loaded = particles.load_particle_model(path)
    assert loaded.card["seed"] == 1 and loaded.classes == ("point", "muon")
    np.testing.assert_allclose(loaded.predict_proba(x), ensemble.predict_proba(x))
    assert list(loaded.predict_proba(x).argmax(axis=1)) == [0, 1, 0]


def test_depth_inverts_the_simulator_and_grows_with_spread():
    diffusion = particles.Diffusion()
    z = np.array([5.0, 100.0, 300.0, 500.0, 670.0])
    sigma_px = diffusion_sigma_um(z) / diffusion.pixel_size_um
    depth, err = particles.depth_um(sigma_px, 0.02, diffusion)
    np.testing.assert_allclose(depth, z, rtol=1e-9)
    assert (np.diff(depth) > 0).all() and (err > 0).all()
    assert particles.depth_um(2 * diffusion.max_sigma_px)[0] == diffusion.thickness_um
    thin = particles.Diffusion(thickness_um=250.0, pixel_size_um=24.0)
    assert particles.depth_um(sigma_px[1] * 15 / 24, diffusion=thin)[0] == pytest.approx(100.0)


def test_spread_fit_recovers_the_diffusion_of_simulated_points():
    pixel_um = 15.0
    rng = np.random.default_rng(3)
    fits, truths = [], []
    for depth in (50.0, 350.0, 650.0):
        sigma = float(diffusion_sigma_um(depth)) / pixel_um
        image = rng.normal(0, 0.16, (32, 32))
        r = rng.normal(16.3, sigma, 2000)
        c = rng.normal(15.8, sigma, 2000)
        np.add.at(image, (r.astype(int), c.astype(int)), 1.0)
        instances = cluster_instances(np.where(image > 0.5, CLUSTER, 0))
        instances = np.where(instances == np.bincount(instances.ravel())[1:].argmax() + 1, 1, 0)
        fit = particles.point_depths(image, instances, noise_e=0.16, diffusion=particles.Diffusion())
        fits.append(fit.iloc[0])
        truths.append(depth)
    for fit, depth in zip(fits, truths):
        assert abs(fit["depth_um"] - depth) < max(4 * fit["depth_err_um"], 25.0)
    assert fits[0]["sigma_px"] < fits[1]["sigma_px"] < fits[2]["sigma_px"]


def test_serial_cti_widens_only_the_column_spread_and_the_row_depth_ignores_it():
    rng = np.random.default_rng(5)
    depth = 400.0
    sigma = float(diffusion_sigma_um(depth)) / 15.0
    image = rng.normal(0, 0.16, (32, 32))
    r = rng.normal(16.2, sigma, 3000)
    c = np.floor(rng.normal(12.7, sigma, 3000)) + rng.geometric(0.85, 3000) - 1  # 15 % deferred per transfer
    np.add.at(image, (r.astype(int), c.astype(int)), 1.0)
    instances = cluster_instances(np.where(image > 0.5, CLUSTER, 0))
    instances = np.where(instances == np.bincount(instances.ravel())[1:].argmax() + 1, 1, 0)
    row = particles.point_depths(image, instances, noise_e=0.16).iloc[0]
    both = particles.point_depths(image, instances, noise_e=0.16, axis="both").iloc[0]
    assert row["sigma_col_px"] > row["sigma_row_px"] + 0.1
    assert abs(row["depth_um"] - depth) < max(3 * row["depth_err_um"], 20.0)
    assert both["depth_um"] > row["depth_um"] + 20.0
    with pytest.raises(InputError, match="axis"):
        particles.point_depths(image, instances, noise_e=0.16, axis="col")


def test_confusion_counts_and_formats():
    confusion = particles.particle_confusion(["point", "muon", "muon", "none"], ["point", "muon", "electron", "point"])
    assert confusion.loc["muon", "electron"] == 1 and confusion.loc["none", "point"] == 1
    assert particles.accuracy(confusion) == pytest.approx(2 / 3)
    text = particles.format_confusion(confusion)
    assert "| muon | 0 | 1 | 1 |" in text and "0.667" in text
    other = particles.particle_confusion(["point", "fragment"], ["point", "trail"])
    total = particles.sum_confusions([confusion, other])
    assert list(total.index) == [*particles.PARTICLE_TYPES, "fragment", "none"]
    assert total.loc["point", "point"] == 2 and total.loc["fragment", "trail"] == 1 and total.to_numpy().sum() == 6


@pytest.mark.parametrize(
    "call",
    [
        lambda: particles.cluster_features(np.zeros((4, 4)), np.zeros((4, 5), int)),
        lambda: particles.cluster_features(np.zeros((4, 4)), np.zeros((4, 4), float)),
        lambda: particles.cluster_features(np.full((4, 4), np.nan), np.ones((4, 4), int)),
        lambda: particles.cluster_features(np.zeros(4), np.zeros(4, int)),
        lambda: particles.classify(np.zeros((4, 4)), -np.ones((4, 4), int)),
        lambda: particles.depth_um(-1.0),
        lambda: particles.depth_um(np.nan),
        lambda: particles.Diffusion(b_per_um=0.01),
        lambda: particles.particle_confusion(["point"], ["pion"]),
        lambda: particles.particle_confusion(["point", "muon"], ["point"]),
    ],
)
def test_bad_input_is_an_input_error(call):
    with pytest.raises(InputError):
        call()


def test_a_damaged_model_is_an_input_error(tmp_path):
    from safetensors.numpy import load_file, save_file

    arrays = load_file(str(particles.MODEL_FILE))
    arrays["left"] = arrays["left"] + 10**6  # children beyond the last node
    save_file(arrays, str(tmp_path / "damaged.trees"))
    (tmp_path / "damaged.json").write_text(particles.MODEL_FILE.with_suffix(".json").read_text())
    with pytest.raises(InputError, match="damaged"):
        particles.load_particle_model(tmp_path / "damaged.trees")


def test_a_file_that_is_not_a_model_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.trees"
    bad.write_bytes(pickle.dumps({"not": "safetensors"}))
    bad.with_suffix(".json").write_text("{}")
    with pytest.raises(InputError, match="bad.trees"):
        particles.load_particle_model(bad)


def test_empty_instance_map_gives_empty_results():
    image = np.zeros((8, 8))
    instances = np.zeros((8, 8), np.int32)
    assert len(particles.cluster_features(image, instances)) == 0
    types, scores = particles.classify(image, instances, noise_e=0.1)
    assert types.size == 0 and scores.size == 0
    assert len(particles.point_depths(image, instances, noise_e=0.1)) == 0


def test_catalogue_rows_get_types_and_point_depths(held_out_frame):
    from napari_ccdseg.autolabel import label_frame
    from napari_ccdseg.catalogue import cluster_table

    electrons = particles.electrons_from_metadata(held_out_frame.image, held_out_frame.metadata)
    labels = label_frame(held_out_frame.image, "physical")
    table, instances = cluster_table(electrons, labels, frame="sim", hdu=0)
    typed = particles.add_particle_columns(table, electrons, instances, noise_e=0.16)
    types, scores = particles.classify(electrons, instances, noise_e=0.16)
    assert list(typed["particle"]) == list(types) and np.allclose(typed["particle_score"], scores)
    points = typed["particle"] == "point"
    depth = typed.loc[points, "depth_um"]
    assert depth.notna().mean() > 0.9 and depth.dropna().between(0, 675).all()  # NaN: too few pixels to fit
    assert typed.loc[~points, "depth_um"].isna().all() and (typed.loc[points, "depth_err_um"].dropna() >= 0).all()
    with pytest.raises(InputError, match="rows"):
        particles.add_particle_columns(table.iloc[1:], electrons, instances)


def test_evaluate_confusion_of_a_class_map(held_out_frame):
    frame = held_out_frame
    confusion = particles.frame_particle_confusion(frame.image, frame.labels, frame.instances, frame.metadata)
    assert list(confusion.columns) == list(particles.PARTICLE_TYPES)
    assert particles.accuracy(confusion) >= 0.9
    assert confusion.to_numpy().sum() == cluster_instances(frame.labels).max()  # every found cluster once
