"""Batch prediction on a 2-process dask LocalCluster: same outputs as one process, and resumable."""

import csv
import dataclasses

import numpy as np
import pytest

pytest.importorskip("distributed")

from napari_ccdseg.batch import (  # noqa: E402
    FAILED, PREDICTED, SKIPPED, _cached_model, connect, predict_batch,
)
from napari_ccdseg.cli import main  # noqa: E402
from napari_ccdseg.io import output_stem  # noqa: E402
from napari_ccdseg.errors import InputError  # noqa: E402
from napari_ccdseg.io import read_label_map  # noqa: E402
from napari_ccdseg.metrics import cluster_instances  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """One cluster for the module: starting worker processes (torch imports) is the slow part."""
    with connect("local:2") as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four 64 x 64 simulated frames, a two-HDU FITS file and a freshly initialised model."""
    import torch
    from astropy.io import fits

    from napari_ccdseg.modelfile import save_model
    from napari_ccdseg.simulate import SIM_PRESETS, simulate_dataset
    from napari_ccdseg.unet import build_unet

    root = tmp_path_factory.mktemp("batch")
    config = dataclasses.replace(SIM_PRESETS["conventional"], rows=64, cols=64, cluster_rate=2000.0)
    frames = simulate_dataset(root / "frames", 4, config, seed=3)
    hdus = [fits.PrimaryHDU()] + [
        fits.ImageHDU(np.load(path), name=f"AMP{i}") for i, path in enumerate(frames[:2], 1)
    ]
    fits.HDUList(hdus).writeto(root / "frames" / "multi.fits")
    torch.manual_seed(0)
    model = save_model(root / "model.safetensors", build_unet("small"), {"normalisation": "sigma"})
    return root / "frames", model


def _summary(out):
    with open(out / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_cluster_matches_single_process(client, data, tmp_path, capsys):
    frames, model = data
    single, batch = tmp_path / "single", tmp_path / "batch"
    common = ["predict", str(model), str(frames), "--probabilities", "--device", "cpu"]
    assert main([*common, "--out", str(single)]) == 0
    # Through the CLI and the tcp:// path, on the module's cluster.
    assert main([*common, "--out", str(batch), "--scheduler", client.scheduler.address]) == 0
    assert "wrote 6 prediction(s)" in capsys.readouterr().out

    outputs = sorted(p.name for p in single.iterdir())
    assert len(outputs) == 12 and "multi_AMP1_labels.png" in outputs
    assert sorted(p.name for p in batch.iterdir()) == sorted(outputs + ["summary.csv"])
    for name in outputs:  # workers may run other thread counts: float sums differ in the last bits
        if name.endswith(".png"):
            np.testing.assert_array_equal(read_label_map(batch / name), read_label_map(single / name))
        else:
            np.testing.assert_allclose(np.load(batch / name), np.load(single / name), rtol=0, atol=1e-5)

    rows = _summary(batch)
    assert len(rows) == 6 and {row["status"] for row in rows} == {PREDICTED}
    for row in rows:
        stem = output_stem(row["file"], row["frame"], 2 if "[" in row["frame"] else 1)
        labels = read_label_map(single / f"{stem}_labels.png")
        assert int(row["clusters"]) == cluster_instances(labels).max()
        assert int(row["pixels_cluster"]) == (labels == 3).sum()
        assert sum(int(row[k]) for k in row if k.startswith("pixels_")) == labels.size
    # Six frames in five tasks, but each worker loaded the model at most once.
    loads = client.run(lambda: _cached_model.cache_info().misses)
    assert 1 <= sum(loads.values()) <= 2


def test_rerun_predicts_only_missing_outputs(client, data, tmp_path):
    frames, model = data
    out = tmp_path / "out"
    first = predict_batch(client, model, [frames], out, device="cpu")
    assert first.count(PREDICTED) == 6
    kept = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*_labels.png")}
    lost = out / "sim_002_labels.png"
    lost.unlink()  # as if the run had been killed before this frame

    second = predict_batch(client, model, [frames], out, device="cpu")
    statuses = {row["frame"]: row["status"] for row in _summary(out)}
    assert statuses.pop("sim_002") == PREDICTED and set(statuses.values()) == {SKIPPED}
    assert second.count(PREDICTED) == 1 and second.count(SKIPPED) == 5
    for name, (mtime, content) in kept.items():
        assert (out / name).read_bytes() == content
        if name != lost.name:
            assert (out / name).stat().st_mtime_ns == mtime


def test_bad_file_is_reported_and_the_rest_done(client, data, tmp_path):
    frames, model = data
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"not an array")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="1 of 2 file"):
        predict_batch(client, model, [frames / "sim_000.npy", broken], out, device="cpu")
    rows = {row["file"]: row for row in _summary(out)}
    assert rows[str(broken)]["status"] == FAILED and "broken.npy" in rows[str(broken)]["error"]
    assert (out / "sim_000_labels.png").exists()


@pytest.mark.parametrize("spec", ["local:0", "local:x", "slurm"])
def test_bad_scheduler_is_input_error(spec):
    with pytest.raises(InputError, match="scheduler"):
        with connect(spec):
            pass


def test_scheduler_without_dask_is_one_line_error(data, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.delitem(sys.modules, "napari_ccdseg.batch")
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # as if not installed
    frames, model = data
    assert main(["predict", str(model), str(frames), "--out", str(tmp_path), "--scheduler", "local:2"]) == 2
    assert "pip install 'napari-ccdseg[distributed]'" in capsys.readouterr().err
