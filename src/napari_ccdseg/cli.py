"""The ``ccdseg`` command line: simulate, label, train, predict, evaluate, models and the demo.

Every subcommand is a thin layer over the core modules, with tqdm progress on long work and a
one-line error (exit code 2) instead of a traceback on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from tqdm import tqdm

from . import __version__
from .console import TrainProgressPrinter
from .errors import InputError

if TYPE_CHECKING:
    from .ddp import DataParallel
    from .io import Frame
    from .train import TrainConfig

EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130
_MODEL_HELP = "model file or bundled model name (see `ccdseg models`), e.g. default"


def _add_class_map_source(parser: argparse.ArgumentParser) -> None:
    """--model | --preset physical | --labels DIR: where ClassMaps takes each frame's class map."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="class maps from this model (default: the bundled default); " + _MODEL_HELP)
    source.add_argument("--preset", choices=["physical"], help="class maps from the physical auto-label preset")
    source.add_argument("--labels", metavar="DIR", help="class maps X_labels.<png|tif|tiff|npy> from this folder")


def _add_gain_fallback(parser: argparse.ArgumentParser) -> None:
    """--gain | --calibration FILE: calibrate_frame's fallbacks for frames whose peaks are not resolved."""
    gain = parser.add_mutually_exclusive_group()
    gain.add_argument("--gain", type=float, help="ADU per electron, for frames whose electron peaks are not resolved")
    gain.add_argument("--calibration", metavar="FILE", help="calibration.json for frames whose peaks are not resolved")


# ---------------------------------------------------------------- subcommands


def _claim_stem(stem: str, frame_path: Path, target: Path, claimed: dict[str, Path]) -> None:
    """Refuse two frames whose outputs would have the same name, so neither is lost."""
    if stem in claimed:
        raise InputError(f"{frame_path} and {claimed[stem]} would both write {target}; give them separate --out folders")
    claimed[stem] = frame_path


def _claim_output(stem: str, frame_path: Path, out: Path, claimed: dict[str, Path], overwrite: bool) -> None:
    """Refuse to replace a label map that may hold a user's corrections, or to write one twice."""
    target = out / f"{stem}_labels.png"
    if stem not in claimed and target.exists() and not overwrite:
        raise InputError(f"{target} already exists (it may hold corrections); add --overwrite to replace it")
    _claim_stem(stem, frame_path, target, claimed)


def _each_frame(inputs: Sequence[str], desc: str) -> Iterator[tuple[Path, Frame, str]]:
    """(file, frame, output stem) for every frame of every input file or folder, with a tqdm bar."""
    from .dataset import frame_files
    from .io import output_stem, read_frames

    for frame_path, _ in tqdm(frame_files(inputs), desc=desc, unit="file", disable=None):  # no bar in a log
        frames = read_frames(frame_path)
        for frame in frames:
            yield frame_path, frame, output_stem(frame_path, frame.name, len(frames))


def cmd_simulate(args: argparse.Namespace) -> None:
    from .simulate import SIM_PRESETS, AmplifierLayout, simulate_dataset

    config = dataclasses.replace(SIM_PRESETS[args.preset])
    if args.size:
        config.rows, config.cols = args.size
    if args.noise is not None:
        config.read_noise_e = args.noise
    if args.units:
        config.units = args.units
    if args.amplifiers < 1:
        raise InputError(f"--amplifiers must be at least 1, got {args.amplifiers}")
    if any(not 1 <= d <= args.amplifiers for d in args.dead):
        raise InputError(f"--dead takes amplifier numbers from 1 to {args.amplifiers}, got {' '.join(map(str, args.dead))}")
    layout = None
    if args.amplifiers > 1 or args.dead:
        layout = AmplifierLayout(amplifiers=args.amplifiers, dead=tuple(d - 1 for d in args.dead))
    paths = simulate_dataset(args.out_dir, args.n, config, seed=args.seed, fmt=args.format, layout=layout)
    amps = f", {args.amplifiers} amplifier(s) each" if layout else ""
    print(f"wrote {len(paths)} simulated frame file(s){amps} with truth labels to {args.out_dir}")


def cmd_label(args: argparse.Namespace) -> None:
    from .autolabel import label_frame
    from .classes import class_stats
    from .io import write_label_map

    out = Path(args.out)
    maps, claimed = [], {}
    for frame_path, frame, stem in _each_frame(args.inputs, "labelling"):
        _claim_output(stem, frame_path, out, claimed, args.overwrite)
        labels = label_frame(frame.data, args.preset, name=frame.name, header=frame.header)
        write_label_map(out / f"{stem}_labels.png", labels)
        maps.append(labels)
    print(class_stats(maps).table())


def cmd_train(args: argparse.Namespace) -> None:
    if args.distributed:  # one of torchrun's processes: see ddp.py
        from .ddp import process_group

        with process_group(args.device) as group:
            _train(args, group)
    else:
        _train(args, None)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig from the train options (named as its fields); tiles are turned unless told
    otherwise when the label preset's images have alike rows and columns (``train.keeps_readout_axes``)."""
    from .train import TrainConfig, keeps_readout_axes

    options = vars(args)
    if options.get("keep_readout_axes") is None:
        options = {**options, "keep_readout_axes": keeps_readout_axes(options.get("preset"))}
    return TrainConfig.from_options(options)


def _train(args: argparse.Namespace, group: DataParallel | None) -> None:
    """Train in this process; ``group`` is its rank in a distributed run (only rank 0 reports)."""
    from .bundled import resolve_model
    from .dataset import load_labelled
    from .train import train

    if not args.data and not args.randomised:
        raise InputError("nothing to train on: give dataset folders or frame files, or --randomised N")
    frames = load_labelled(args.data, preset=args.preset) if args.data else []
    if args.randomised:
        from .randomise import randomised_frames

        frames += randomised_frames(args.randomised, args.seed)
    config = train_config(args)
    reports = group is None or group.is_writer
    progress = TrainProgressPrinter()
    try:
        result = train(
            frames,
            args.out,
            config,
            progress=progress if reports else None,
            init_model=args.fine_tune and resolve_model(args.fine_tune),
            metadata={"label_preset": args.preset, "randomised_frames": args.randomised},
            distributed=group,
        )
    except KeyboardInterrupt:
        progress.close()
        print(f"interrupted: the best checkpoint so far (if any epoch finished) is in {args.out}")
        raise
    if not reports:
        return
    best = result.history[result.best_epoch - 1]
    print(
        f"model: {result.model_path} (epoch {result.best_epoch}, val cluster F1 "
        f"{best['val_f1_cluster']:.3f}); history: {', '.join(str(p) for p in result.files[1:])}"
    )


def _load_model(model: str, device: str):
    """Load a model file or bundled model onto the chosen device and say which device that is."""
    from .bundled import resolve_model
    from .devices import describe_device, resolve_device
    from .modelfile import load_model

    torch_device = resolve_device(device)
    model, meta = load_model(resolve_model(model), torch_device)
    print(f"running on {describe_device(torch_device)}")
    return model, meta


def cmd_predict(args: argparse.Namespace) -> None:
    from .devices import check_precision

    check_precision(args.precision)
    if args.scheduler and args.calibration:
        raise InputError("--calibration is not passed to dask workers: predict those frames without --scheduler")
    if args.scheduler:  # on dask workers: see batch.py
        from .batch import PREDICTED, SKIPPED, connect, predict_batch
        from .bundled import resolve_model

        model_path = resolve_model(args.model)
        with connect(args.scheduler) as client:
            report = predict_batch(
                client, model_path, args.inputs, args.out,
                device=args.device, probabilities=args.probabilities, precision=args.precision,
            )
        print(
            f"wrote {report.count(PREDICTED)} prediction(s) to {args.out}, "
            f"skipped {report.count(SKIPPED)} already there; summary: {report.summary_path}"
        )
        return
    from .calibrate import find_calibration, read_calibration
    from .catalogue import frame_file_name
    from .predict import predict_frame, write_prediction

    model, meta = _load_model(args.model, args.device)
    calibrations = read_calibration(args.calibration) if args.calibration else []
    out = Path(args.out)
    claimed: dict[str, Path] = {}
    for frame_path, frame, stem in _each_frame(args.inputs, "predicting"):
        _claim_output(stem, frame_path, out, claimed, args.overwrite)
        prediction = predict_frame(
            model, meta, frame.data, source=frame.name, probabilities=args.probabilities, precision=args.precision,
            calibration=find_calibration(calibrations, frame_file_name(frame), frame.hdu, same_frame=True),
        )
        write_prediction(prediction, out, stem)
    print(f"wrote {len(claimed)} prediction(s) to {out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    if args.against == "physical":
        if args.preset:
            raise InputError("--preset auto-labels truth; with --against physical there is none to make")
        _evaluate_against_physical(args)
    else:
        _evaluate_against_truth(args)


def _evaluate_against_truth(args: argparse.Namespace) -> None:
    """Score the model on labelled frames (or auto-labelled with --preset): the full report."""
    from .dataset import load_labelled
    from .report import write_report
    from .report_text import pixel_table
    from .scoring import ParticleTally, model_labeller, predict_and_evaluate

    model, meta = _load_model(args.model, args.device)
    frames = tqdm(load_labelled(args.data, preset=args.preset), desc="evaluating", unit="frame", disable=None)
    examples: list = []
    particles = ParticleTally()

    def on_frame(frame, labels) -> None:  # the report shows the first three; simulated frames' types are tallied
        if len(examples) < 3:
            examples.append((frame.name, frame.image, frame.labels, labels))
        particles.add(frame, labels)

    evaluation = predict_and_evaluate(frames, model_labeller(model, meta), on_frame=on_frame)
    summary = write_report(args.out, evaluation, examples=examples, title=f"Evaluation of {Path(args.model).name}",
                           particles=particles)
    print(pixel_table(evaluation.pixel))
    print(f"report: {summary}")


def _evaluate_against_physical(args: argparse.Namespace) -> None:
    """Compare the model's clusters with the physical preset's on unlabelled frames.

    Users with real frames have no truth; agreement with an independent threshold method, and
    pictures of where the two disagree, still tell whether a model can be trusted on their data.
    """
    from .autolabel import label_frame
    from .metrics import agreement_summary, compare_clusters
    from .predict import predict_frame
    from .report import plot_disagreement, write_agreement
    from .report_text import agreement_table

    model, meta = _load_model(args.model, args.device)
    out = Path(args.out)
    comparisons, claimed = [], {}
    for frame_path, frame, stem in _each_frame(args.data, "comparing"):
        figure_path = out / f"{stem}_agreement.png"
        _claim_stem(stem, frame_path, figure_path, claimed)
        predicted = predict_frame(model, meta, frame.data, source=frame.name).labels
        physical = label_frame(frame.data, "physical", name=frame.name, header=frame.header)
        comparison = compare_clusters(predicted, physical)
        plot_disagreement(figure_path, frame.data, comparison, stem)
        comparisons.append((stem, comparison))
    summary = agreement_summary(comparisons)
    table = agreement_table(summary)
    write_agreement(out, summary, table, args.model)
    print(table, end="")
    print(f"agreement: {out / 'agreement.json'}, {out / 'agreement.md'}, one PNG per frame")


def cmd_calibrate(args: argparse.Namespace) -> None:
    """Fit each amplifier's gain, noise, dark current and pedestal; write calibration.json and one figure each."""
    from .calibrate import (
        calibrate_frame, calibration_table, find_calibration, plot_calibration, read_calibration, write_calibration,
    )

    previous = read_calibration(args.calibration) if args.calibration else []
    out = Path(args.out)
    calibrations, claimed = [], {}
    for frame_path, frame, stem in _each_frame(args.inputs, "calibrating"):
        figure = out / f"{stem}_calibration.png"
        _claim_stem(stem, frame_path, figure, claimed)
        calibration = calibrate_frame(
            frame.data, frame=frame_path.name, hdu=frame.hdu, extname=frame.extname, header=frame.header,
            gain=args.gain, previous=find_calibration(previous, frame_path.name, frame.hdu, frame.extname),
        )
        plot_calibration(calibration, frame.data, figure)
        calibrations.append(calibration)
    write_calibration(out / "calibration.json", calibrations)
    print(calibration_table(calibrations), end="")
    print(f"calibration: {out / 'calibration.json'}, one <stem>_calibration.png per amplifier")


def cmd_catalogue(args: argparse.Namespace) -> None:
    """Calibrate each amplifier, take its class map, and write the cluster catalogue of all of them."""
    from .calibrate import find_calibration, read_calibration
    from .catalogue import ClassMaps, catalogue_frame, frame_file_name, write_catalogue_folder, write_instances

    previous = read_calibration(args.calibration) if args.calibration else []
    class_maps = ClassMaps(model=args.model, preset=args.preset, labels_dir=args.labels, device=args.device)
    out = Path(args.out)
    tables, calibrations, pixels, claimed = [], [], [], {}
    for frame_path, frame, stem in _each_frame(args.inputs, "cataloguing"):
        target = out / f"{stem}_clusters.tif"
        _claim_stem(stem, frame_path, target, claimed)
        result = catalogue_frame(
            frame, class_maps(frame, stem), gain=args.gain, ev_per_e=args.ev_per_e, allow_empty=True,
            previous=find_calibration(previous, frame_file_name(frame), frame.hdu, frame.extname),
        )
        write_instances(target, result.instances)
        tables.append(result.table)
        calibrations.append(result.calibration)
        pixels.append(frame.data.shape[0] * frame.data.shape[1])
    if not any(len(table) for table in tables):
        raise InputError(f"no cluster pixel in the class map of any frame ({', '.join(claimed)}); nothing to catalogue")
    write_catalogue_folder(
        out, tables, calibrations, pixels, source=class_maps.description, ev_per_e=args.ev_per_e, root=args.root
    )
    n_clusters = sum(len(table) for table in tables)
    print(f"catalogued {n_clusters} cluster(s) in {len(tables)} amplifier image(s): {out / 'clusters.csv'}, "
          f"{out / 'summary.md'}, {out / 'spectrum.png'}")


def cmd_mask(args: argparse.Namespace) -> None:
    """Mask every amplifier (clusters, halos, bleeding, defects, edges) and measure the single-electron rate."""
    import numpy as np

    from .calibrate import calibrate_frame, find_calibration, read_calibration, write_calibration
    from .catalogue import CALIBRATION_EXCLUDED, ClassMaps, frame_file_name
    from .masks import MaskParams, bit_counts, build_mask, frame_region, header_times, rates
    from .masks_report import plot_comb_fit, write_mask, write_rates_folder

    params = MaskParams(**{k: v for k, v in (("halo_px", args.halo), ("bleed_px", args.bleed),
                                             ("edge_px", args.edge)) if v is not None})
    previous = read_calibration(args.calibration) if args.calibration else []
    class_maps = ClassMaps(model=args.model, preset=args.preset, labels_dir=args.labels, device=args.device)
    out = Path(args.out)
    results, counts, calibrations, claimed = [], [], [], {}
    for frame_path, frame, stem in _each_frame(args.inputs, "masking"):
        target = out / f"{stem}_mask.tif"
        _claim_stem(stem, frame_path, target, claimed)
        labels = class_maps(frame, stem)
        name = frame_file_name(frame)
        calibration = calibrate_frame(
            frame.data, frame=name, hdu=frame.hdu, extname=frame.extname, header=frame.header,
            exclude=np.isin(labels, CALIBRATION_EXCLUDED), gain=args.gain,
            previous=find_calibration(previous, name, frame.hdu, frame.extname),
        )
        mask = build_mask(frame.data, labels, calibration, params=params, header=frame.header, frame=frame.name,
                          region=frame_region(frame_path, stem, frame.data.shape, frame.header))
        exposure, readout = header_times(frame.header)
        result = rates(calibration.electrons(frame.data), mask, calibration,
                       exposure_s=args.exposure if args.exposure is not None else exposure,
                       readout_s=args.readout if args.readout is not None else readout)
        write_mask(target, mask)
        plot_comb_fit(result, out / f"{stem}_rate.png")
        results.append(result)
        counts.append(bit_counts(mask))
        calibrations.append(calibration)
    write_calibration(out / "calibration.json", calibrations)
    write_rates_folder(out, results, counts, source=class_maps.description, params=params)
    for r in results:
        print(f"{r.frame} HDU {r.hdu}: {r.unmasked_pixels} unmasked pixels, "
              f"λ = {r.ser_e_per_px:.4g} ± {r.ser_err:.2g} e-/pixel")
    print(f"masks: {out}/*_mask.tif; rates: {out / 'rates.csv'}, {out / 'rates.md'}")


def cmd_models(args: argparse.Namespace) -> None:
    """List the models shipped in the package, which predict and evaluate accept by name."""
    from .bundled import BUNDLED_DIR, bundled_models

    models = bundled_models()
    if not models:
        print(f"no bundled models installed (looked in {BUNDLED_DIR})")
    for model in models.values():
        print(f"{model.summary}\n    {model.path}")


def cmd_demo(args: argparse.Namespace) -> None:
    """Simulate -> train on CPU for a few minutes -> predict held-out frames -> report."""
    from .demo import run_demo

    summary = run_demo(Path(args.out), minutes=args.minutes, seed=args.seed, device=args.device)
    print(f"demo report: {summary}")


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; one sub-parser per stage."""
    from .autolabel import LABEL_PRESETS
    from .classes import CLASS_WEIGHTINGS
    from .simulate import SIM_PRESETS
    from .train import OPTIMISERS, TrainConfig
    from .unet import UNET_CONFIGS

    parser = argparse.ArgumentParser(prog="ccdseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"napari-ccdseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write simulated frames with exact truth labels")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--n", type=int, default=4, help="number of frames (default 4)")
    p.add_argument("--size", type=int, nargs=2, metavar=("ROWS", "COLS"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, help="read noise in e- rms")
    p.add_argument("--units", choices=["e", "adu"])
    p.add_argument("--preset", choices=sorted(SIM_PRESETS), default="conventional")
    p.add_argument("--format", choices=["npy", "fits"], default="npy")
    p.add_argument(
        "--amplifiers", type=int, default=1,
        help="amplifiers per CCD readout, each its own image: one multi-extension FITS file (AMP1, AMP2, ...) "
        "with --format fits, else X_AMP1.npy, ... (default 1)",
    )
    p.add_argument("--dead", type=int, nargs="+", default=[], metavar="AMP",
                   help="amplifiers (1-based) with no CCD behind them: only electronics noise")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("label", help="auto-label frames by thresholds; writes X_labels.png")
    p.add_argument("inputs", nargs="+", help="frame files or dataset folders")
    p.add_argument("--preset", choices=LABEL_PRESETS, default="physical")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace existing X_labels.png files")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("train", help="train a U-Net on labelled frames")
    p.add_argument("data", nargs="*", help="dataset folders or frame files")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    p.add_argument(
        "--randomised", type=int, metavar="N", default=0,
        help="add N simulated 256² frames, each from its own random detector (noise, gain, pedestal, drift, "
        "CTI, glitches...), as the bundled default model was trained: one model for many detectors",
    )
    p.add_argument("--preset", choices=LABEL_PRESETS, help="auto-label frames that have no X_labels map")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--steps", dest="steps_per_epoch", type=int, default=TrainConfig.steps_per_epoch, help="optimiser steps per epoch")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--tile", dest="tile_size", type=int, default=TrainConfig.tile_size, help="training tile size in pixels")
    p.add_argument("--lr", dest="learning_rate", type=float, default=TrainConfig.learning_rate)
    p.add_argument("--optimiser", choices=OPTIMISERS, default=TrainConfig.optimiser)
    p.add_argument("--val-split", type=float, default=TrainConfig.val_split)
    p.add_argument(
        "--no-augment", dest="augment", action="store_false",
        help="no augmentation at all: no flips, turns and affine moves, band strips or hot-pixel pastes",
    )
    axes = p.add_mutually_exclusive_group()
    axes.add_argument(
        "--turn-tiles", dest="keep_readout_axes", action="store_const", const=False,
        help="also turn tiles by 90° and rotate them: for images whose rows and columns are alike (the default "
        "with --preset seed-v1, the original project's PNGs)",
    )
    axes.add_argument(
        "--keep-axes", dest="keep_readout_axes", action="store_const", const=True,
        help="never turn rows into columns (the default otherwise: a CCD's serial trails run along rows, its hot "
        "columns along columns)",
    )
    p.add_argument(
        "--band-augment", type=float, default=TrainConfig.band_augment,
        help="share of tiles given a thin strip of their frame's glowing band along one edge",
    )
    p.add_argument(
        "--hot-augment", type=float, default=TrainConfig.hot_augment,
        help="share of tiles given lone hot pixels and short segments with their frame's hot-pixel values",
    )
    p.add_argument(
        "--class-weighting", choices=CLASS_WEIGHTINGS, default=TrainConfig.class_weighting,
        help="loss weights from class presence: inverse (the original's), its square root, or none",
    )
    p.add_argument("--max-minutes", type=float, help="stop after this wall-clock time, keeping the best model")
    p.add_argument("--config", dest="architecture", choices=sorted(UNET_CONFIGS), default="small", help="network architecture")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fine-tune", metavar="MODEL", help="start from this model: " + _MODEL_HELP)
    p.add_argument(
        "--distributed", action="store_true",
        help="one of N data-parallel processes: start with torchrun --nproc-per-node N",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="predict class maps; writes X_labels.png per frame")
    p.add_argument("model", help=_MODEL_HELP)
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--probabilities", action="store_true", help="also write X_probabilities.npy")
    p.add_argument(
        "--precision", default="auto",
        help="auto, float32 or bfloat16; auto: bfloat16 where the CPU or GPU computes it natively "
        "(1.5x faster on a 2-core AVX512-BF16 CPU), else float32",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing X_labels.png files")
    p.add_argument(
        "--calibration", metavar="FILE",
        help="calibration.json of these frames (ccdseg calibrate/catalogue): a frame listed in it by file name "
        "and HDU whose peaks it resolved takes its row pedestals, gain and dark current from there (for the "
        "zero-electron veto, dark current counted as noise, and the 'frame' normalisation); the others are "
        "measured as usual",
    )
    p.add_argument(
        "--scheduler", metavar="local[:N]|tcp://HOST:PORT",
        help="run one dask task per file on N local worker processes or a dask cluster; "
        "skips frames already predicted and writes OUT/summary.csv",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "evaluate", help="compare predictions with label maps, or with the physical preset; writes a report folder"
    )
    p.add_argument("model", help=_MODEL_HELP)
    p.add_argument("data", nargs="+", help="dataset folders or frame files")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument(
        "--against", choices=["truth", "physical"], default="truth",
        help="truth: score against label maps (default); physical: no labels needed, count the "
        "clusters the model and the physical auto-label preset agree on, per frame",
    )
    p.add_argument("--preset", choices=LABEL_PRESETS, help="auto-label frames that have no X_labels map (--against truth)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "calibrate", help="fit gain, read noise, dark current and pedestal per amplifier; writes calibration.json"
    )
    p.add_argument("inputs", nargs="+", help="frame files or dataset folders")
    p.add_argument("--out", required=True, help="output folder")
    _add_gain_fallback(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "catalogue", help="calibrate frames and write the cluster catalogue (CSV, Parquet), spectrum and summary"
    )
    p.add_argument("inputs", nargs="+", help="frame files or dataset folders")
    p.add_argument("--out", required=True, help="output folder")
    _add_class_map_source(p)
    _add_gain_fallback(p)
    p.add_argument("--ev-per-e", type=float, default=3.75, help="eV per electron-hole pair (default 3.75)")
    p.add_argument("--root", action="store_true", help="also write clusters.root (needs napari-ccdseg[root])")
    p.add_argument("--device", default="auto", help="device for the model: auto, cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_catalogue)

    p = sub.add_parser(
        "mask", help="mask clusters, halos, bleeding and defects; write <stem>_mask.tif and the single-electron rate"
    )
    p.add_argument("inputs", nargs="+", help="frame files or dataset folders")
    p.add_argument("--out", required=True, help="output folder")
    _add_class_map_source(p)
    p.add_argument("--halo", type=float, metavar="PX", help="halo radius of clusters up to 10 e- (default 2; +3 px per decade of charge)")
    p.add_argument("--bleed", type=int, metavar="PX", help="pixels masked after bright clusters along their rows (default 10)")
    p.add_argument("--edge", type=int, metavar="PX", help="pixels masked inside the active area's border (default 2)")
    _add_gain_fallback(p)
    p.add_argument("--exposure", type=float, metavar="S", help="exposure time in s (default: header EXPTIME)")
    p.add_argument("--readout", type=float, metavar="S", help="readout time of the whole image in s (default: header READTIME)")
    p.add_argument("--device", default="auto", help="device for the model: auto, cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_mask)

    p = sub.add_parser("demo", help="simulate, train, predict and report, on embedded defaults")
    p.add_argument("--out", default="ccdseg-demo")
    p.add_argument("--minutes", type=float, default=3.0, help="training time budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="list the bundled models, usable by name in predict and evaluate")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ccdseg`` console script."""
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        args.func(args)
    except InputError as error:
        print(f"ccdseg {args.command}: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print(f"ccdseg {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
