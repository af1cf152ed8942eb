import json
import subprocess
import sys

import numpy as np
import pytest

from napari_ccdseg.cli import EXIT_INPUT_ERROR, main
from napari_ccdseg.io import read_label_map, write_frame
from napari_ccdseg.modelfile import save_model
from napari_ccdseg.simulate import SimConfig, simulate_frame
from napari_ccdseg.unet import UNetConfig, build_unet


def test_simulate_label_train_predict_evaluate(tmp_path, capsys):
    data, model = tmp_path / "data", tmp_path / "model.safetensors"
    assert main(["simulate", str(data), "--n", "3", "--size", "64", "64", "--seed", "5"]) == 0
    frames = sorted(data.glob("*.npy"))
    frames = [p for p in frames if not p.name.endswith("_instances.npy")]
    assert len(frames) == 3

    assert main(["label", str(data), "--preset", "physical", "--out", str(tmp_path / "auto")]) == 0
    assert "cluster" in capsys.readouterr().out
    assert len(list((tmp_path / "auto").glob("*_labels.png"))) == 3

    assert main([
        "train", str(data), "--out", str(model), "--epochs", "1", "--steps", "2",
        "--batch-size", "2", "--tile", "32", "--device", "cpu",
    ]) == 0
    assert "training on cpu" in capsys.readouterr().out

    assert main([
        "predict", str(model), str(frames[0]), "--out", str(tmp_path / "pred"), "--probabilities",
        "--precision", "float32",
    ]) == 0
    labels = read_label_map(tmp_path / "pred" / f"{frames[0].stem}_labels.png")
    assert labels.shape == (64, 64)
    probabilities = np.load(tmp_path / "pred" / f"{frames[0].stem}_probabilities.npy")
    np.testing.assert_allclose(probabilities.sum(0), 1, atol=1e-4)
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == sorted(
        [f"{frames[0].stem}_labels.png", f"{frames[0].stem}_probabilities.npy"]
    )

    assert main(["evaluate", str(model), str(data), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert 0 <= report["clusters"]["efficiency"] <= 1
    assert (tmp_path / "report" / "summary.md").exists()


def test_bad_input_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nope.fits"
    assert main(["predict", str(tmp_path / "m.safetensors"), str(missing), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "m.safetensors" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", str(empty), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "empty" in capsys.readouterr().err
    # an unknown precision is refused before the model or any frame is read
    assert main(["predict", "default", str(missing), "--out", str(tmp_path), "--precision", "half"]) == 2
    assert "precision 'half': expected one of auto, float32, bfloat16" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["simulate", "label", "train", "predict", "evaluate", "demo", "models"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "usage: ccdseg" in capsys.readouterr().out


def test_module_runs_as_a_script():
    # One subprocess only: each one pays the torch import again.
    result = subprocess.run(
        [sys.executable, "-m", "napari_ccdseg.cli", "predict", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "model file or bundled model name (see `ccdseg models`), e.g. default" in " ".join(result.stdout.split())


def test_label_refuses_to_overwrite_corrections_unless_asked(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "labels"
    assert main(["simulate", str(data), "--n", "1", "--size", "32", "32"]) == 0
    assert main(["label", str(data), "--out", str(out)]) == 0
    corrected = out / "sim_000_labels.png"
    before = corrected.read_bytes()
    assert main(["label", str(data), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert corrected.read_bytes() == before
    assert main(["label", str(data), "--out", str(out), "--overwrite"]) == 0


def test_two_inputs_with_the_same_name_are_refused(tmp_path, capsys):
    for folder in ("a", "b"):
        assert main(["simulate", str(tmp_path / folder), "--n", "1", "--size", "32", "32"]) == 0
    code = main(["label", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")])
    assert code == 2 and "would both write" in capsys.readouterr().err


def test_ctrl_c_during_training_keeps_the_best_model_and_says_where(tmp_path, capsys, monkeypatch):
    from napari_ccdseg import train as train_module

    data, model = tmp_path / "data", tmp_path / "model.safetensors"
    assert main(["simulate", str(data), "--n", "2", "--size", "32", "32"]) == 0
    real_step, calls = train_module._Run.step, []

    def step_then_ctrl_c(self):
        calls.append(1)
        if len(calls) == 3:  # the first step of epoch 2
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(train_module._Run, "step", step_then_ctrl_c)
    code = main(["train", str(data), "--out", str(model), "--epochs", "5", "--steps", "2",
                 "--batch-size", "2", "--tile", "32", "--device", "cpu"])
    assert code == 130
    out = capsys.readouterr()
    assert f"best checkpoint so far (if any epoch finished) is in {model}" in out.out
    assert "Traceback" not in out.err
    from napari_ccdseg.modelfile import load_model

    assert load_model(model)[1]["history_summary"]["epoch"] == 1


def test_evaluate_against_physical_needs_no_labels(tmp_path, capsys):
    frames = tmp_path / "frames"
    for seed in range(2):  # frames only: the truth the simulator knows is not written
        write_frame(frames / f"f{seed}.npy", simulate_frame(SimConfig(rows=64, cols=64), seed=seed).image)
    model = save_model(tmp_path / "m.safetensors", build_unet(UNetConfig(widths=(4, 8, 16))), {"normalisation": "sigma"})
    out = tmp_path / "agree"
    assert main(["evaluate", str(model), str(frames), "--against", "physical", "--out", str(out), "--device", "cpu"]) == 0
    document = json.loads((out / "agreement.json").read_text())
    rows, total = document["frames"], document["total"]
    assert [row["frame"] for row in rows] == ["f0", "f1"]
    for row in rows:
        assert row["both_model"] + row["only_model"] == row["model"]
        assert row["both_physical"] + row["only_physical"] == row["physical"]
        assert row["both"] <= min(row["both_model"], row["both_physical"])
        distinct = row["both"] + row["only_model"] + row["only_physical"]
        assert row["agreement"] == (row["both"] / distinct if distinct else 1.0)
        assert len(row["only_physical_positions"]) == row["only_physical"]
        assert (out / f"{row['frame']}_agreement.png").read_bytes()[:4] == b"\x89PNG"
    assert rows[0]["physical"] > 0  # the simulated frames hold clusters
    for key in ("model", "physical", "both", "only_model", "only_physical"):
        assert total[key] == sum(row[key] for row in rows)
    table = (out / "agreement.md").read_text()
    assert "| f0 |" in table and "| **total** |" in table
    assert "| **total** |" in capsys.readouterr().out


def test_evaluate_against_physical_refuses_a_preset(tmp_path, capsys):
    code = main(["evaluate", "m.safetensors", str(tmp_path), "--against", "physical", "--preset", "physical", "--out", str(tmp_path)])
    assert code == 2 and "--preset" in capsys.readouterr().err


def test_simulate_a_multi_amplifier_ccd_then_predict_every_extension(tmp_path, capsys):
    data, out = tmp_path / "ccd", tmp_path / "pred"
    argv = ["simulate", str(data), "--n", "1", "--size", "48", "48", "--preset", "damic-m",
            "--format", "fits", "--amplifiers", "3", "--dead", "3"]
    assert main(argv) == 0
    assert "3 amplifier(s) each" in capsys.readouterr().out
    assert sorted(p.name for p in data.glob("*_labels.png")) == [f"sim_000_AMP{k}_labels.png" for k in (1, 2, 3)]
    dead = read_label_map(data / "sim_000_AMP3_labels.png")
    assert (dead == 0).all()
    model = save_model(tmp_path / "m", build_unet(UNetConfig(widths=(4, 8))), {"normalisation": "sigma"})
    assert main(["predict", str(model), str(data / "sim_000.fits"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"sim_000_AMP{k}_labels.png" for k in (1, 2, 3)]


@pytest.mark.parametrize(
    "flags, words",
    [(["--amplifiers", "2", "--dead", "3"], "from 1 to 2, got 3"), (["--dead", "0"], "from 1 to 1, got 0"),
     (["--amplifiers", "0"], "at least 1")],
)
def test_simulate_refuses_amplifiers_that_do_not_exist_in_the_users_numbering(tmp_path, capsys, flags, words):
    assert main(["simulate", str(tmp_path / "x"), *flags]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_on_domain_randomised_frames_alone(tmp_path, capsys):
    model = tmp_path / "r.safetensors"
    argv = ["train", "--randomised", "5", "--out", str(model), "--epochs", "1", "--steps", "1",
            "--batch-size", "2", "--tile", "32", "--device", "cpu"]
    assert main(argv) == 0
    assert "4 training frame(s), 1 validation frame(s)" in capsys.readouterr().out
    assert model.exists()
    assert main(["train", "--out", str(model)]) == 2
    assert "--randomised" in capsys.readouterr().err


def test_label_reads_gzipped_fits(tmp_path, capsys):
    import gzip

    from astropy.io import fits

    frame = simulate_frame(SimConfig(rows=64, cols=64), seed=2).image
    fits.PrimaryHDU(frame).writeto(tmp_path / "run.fits")
    (tmp_path / "run.fits.gz").write_bytes(gzip.compress((tmp_path / "run.fits").read_bytes()))
    assert main(["label", str(tmp_path / "run.fits.gz"), "--out", str(tmp_path / "labels")]) == 0
    assert read_label_map(tmp_path / "labels" / "run_labels.png").shape == (64, 64)


@pytest.mark.parametrize(
    "options, keeps",
    [([], True), (["--preset", "physical"], True), (["--preset", "seed-v1"], False),
     (["--preset", "seed-v1", "--keep-axes"], True), (["--turn-tiles"], False)],
)
def test_tiles_turn_by_default_only_for_images_whose_axes_are_alike(options, keeps):
    """The seed-v1 preset labels the original project's PNGs (hot segments and glow strips both ways):
    training turns their tiles unless told otherwise; CCD frames keep rows and columns apart."""
    from napari_ccdseg.cli import build_parser, train_config

    args = build_parser().parse_args(["train", "data", "--out", "m", *options])
    assert train_config(args).keep_readout_axes is keeps


def test_train_options_become_the_training_config_field_by_field():
    from napari_ccdseg.cli import build_parser
    from napari_ccdseg.errors import InputError
    from napari_ccdseg.train import TrainConfig

    args = build_parser().parse_args([
        "train", "data", "--out", "m", "--config", "seed", "--steps", "3", "--tile", "48", "--lr", "0.01",
        "--no-augment", "--max-minutes", "2", "--class-weighting", "none", "--batch-size", "4", "--seed", "7",
        "--band-augment", "0.5", "--hot-augment", "0", "--turn-tiles",
    ])
    config = TrainConfig.from_options(vars(args))
    assert (config.band_augment, config.hot_augment, config.keep_readout_axes) == (0.5, 0.0, False)
    assert (config.architecture, config.steps_per_epoch, config.tile_size, config.learning_rate) == ("seed", 3, 48, 0.01)
    assert (config.augment, config.max_minutes, config.class_weighting) == (False, 2.0, "none")
    assert (config.batch_size, config.seed, config.epochs) == (4, 7, TrainConfig.epochs)
    defaults = TrainConfig.from_options(vars(build_parser().parse_args(["train", "--out", "m"])))
    assert defaults == TrainConfig()
    with pytest.raises(InputError, match="class weighting"):
        TrainConfig.from_options({"class_weighting": "square", "max_minutes": 0})
    with pytest.raises(InputError, match="hot augment"):
        TrainConfig.from_options({"hot_augment": -0.1})


def test_evaluate_on_simulated_frames_reports_particle_types(tmp_path, capsys):
    """Frames with the simulator's X_meta.json get a particle confusion (true kind × predicted type)."""
    from napari_ccdseg.particles import PARTICLE_TYPES

    data, out = tmp_path / "data", tmp_path / "report"
    assert main(["simulate", str(data), "--n", "3", "--size", "128", "128", "--seed", "2"]) == 0
    metas = sorted(data.glob("*_meta.json"))
    assert len(metas) == 3
    metas[-1].unlink()  # a frame without its record is scored but not typed
    kinds = [c["kind"] for meta in metas[:-1] for c in json.loads(meta.read_text())["clusters"]]
    assert main(["evaluate", "default", str(data), "--out", str(out), "--device", "cpu"]) == 0
    particles = json.loads((out / "report.json").read_text())["particles"]
    assert particles["frames"] == 2 and particles["predicted"] == list(PARTICLE_TYPES)
    assert particles["true_kinds"][: len(PARTICLE_TYPES)] == list(PARTICLE_TYPES)
    counts = dict(zip(particles["true_kinds"], particles["counts"]))
    assert sum(map(sum, counts.values())) > 0
    for kind in PARTICLE_TYPES:  # each simulated event is the main part of one found cluster at most
        assert sum(counts[kind]) <= kinds.count(kind)
    assert sum(counts["point"]) >= 0.5 * kinds.count("point")  # the default model finds most points
    assert 0 <= particles["accuracy"] <= 1
    summary = (out / "summary.md").read_text()
    assert "## Particle types" in summary and "2 simulated frame(s)" in summary and "| point |" in summary


def test_predict_takes_the_calibration_of_the_very_frame_only(tmp_path, capsys):
    import dataclasses

    from napari_ccdseg.simulate import SIM_PRESETS

    sim = simulate_frame(dataclasses.replace(SIM_PRESETS["damic-m"], rows=160, cols=320), seed=6)
    frame = tmp_path / "run.npy"
    np.save(frame, sim.image)
    assert main(["calibrate", str(frame), "--out", str(tmp_path / "cal")]) == 0
    calibration = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert calibration["amplifiers"][0]["method"] == "peaks"

    def predict(folder: str, *extra: str):
        assert main(["predict", "default", str(frame), "--out", str(tmp_path / folder), *extra]) == 0
        return read_label_map(tmp_path / folder / "run_labels.png")

    def calibration_file(name: str, **changes) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"amplifiers": [{**calibration["amplifiers"][0], **changes}]}))
        return str(path)

    own = predict("own")
    np.testing.assert_array_equal(predict("same", "--calibration", calibration_file("same")), own)
    doubled = calibration["amplifiers"][0]["gain_adu_per_e"] * 2  # a wrong gain: taken, so the map changes
    assert not np.array_equal(predict("wrong", "--calibration", calibration_file("wrong", gain_adu_per_e=doubled)), own)
    other = calibration_file("other", frame="another_run.npy", gain_adu_per_e=doubled)  # another frame's: not taken
    np.testing.assert_array_equal(predict("other", "--calibration", other), own)
    rows = calibration_file("rows", row_pedestal_adu=calibration["amplifiers"][0]["row_pedestal_adu"][:100])
    assert main(["predict", "default", str(frame), "--out", str(tmp_path / "rows"), "--calibration", rows]) == EXIT_INPUT_ERROR
    assert "run.npy: calibration has 100 row pedestals, the image has shape (176, 392)" in capsys.readouterr().err
    args = ["predict", "default", str(frame), "--out", str(tmp_path / "d"), "--calibration", rows, "--scheduler", "local"]
    assert main(args) == EXIT_INPUT_ERROR
    assert "--calibration is not passed to dask workers" in capsys.readouterr().err
