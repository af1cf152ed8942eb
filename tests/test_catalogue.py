"""The cluster catalogue against simulated truth: charge, centroid, instance map, files, CLI."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from napari_ccdseg.catalogue import (
    CATALOGUE_COLUMNS,
    ClassMaps,
    cluster_table,
    read_catalogue,
    write_catalogue,
    write_instances,
    write_root,
)
from napari_ccdseg.catalogue_report import energy_bin_edges, garwood_interval, plot_spectrum
from napari_ccdseg.classes import CLUSTER, HOT_PIXEL
from napari_ccdseg.errors import InputError
from napari_ccdseg.io import Frame
from napari_ccdseg.simulate import SimConfig, simulate_frame

GAIN, PEDESTAL, DARK = 4.0, 500.0, 0.02


def _quiet_config(**changes) -> SimConfig:
    """Electron-resolving ADU frames with point clusters only: no tracks, glow or hot defects."""
    settings = dict(
        rows=320, cols=320, units="adu", gain_adu_per_e=GAIN, pedestal_adu=PEDESTAL, read_noise_e=0.15,
        dark_current_e=DARK, cluster_rate=120.0, muon_rate=0.0, electron_track_rate=0.0, amp_glow_e=0.0,
        glow_band_probability=0.0, hot_pixels=(0.0, 0.0), hot_segments=(0.0, 0.0), hot_columns=(0.0, 0.0),
        energy_min_kev=0.3, energy_max_kev=10.0,
    )
    settings.update(changes)
    return SimConfig(**settings)


@pytest.fixture(scope="module")
def simulated():
    return simulate_frame(_quiet_config(), seed=3)


def _isolated(sim, instances: np.ndarray) -> list[tuple[dict, int]]:
    """(true cluster, catalogue id) where the catalogue cluster is exactly the true cluster's pixels."""
    pairs = []
    for cluster in sim.metadata["clusters"]:
        truth = sim.instances == cluster["id"]
        ids = np.unique(instances[truth])
        if ids.size == 1 and np.array_equal(instances == ids[0], truth):
            pairs.append((cluster, int(ids[0])))
    return pairs


def test_charge_and_centroid_of_isolated_clusters_match_the_simulation(simulated):
    electrons = (simulated.image - PEDESTAL) / GAIN
    table, instances = cluster_table(electrons, simulated.labels, frame="sim.npy", hdu=0)
    pairs = _isolated(simulated, instances)
    assert len(pairs) >= 20, "the frame should hold many isolated clusters"
    rows = table.set_index("cluster_id")
    for cluster, cid in pairs:
        row = rows.loc[cid]
        # the cluster's pixels also hold dark current (Poisson λ per pixel) and read noise
        expected = cluster["electrons"] + DARK * row.npix
        spread = np.sqrt(row.npix * (0.15**2 + DARK))
        assert abs(row.charge_e - expected) <= 1 + 4 * spread, cluster
        assert row.energy_kev == pytest.approx(row.charge_e * 3.75e-3)
        if cluster["electrons"] >= 200 and 3 < cluster["col"] < 316 and 3 < cluster["row"] < 316:
            assert abs(row.x - cluster["col"]) < 0.3 and abs(row.y - cluster["row"]) < 0.3, cluster


def test_instance_map_and_table_agree(simulated):
    electrons = (simulated.image - PEDESTAL) / GAIN
    table, instances = cluster_table(electrons, simulated.labels, frame="sim.npy", hdu=2, ev_per_e=3.6)
    assert instances.dtype == np.uint32
    assert list(table.columns) == list(CATALOGUE_COLUMNS)
    assert table.cluster_id.tolist() == list(range(1, instances.max() + 1))
    assert (instances > 0).sum() == (simulated.labels == CLUSTER).sum()
    np.testing.assert_array_equal(table.npix, np.bincount(instances.ravel())[1:])
    assert (table.hdu == 2).all() and (table.frame == "sim.npy").all()
    assert (table.particle == "").all() and table.particle_score.isna().all()
    np.testing.assert_allclose(table.energy_kev, table.charge_e * 3.6e-3)
    for row in table.itertuples():
        rows, cols = np.nonzero(instances == row.cluster_id)
        assert (row.xmin, row.xmax, row.ymin, row.ymax) == (cols.min(), cols.max(), rows.min(), rows.max())
        assert row.charge_e == pytest.approx(electrons[rows, cols].sum(dtype=np.float64), rel=1e-6)
        assert row.qmax_e == pytest.approx(electrons[rows, cols].max())
        assert electrons[row.qmax_y, row.qmax_x] == pytest.approx(row.qmax_e)
        assert row.n_cols * row.n_rows * row.fill == pytest.approx(row.npix)
        assert row.xmin <= row.x <= row.xmax and row.ymin <= row.y <= row.ymax
    distances = np.hypot(table.x.to_numpy()[:, None] - table.x.to_numpy(), table.y.to_numpy()[:, None] - table.y.to_numpy())
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_allclose(table.nearest_px, distances.min(axis=1))


def test_weighted_moments_and_shape_by_hand():
    electrons = np.zeros((10, 12), np.float32)
    labels = np.zeros((10, 12), np.uint8)
    labels[1:3, 1:4] = CLUSTER  # a 2×3 block, charges chosen to give exact moments
    electrons[1:3, 1:4] = [[1, 2, 1], [0, 5, 1]]
    for i in range(5):  # a diagonal line of equal charges: touches by corners only, one cluster
        labels[4 + i, 5 + i] = CLUSTER
        electrons[4 + i, 5 + i] = 2.0
    labels[0, 11] = labels[1, 11] = CLUSTER  # a negative pixel adds charge but no weight
    electrons[0, 11], electrons[1, 11] = 3.0, -0.5
    table, _ = cluster_table(electrons, labels, frame="hand", hdu=0, noise_e=0.2)
    block, corner, line = (table[table.xmin == x].iloc[0] for x in (1, 11, 5))
    assert block.charge_e == pytest.approx(10.0) and block.npix == 6
    assert block.x == pytest.approx(2.1) and block.y == pytest.approx(1.6)
    assert block.sigma_x == pytest.approx(np.sqrt(0.29)) and block.sigma_y == pytest.approx(np.sqrt(0.24))
    assert block.charge_err_e == pytest.approx(0.2 * np.sqrt(6))
    assert corner.charge_e == pytest.approx(2.5) and corner.y == 0.0 and corner.sigma_y == 0.0
    assert line.npix == 5 and line.n_cols == line.n_rows == 5 and line.fill == pytest.approx(0.2)
    assert line.angle_deg == pytest.approx(45.0)
    assert line.std_trans == pytest.approx(0.0, abs=1e-9)
    assert line.std_long == pytest.approx(np.sqrt(2 * 2.0))  # positions ±2, ±1, 0 along the diagonal


def test_each_rows_dark_current_is_taken_off_the_charge():
    electrons = np.zeros((6, 8), np.float32)
    labels = np.zeros((6, 8), np.uint8)
    labels[1:3, 2:5] = CLUSTER  # 3 pixels in row 1 (λ 0.5) and 3 in row 2 (λ 1.5)
    electrons[1:3, 2:5] = [[2.5, 10.5, 3.5], [1.5, 4.5, 2.5]]
    dark = np.array([0.0, 0.5, 1.5, 0.0, 0.0, 0.0])
    table, _ = cluster_table(electrons, labels, frame="ramp", hdu=0, noise_e=0.2, dark_e=dark)
    row = table.iloc[0]
    assert row.dark_e == pytest.approx(6.0) and row.charge_e == pytest.approx(25.0 - 6.0)
    assert row.energy_kev == pytest.approx(19.0 * 3.75 / 1000)
    assert row.charge_err_e == pytest.approx(np.sqrt(0.2**2 * 6 + 6.0))
    with pytest.raises(InputError, match="ramp: expected one dark current per row"):
        cluster_table(electrons, labels, frame="ramp", hdu=0, dark_e=dark[:4])
    with pytest.raises(InputError, match="ramp: the dark current per row holds NaN"):
        cluster_table(electrons, labels, frame="ramp", hdu=0, dark_e=np.where(dark > 1, np.nan, dark))


def test_faint_clusters_in_heavy_dark_current_keep_their_charge():
    """damic-m: 0.3–1.5 e⁻/px along the rows; uncorrected, a 10–100 e⁻ cluster read ~20 % high."""
    from napari_ccdseg.catalogue import catalogue_frame
    from napari_ccdseg.simulate import SIM_PRESETS

    sim = simulate_frame(SIM_PRESETS["damic-m"], 3)
    result = catalogue_frame(Frame(sim.image, "damic"), sim.labels)
    rows = result.table.set_index("cluster_id")
    ratios = [rows.loc[cid].charge_e / c["electrons"] - 1 for c, cid in _isolated(sim, result.instances)
              if 10 <= c["electrons"] < 100]
    assert len(ratios) >= 10 and abs(np.median(ratios)) < 0.05
    assert (rows.dark_e > 0.2 * rows.npix).all()


def test_no_cluster_pixel_is_a_named_error_unless_empty_is_allowed():
    labels = np.full((16, 16), HOT_PIXEL, np.uint8)
    with pytest.raises(InputError, match=r"run7\.fits \(HDU 3\): the class map has no cluster pixel"):
        cluster_table(np.zeros((16, 16)), labels, frame="run7.fits", hdu=3)
    table, instances = cluster_table(np.zeros((16, 16)), labels, frame="run7.fits", hdu=3, allow_empty=True)
    assert len(table) == 0 and list(table.columns) == list(CATALOGUE_COLUMNS) and not instances.any()


def test_mismatched_or_bad_inputs_name_the_frame():
    labels = np.zeros((8, 8), np.uint8)
    labels[2, 2] = CLUSTER
    with pytest.raises(InputError, match=r"run1\.fits: the class map is 8×8 but the image is 8×9"):
        cluster_table(np.zeros((8, 9)), labels, frame="run1.fits", hdu=0)
    with pytest.raises(InputError, match="run1.fits: NaN"):
        cluster_table(np.full((8, 8), np.nan), labels, frame="run1.fits", hdu=0)
    with pytest.raises(InputError, match="run1.fits: the energy per electron-hole pair"):
        cluster_table(np.zeros((8, 8)), labels, frame="run1.fits", hdu=0, ev_per_e=0.0)


def test_catalogue_files_round_trip(tmp_path, simulated):
    table, instances = cluster_table((simulated.image - PEDESTAL) / GAIN, simulated.labels, frame="sim.npy", hdu=0)
    table.loc[0, "particle"], table.loc[0, "particle_score"] = "point", 0.9
    csv_path, parquet_path = write_catalogue(tmp_path, table)
    for path in (csv_path, parquet_path):
        back = read_catalogue(path)
        pd.testing.assert_frame_equal(back, table, check_dtype=False)
    tif = write_instances(tmp_path / "sim_clusters.tif", instances)
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(tif), instances)
    uproot = pytest.importorskip("uproot")
    root_path = write_root(tmp_path / "clusters.root", table)
    tree = uproot.open(root_path)["clustersRec"]
    branches = tree.arrays(library="np")
    np.testing.assert_allclose(branches["energy_kev"], table.energy_kev)
    assert branches["frame"][0] == "sim.npy" and branches["particle"][0] == "point"


def test_csv_round_trip_keeps_float_columns_with_gaps_float(tmp_path, simulated):
    table, _ = cluster_table((simulated.image - PEDESTAL) / GAIN, simulated.labels, frame="NA", hdu=0)
    assert len(table) >= 3
    table["depth_um"] = np.nan  # what add_particle_columns gives clusters that are not points
    table["depth_err_um"] = np.nan
    table.loc[1, ["particle", "particle_score", "depth_um", "depth_err_um"]] = ["point", 0.8, 312.5, 40.0]
    back = read_catalogue(write_catalogue(tmp_path, table)[0])
    for name in ("particle_score", "depth_um", "depth_err_um", "nearest_px", "charge_e"):
        assert back[name].dtype == np.float64, name
    assert back["depth_um"].isna().sum() == len(table) - 1 and back.loc[1, "depth_um"] == 312.5
    assert (back.frame == "NA").all() and list(back.particle[:2]) == ["", "point"]
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    empty = read_catalogue(write_catalogue(tmp_path / "none", table.iloc[:0])[0])
    assert empty.empty and empty["depth_um"].dtype == np.float64 and empty["npix"].dtype == np.int64


def test_root_without_uproot_says_how_to_install(tmp_path, monkeypatch, simulated):
    monkeypatch.setitem(sys.modules, "uproot", None)
    with pytest.raises(InputError, match=r"pip install napari-ccdseg\[root\]"):
        write_root(tmp_path / "clusters.root", pd.DataFrame({"a": [1.0]}))


def test_read_catalogue_names_a_file_that_is_not_one(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="other.csv: not a cluster catalogue, missing column"):
        read_catalogue(path)


def test_labels_folder_missing_a_frame_names_it(tmp_path):
    with pytest.raises(InputError, match="no such labels folder"):
        ClassMaps(labels_dir=tmp_path / "absent")
    maps = ClassMaps(labels_dir=tmp_path)
    frame = Frame(np.zeros((8, 8), np.float32), "run2[AMP2]", source=tmp_path / "run2.fits", hdu=2, extname="AMP2")
    with pytest.raises(InputError, match=r"run2\[AMP2\]: no label map run2_AMP2_labels"):
        maps(frame, "run2_AMP2")
    with pytest.raises(InputError, match="give one source of class maps"):
        ClassMaps(preset="physical", labels_dir=tmp_path)


def test_garwood_intervals_cover_small_counts():
    low, high = garwood_interval(np.array([0, 1, 100]))
    assert low[0] == 0 and high[0] == pytest.approx(1.841, abs=1e-3)
    assert (low[1], high[1]) == pytest.approx((0.173, 3.300), abs=1e-3)
    assert (low[2], high[2]) == pytest.approx((100 - 10, 100 + 10 + 1), abs=0.1)  # ≈ N ± √N at large N


def test_spectrum_bins_and_figure_per_particle_type(tmp_path):
    edges = energy_bin_edges(np.array([-1.0, 0.02, 7.0]))
    assert edges[0] <= 0.02 and edges[-1] >= 7.0 and np.allclose(np.diff(np.log10(edges)), 1 / 8)
    table = pd.DataFrame({"energy_kev": [0.5, 1.0, 5.9, 5.9, -0.1], "particle": ["point", "point", "muon", "", ""]})
    path = plot_spectrum(table, tmp_path / "spectrum.png")
    assert path.stat().st_size > 10_000


# ---------------------------------------------------------------- end to end: calibration + CLI


@pytest.fixture(scope="module")
def two_amplifier_fits(tmp_path_factory):
    """One 2-amplifier electron-resolving FITS file with its truth maps and per-amplifier metadata."""
    import json

    from napari_ccdseg.simulate import AmplifierLayout, simulate_dataset

    folder = tmp_path_factory.mktemp("two_amps")
    config = _quiet_config(rows=200, cols=240, cluster_rate=150.0)
    (path,) = simulate_dataset(folder, 1, config, seed=11, fmt="fits", layout=AmplifierLayout(amplifiers=2))
    metas = [json.loads((folder / f"sim_000_AMP{k}_meta.json").read_text()) for k in (1, 2)]
    return path, metas


def test_catalogue_frame_calibrates_and_measures_charge(two_amplifier_fits):
    from napari_ccdseg.catalogue import catalogue_frame
    from napari_ccdseg.io import read_frames

    path, metas = two_amplifier_fits
    frame = read_frames(path)[0]
    truth = simulate_frame(SimConfig.from_dict(metas[0]["config"]), metas[0]["seed"])
    result = catalogue_frame(frame, truth.labels)
    assert result.calibration.method == "peaks"
    assert result.calibration.gain_adu_per_e == pytest.approx(metas[0]["config"]["gain_adu_per_e"], rel=0.01)
    assert (result.table.frame == path.name).all() and (result.table.hdu == frame.hdu).all()
    assert result.calibration.dark_current_e_per_px == pytest.approx(DARK, rel=0.5)
    rows = result.table.set_index("cluster_id")
    pairs = _isolated(truth, result.instances)
    assert len(pairs) >= 10
    for cluster, cid in pairs:
        row = rows.loc[cid]
        spread = np.sqrt(row.npix * (0.15**2 + DARK))
        assert row.charge_err_e == pytest.approx(spread, rel=0.2)  # read noise and the dark current's spread
        rows_of_cluster = np.nonzero(result.instances == cid)[0]  # what the pixels' dark current adds...
        assert row.dark_e == pytest.approx(result.calibration.row_dark_e()[rows_of_cluster].sum())
        tolerance = 1 + 4 * spread + 0.01 * cluster["electrons"]  # 1 % for the fitted gain
        assert abs(row.charge_e - cluster["electrons"]) <= tolerance, cluster  # ...taken off the charge


def test_unresolved_frame_without_gain_names_the_frame():
    from napari_ccdseg.catalogue import catalogue_frame

    sim = simulate_frame(_quiet_config(rows=64, cols=64, read_noise_e=2.0), seed=2)
    frame = Frame(sim.image, "noisy", source=None)
    with pytest.raises(InputError, match="noisy"):
        catalogue_frame(frame, sim.labels)
    result = catalogue_frame(frame, sim.labels, gain=GAIN)
    assert result.calibration.method == "given" and len(result.table) > 0


def _read_instances(folder, stem):
    import tifffile

    return tifffile.imread(folder / f"{stem}_clusters.tif")


def test_cli_catalogue_with_truth_labels_and_root(tmp_path, two_amplifier_fits, capsys):
    import json

    from napari_ccdseg.cli import main

    path, metas = two_amplifier_fits
    out = tmp_path / "cat"
    assert main(["catalogue", str(path), "--labels", str(path.parent), "--out", str(out), "--root"]) == 0
    table = read_catalogue(out / "clusters.csv")
    assert sorted(table.hdu.unique()) == [1, 2] and (table.frame == path.name).all()
    for hdu, stem, meta in zip((1, 2), ("sim_000_AMP1", "sim_000_AMP2"), metas):
        instances = _read_instances(out, stem)
        rows = table[table.hdu == hdu]
        assert instances.dtype == np.uint32 and instances.max() == len(rows)
        np.testing.assert_array_equal(rows.npix, np.bincount(instances.ravel())[1:])
        truth_total = sum(c["electrons"] for c in meta["clusters"])
        assert rows.charge_e.sum() == pytest.approx(truth_total, rel=0.03)
    calibration = json.loads((out / "calibration.json").read_text())["amplifiers"]
    assert [(a["frame"], a["hdu"], a["extname"]) for a in calibration] == [(path.name, 1, "AMP1"), (path.name, 2, "AMP2")]
    summary = (out / "summary.md").read_text()
    assert f"| {path.name} | 1 | AMP1 |" in summary and "label maps in" in summary
    assert (out / "spectrum.png").stat().st_size > 10_000
    pd.testing.assert_frame_equal(read_catalogue(out / "clusters.parquet"), table, check_dtype=False)
    uproot = pytest.importorskip("uproot")
    tree = uproot.open(out / "clusters.root")["clustersRec"]
    assert tree.num_entries == len(table)
    np.testing.assert_allclose(tree["charge_e"].array(library="np"), table.charge_e)


def test_cli_catalogue_names_particle_types_and_point_depths(tmp_path, two_amplifier_fits):
    """catalogue_frame types every cluster, so the CLI's table has them (the quiet frames hold points only)."""
    from napari_ccdseg.cli import main
    from napari_ccdseg.particles import PARTICLE_TYPES

    path, _ = two_amplifier_fits
    out = tmp_path / "typed"
    assert main(["catalogue", str(path), "--labels", str(path.parent), "--out", str(out)]) == 0
    table = read_catalogue(out / "clusters.csv")
    assert table.particle.isin(PARTICLE_TYPES).all()
    assert ((table.particle_score > 0) & (table.particle_score <= 1)).all()
    points = table.particle == "point"
    assert points.mean() > 0.7
    assert table.depth_um[points].notna().mean() > 0.5 and table.depth_um[~points].isna().all()


def test_cli_catalogue_with_the_physical_preset(tmp_path, two_amplifier_fits):
    from napari_ccdseg.cli import main

    path, metas = two_amplifier_fits
    out = tmp_path / "physical"
    assert main(["catalogue", str(path), "--preset", "physical", "--out", str(out)]) == 0
    table = read_catalogue(out / "clusters.parquet")
    for hdu, stem, meta in zip((1, 2), ("sim_000_AMP1", "sim_000_AMP2"), metas):
        rows = table[table.hdu == hdu]
        assert len(rows) >= 0.5 * len(meta["clusters"])
        assert _read_instances(out, stem).max() == len(rows)
    assert "auto-label preset physical" in (out / "summary.md").read_text()


def test_cli_catalogue_bad_inputs_are_one_line_errors(tmp_path, two_amplifier_fits, capsys):
    from napari_ccdseg.cli import main

    path, _ = two_amplifier_fits
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["catalogue", str(path), "--labels", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "sim_000[AMP1]: no label map sim_000_AMP1_labels" in err and "Traceback" not in err
    from napari_ccdseg.io import write_label_map

    no_clusters = tmp_path / "no_clusters"
    no_clusters.mkdir()
    for stem in ("sim_000_AMP1", "sim_000_AMP2"):
        write_label_map(no_clusters / f"{stem}_labels.png", np.zeros((200, 240), np.uint8))
    assert main(["catalogue", str(path), "--labels", str(no_clusters), "--out", str(tmp_path / "o")]) == 2
    assert "no cluster pixel in the class map of any frame (sim_000_AMP1, sim_000_AMP2)" in capsys.readouterr().err
    noisy = tmp_path / "noisy.npy"
    np.save(noisy, simulate_frame(_quiet_config(rows=64, cols=64, read_noise_e=2.0), seed=2).image)
    assert main(["catalogue", str(noisy), "--preset", "physical", "--out", str(tmp_path / "o")]) == 2
    assert "noisy.npy" in capsys.readouterr().err


def test_cli_catalogue_takes_the_gain_of_a_calibration_file_for_unresolved_frames(tmp_path, capsys):
    import json

    from napari_ccdseg.cli import main

    resolving, noisy = simulate_frame(_quiet_config(rows=128, cols=128), seed=4), simulate_frame(
        _quiet_config(rows=128, cols=128, read_noise_e=2.0), seed=5
    )
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "dark.npy", resolving.image)
    np.save(data / "run.npy", noisy.image)
    from napari_ccdseg.io import write_label_map

    write_label_map(data / "dark_labels.png", resolving.labels)
    write_label_map(data / "run_labels.png", noisy.labels)
    assert main(["catalogue", str(data / "dark.npy"), "--labels", str(data), "--out", str(tmp_path / "dark")]) == 0
    first = json.loads((tmp_path / "dark" / "calibration.json").read_text())["amplifiers"][0]
    assert first["method"] == "peaks"
    calibration = str(tmp_path / "dark" / "calibration.json")
    args = ["catalogue", str(data / "run.npy"), "--labels", str(data), "--out", str(tmp_path / "run")]
    assert main(args + ["--calibration", calibration]) == 0
    second = json.loads((tmp_path / "run" / "calibration.json").read_text())["amplifiers"][0]
    assert second["method"] == "file" and second["gain_adu_per_e"] == first["gain_adu_per_e"]
    assert "| file |" in (tmp_path / "run" / "summary.md").read_text()
    with pytest.raises(SystemExit):  # one source of gain, not two
        main(args + ["--calibration", calibration, "--gain", "4"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_instance_maps_written_beside_frames_are_not_read_as_frames(tmp_path, simulated):
    from napari_ccdseg.io import find_dataset

    np.save(tmp_path / "run.npy", simulated.image)
    _, instances = cluster_table((simulated.image - PEDESTAL) / GAIN, simulated.labels, frame="run.npy", hdu=0)
    write_instances(tmp_path / "run_clusters.tif", instances)
    assert [frame.name for frame, _ in find_dataset(tmp_path)] == ["run.npy"]
