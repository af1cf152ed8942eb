"""One command for every benchmark: quality against truth and thresholds, speed against the hardware.

Prints each table and writes ``docs/benchmarks.md`` with PNG figures ``docs/images/benchmarks-*.png``.
It reuses the other scripts here (``bench_simulate.time_size``, ``bench_predict``'s one-subprocess-
per-configuration runs for peak RSS) and the package's own simulate / autolabel / train / predict /
metrics code; nothing here is a second implementation of those.
Usage: python benchmarks/run_benchmarks.py [--minutes-per-model M] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs"
IMAGES = DOCS / "images"
sys.path.insert(0, str(HERE))

import bench_predict  # noqa: E402  (reused: subprocess runs with peak RSS)
import bench_seed_v1  # noqa: E402  (reused: realistic seed-v1 frames and their scores)
import bench_simulate  # noqa: E402  (reused: simulator timing)

from napari_ccdseg.atomic import atomic_write_text  # noqa: E402
from napari_ccdseg.autolabel import label_frame  # noqa: E402
from napari_ccdseg.bundled import DEFAULT_MODEL, resolve_model  # noqa: E402
from napari_ccdseg.classes import CLASS_NAMES, CLUSTER  # noqa: E402
from napari_ccdseg.dataset import LabelledFrame, load_labelled  # noqa: E402
from napari_ccdseg.metrics import pixel_report  # noqa: E402
from napari_ccdseg.modelfile import load_model  # noqa: E402
from napari_ccdseg.predict import predict_frame, tile_starts  # noqa: E402
from napari_ccdseg.scoring import model_labeller, predict_and_evaluate, preset_labeller  # noqa: E402
from napari_ccdseg.simulate import SIM_PRESETS, SimConfig, simulate_frame  # noqa: E402
from napari_ccdseg.train import TrainConfig, keeps_readout_axes, split_frames, train  # noqa: E402
from napari_ccdseg.unet import build_unet  # noqa: E402

NOISE_LEVELS = (0.16, 1.6, 3.0)
DEFAULT_SPEC = "256:16"
PREDICT_SPECS = ("naive", DEFAULT_SPEC, "256:16:1:float32", "256:16:8")
"""Prediction configs timed (TILE:OVERLAP[:BATCH[:PRECISION]]): the naive float32 loop (reference), the
default (batch per device, precision auto), the default in float32, and batches of 8 (the old default)."""
METHODS = (
    "physical preset", "U-Net (truth labels)", "U-Net (physical auto-labels)", "bundled default model (not trained here)"
)
SEED_V1 = ROOT.parent / "shared" / "data" / "seed-v1" / "train"
GOAL_F1 = 0.95
PUBLISHED = {"cluster": 0.35, "macro avg": 0.83, "background": 1.00, "glowing": 0.96, "hot pixel": 0.97}


def _table(header: list[str], rows: list[list]) -> list[str]:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        return "–" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def _emit(out: list[str], lines: list[str]) -> None:
    print("\n".join(lines), flush=True)
    out.extend(lines)


def _train(
    frames: list[LabelledFrame], path: Path, minutes: float, seed: int, label_preset: str | None = None
) -> tuple[object, dict, float, object]:
    """Train as ``ccdseg train`` would on frames labelled by ``label_preset`` (None: truth)."""
    config = TrainConfig(epochs=1000, early_stopping=1000, max_minutes=minutes, device="cpu", seed=seed,
                         keep_readout_axes=keeps_readout_axes(label_preset))
    start = time.perf_counter()
    result = train(frames, path, config)
    seconds = time.perf_counter() - start
    model, meta = load_model(result.model_path, "cpu")
    return model, meta, seconds, result


# ----------------------------------------------------------------------------- 1. quality


def three_noise_tests(n_index: int, noise: float, frames: int, size: int, first_seed: int = 50_000) -> list:
    """Section 1's test frames at one read noise: the ``conventional`` preset with ``read_noise_e``
    replaced, ``frames`` of ``size``², seeds ``first_seed + 1000·n_index + i``."""
    config = dataclasses.replace(SIM_PRESETS["conventional"], read_noise_e=noise, rows=size, cols=size)
    return [simulate_frame(config, seed=first_seed + 1000 * n_index + i) for i in range(frames)]


def quality(args, out: list[str], tmp: Path) -> dict:
    rows, figures, per_noise, charge_rows = [], {}, {}, []
    m_default, meta_default = load_model(resolve_model(DEFAULT_MODEL), "cpu")
    for n_index, noise in enumerate(NOISE_LEVELS):
        base = dataclasses.replace(SIM_PRESETS["conventional"], read_noise_e=noise)
        small = dataclasses.replace(base, rows=args.train_size, cols=args.train_size)
        sims = [simulate_frame(small, seed=1000 * n_index + i) for i in range(args.train_frames)]
        truth_frames = [LabelledFrame(f"t{i}", s.image, s.labels, s.instances) for i, s in enumerate(sims)]
        auto_frames = [
            LabelledFrame(f"a{i}", s.image, label_frame(s.image, "physical")) for i, s in enumerate(sims)
        ]
        tests = three_noise_tests(n_index, noise, args.test_frames, args.test_size)
        # the same frames without read noise (units e⁻): the charge each pixel really holds
        noiseless = [simulate_frame(dataclasses.replace(SimConfig.from_dict(t.metadata["config"]), read_noise_e=0.0),
                                    seed=t.metadata["seed"]) for t in tests]
        assert all(np.array_equal(a.labels == CLUSTER, b.labels == CLUSTER) for a, b in zip(tests, noiseless))
        charges = [frame.image for frame in noiseless]
        m_truth, meta_truth, _, _ = _train(truth_frames, tmp / f"truth{noise}.safetensors", args.minutes, 0)
        m_auto, meta_auto, _, _ = _train(auto_frames, tmp / f"auto{noise}.safetensors", args.minutes, 0, "physical")
        test_frames = [LabelledFrame(f"test{i}", t.image, t.labels, t.instances) for i, t in enumerate(tests)]
        labellers = {
            METHODS[0]: preset_labeller("physical"),
            METHODS[1]: model_labeller(m_truth, meta_truth),
            METHODS[2]: model_labeller(m_auto, meta_auto),
            METHODS[3]: model_labeller(m_default, meta_default),
        }
        predictions, per_noise[noise] = {}, {}
        for method, labeller in labellers.items():
            kept = predictions[method] = []
            ev = predict_and_evaluate(test_frames, labeller, on_frame=lambda _, labels: kept.append(labels))
            per_noise[noise][method] = ev
            rows.append(
                [noise, method]
                + [ev.pixel.classes[name].f1 for name in CLASS_NAMES]
                + [ev.pixel.macro.f1, ev.clusters.efficiency, ev.clusters.fakes_per_megapixel]
            )
        charge_rows += _recall_by_charge(noise, tests, charges, predictions)
    header = ["read noise e⁻", "method", *[f"F1 {n}" for n in CLASS_NAMES], "macro F1",
              "cluster efficiency", "fakes / MPix"]
    _emit(out, ["## 1. Quality on simulated frames with truth", "",
                f"Preset `conventional` with `read_noise_e` replaced; per noise level {args.train_frames} "
                f"training frames of {args.train_size}² (seeds 1000·k + i) and {args.test_frames} test frames "
                f"of {args.test_size}² (seeds 50000 + 1000·k + i). Each U-Net: `small`, `TrainConfig(epochs=1000, "
                f"early_stopping=1000, max_minutes={args.minutes}, device='cpu', seed=0)` (other settings default: "
                "tiles 128², batch 8, 32 steps per epoch, 20 % of the frames held out for validation). "
                "The bundled default model (`ccdseg predict default`) was trained once on domain-randomised "
                "frames by scripts/train_default_model.py, never on these presets. "
                "Cluster efficiency: share of true clusters with ≥ 50 % of their pixels predicted cluster.", ""])
    _emit(out, _table(header, rows))
    figures["efficiency"] = _plot_efficiency(per_noise)
    out += ["", f"![efficiency vs charge](images/{figures['efficiency'].name})", ""]
    verdicts = []
    for noise in NOISE_LEVELS:
        phys = per_noise[noise][METHODS[0]].pixel.cluster.f1
        for method in METHODS[1:]:
            f1 = per_noise[noise][method].pixel.cluster.f1
            verdicts.append(
                f"- {noise} e⁻, {method}: cluster F1 {f1:.3f} vs physical preset {phys:.3f}: "
                + ("beats the thresholds" if f1 > phys else "does **not** beat the thresholds")
            )
    best = max(per_noise[1.6][m].pixel.cluster.f1 for m in METHODS[1:])
    verdicts.append(
        f"- Goal cluster pixel F1 ≥ {GOAL_F1} at 1.6 e⁻: best U-Net {best:.3f}: "
        + ("**met**" if best >= GOAL_F1 else "**missed**")
    )
    _emit(out, ["", *verdicts, ""])
    _emit(out, [
        "### Which cluster pixels are found, by the charge they hold", "",
        "Truth marks every pixel with ≥ 1 e⁻ from an event as cluster. The test frames simulated again "
        "without read noise give the charge each pixel holds; σ is the read noise. Per charge bin: its share "
        "of the true cluster pixels and each method's recall there. The last column is the cluster F1 of an "
        "oracle that labels exactly the true cluster pixels holding ≥ 1σ and nothing else: what a method "
        "scores if it finds every pixel that stands out of the noise, none that does not, and makes no fakes.",
        "",
    ])
    _emit(out, _table(["read noise e⁻", "pixel charge", "share of cluster pixels",
                       *[f"recall: {m}" for m in METHODS], "oracle ≥ 1σ F1"], charge_rows))
    out.append("")
    return per_noise


CHARGE_BINS_SIGMA = (0.0, 1.0, 2.0, 3.0, np.inf)


def _recall_by_charge(noise: float, tests: list, charges: list[np.ndarray], predictions: dict) -> list[list]:
    """Rows of the recall-by-pixel-charge table for one noise level (see the section's text)."""
    truth = np.concatenate([(t.labels == CLUSTER).ravel() for t in tests])
    charge = np.concatenate([c.ravel() for c in charges])[truth] / noise
    found = {m: np.concatenate([(p == CLUSTER).ravel() for p in preds])[truth] for m, preds in predictions.items()}
    visible = charge >= 1.0
    oracle_recall = visible.mean()  # oracle precision is 1
    oracle_f1 = 2 * oracle_recall / (1 + oracle_recall)
    rows = []
    for lo, hi in zip(CHARGE_BINS_SIGMA, CHARGE_BINS_SIGMA[1:]):
        in_bin = (charge >= lo) & (charge < hi)
        if not in_bin.any():
            continue
        label = f"≥ {lo:g}σ" if np.isinf(hi) else f"{lo:g}–{hi:g}σ"
        rows.append([noise, label, float(in_bin.mean())]
                    + [float(found[m][in_bin].mean()) for m in METHODS] + [oracle_f1 if not rows else None])
    return rows


def _plot_efficiency(per_noise: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 4.8), layout="constrained")
    axes_row = figure.subplots(1, len(per_noise), sharey=True)
    for axes, (noise, by_method) in zip(np.atleast_1d(axes_row), per_noise.items()):
        for method, ev in by_method.items():
            binned = ev.clusters.efficiency_vs_charge
            edges = np.asarray(binned.bin_edges, float)
            if edges.size < 2:
                continue
            counts, found = np.asarray(binned.counts), np.asarray(binned.found)
            keep = counts > 0
            centres = np.sqrt(edges[:-1] * edges[1:])
            axes.plot(centres[keep], (found / np.maximum(counts, 1))[keep], "o-", label=method)
        axes.set_xscale("log")
        axes.set_ylim(-0.04, 1.06)
        axes.set_title(f"read noise {noise} e⁻")
        axes.set_xlabel("cluster charge (e⁻, pedestal subtracted)")
        axes.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes_row)[0].set_ylabel("detection efficiency")
    np.atleast_1d(axes_row)[0].legend(loc="lower right")
    path = IMAGES / "benchmarks-efficiency.png"
    figure.savefig(path, dpi=90)
    return path


# ----------------------------------------------------------------------------- 2. seed-v1


def seed_v1(args, out: list[str], tmp: Path) -> None:
    _emit(out, ["## 2. The original project's data (seed-v1)", ""])
    if not SEED_V1.is_dir():
        _emit(out, [f"Skipped: {SEED_V1.relative_to(ROOT.parent)} does not exist on this machine.", ""])
        return
    frames = load_labelled([SEED_V1], preset="seed-v1")
    train_frames, test_frames = split_frames(frames, 0.2, seed=0)
    model, meta, seconds, result = _train(train_frames, tmp / "seed.safetensors", args.minutes, 0, "seed-v1")
    truth = np.concatenate([f.labels.ravel() for f in test_frames])
    pred = np.concatenate([predict_frame(model, meta, f.image).labels.ravel() for f in test_frames])
    report = pixel_report(truth, pred)
    realistic = bench_seed_v1.realistic_frames(args.realistic_frames)
    on_realistic = bench_seed_v1.scores(model, meta, realistic)
    rows = [
        [name, scores.f1, on_realistic[f"f1_{name}"], PUBLISHED.get(name)]
        for name, scores in {**report.classes, "macro avg": report.macro}.items()
    ]
    _emit(out, [f"{len(frames)} images with `seed-v1` colour-rule labels (unmatched pixels unlabelled), "
                f"seeded 80/20 split (`split_frames(..., 0.2, seed=0)`): {len(train_frames)} for training "
                f"(which holds out 20 % of them again for validation), {len(test_frames)} held out for this table. "
                f"Training: {seconds:.0f} s wall ({len(result.history)} epochs, best {result.best_epoch}, "
                f"stopped: {result.stopped}), budget {args.minutes} min, default augmentation (band strips and "
                f"hot-pixel pastes included; tiles turned, as `ccdseg train --preset seed-v1` does: these images' "
                f"rows and columns are alike). *Realistic*: {len(realistic)} frames drawn in the same format by "
                f"`seedv1.REALISTIC` (a 2–10 column glowing strip at the left edge, lone hot pixels, few clusters; "
                f"seeds {bench_seed_v1.REALISTIC_SEED} + i), never trained on, labelled by the same colour rules.", ""])
    _emit(out, _table(["class", "F1 held-out balanced (12)", "F1 realistic", "original, published"], rows))
    _emit(out, ["", f"Realistic frames: cluster detection efficiency {on_realistic['efficiency']:.3f}, "
                f"{on_realistic['fakes_per_mpix']:.0f} fake clusters per MPix; the published figures are on the "
                "original's own test images, not on this split. How each augmentation contributes: section 7.", ""])


# ----------------------------------------------------------------------------- 3. speed


def _matmul_flops(dtype: torch.dtype = torch.float32, n: int = 2048, repeat: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeat))
    return 2 * n**3 / best


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _model_flops_per_tile(tile: int = 256) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = build_unet("small").eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, tile, tile))
    return float(counter.get_total_flops())


def _throughput_child(mode: str, steps: int) -> None:
    """Tiles/s of training steps (batch 8 of 128² tiles, Adam, cross-entropy) in this process."""
    torch.manual_seed(0)
    model = build_unet("small")
    images = torch.randn(8, 1, 128, 128)
    labels = torch.randint(0, 4, (8, 128, 128))
    if mode != "eager":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    net = torch.compile(model) if mode == "compile" else model
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "channels_last+bfloat16"):
            loss = loss_fn(net(images).float(), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    start = time.perf_counter()
    step()
    step()
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    print(json.dumps({"mode": mode, "tiles_per_s": 8 * steps / seconds, "warmup_s": warmup}))


def _throughput(mode: str, steps: int, timeout: int) -> dict:
    try:
        done = subprocess.run([sys.executable, __file__, "--throughput-child", mode, "--steps", str(steps)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "tiles_per_s": None, "note": f"not measured: took over {timeout} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1][:120]
        return {"mode": mode, "tiles_per_s": None, "note": f"failed: {last}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _predict_sub(size: int, spec: str, timeout: int) -> dict:
    try:
        done = subprocess.run([sys.executable, bench_predict.__file__, "--size", str(size), "--one", spec],
                              capture_output=True, text=True, timeout=timeout, check=True)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as error:
        return {"size": size, "config": spec, "seconds": None, "peak_rss_mb": None, "note": type(error).__name__}
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed(args, out: list[str]) -> dict:
    _emit(out, ["## 3. Speed and memory (CPU)", "",
                f"{os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}, torch {torch.__version__}, "
                f"{torch.get_num_threads()} torch threads. Each ratio is to a reference measured in the same run.", ""])
    results: dict = {}
    # simulator
    times, n_clusters, _ = bench_simulate.time_size(4096, args.repeat)
    rng = np.random.default_rng(0)
    ref = min(_seconds(lambda: rng.normal(0, 1.6, (4096, 4096)).astype(np.float32)) for _ in range(3))
    sim = min(times)
    results["simulate"] = sim
    _emit(out, ["### Simulator", ""])
    _emit(out, _table(["what", "seconds", "× reference"], [
        ["simulate_frame 4096² (`conventional`, best of %d, %d clusters)" % (args.repeat, n_clusters), sim, sim / ref],
        ["reference: read noise alone (one Gaussian draw of 4096²)", ref, 1.0],
    ]))
    _emit(out, ["", f"Target ≤ 5 s: {'met' if sim <= 5 else 'missed'} ({sim:.2f} s).", ""])
    # training throughput
    modes = ["eager", "channels_last"] + (["channels_last+bfloat16"] if _native_cpu_bfloat16() else []) + (
        [] if args.quick else ["compile"])
    rows, tput = [], {}
    for mode in modes:
        r = _throughput(mode, args.steps, timeout=args.compile_timeout)
        tput[mode] = r.get("tiles_per_s")
        rows.append([mode, r.get("tiles_per_s"), None if not r.get("tiles_per_s") or not tput.get("eager")
                     else r["tiles_per_s"] / tput["eager"], r.get("warmup_s"), r.get("note", "")])
    if args.quick:
        rows.append(["compile", None, None, None, "not run with --quick"])
    results["throughput"] = tput
    best_mode = max((m for m in tput if tput[m]), key=lambda m: tput[m])
    _emit(out, ["### Training throughput", "",
                f"`small` U-Net, batch 8 of 128² tiles, Adam + cross-entropy, {args.steps} timed steps after 2 "
                "warm-up steps, each mode in its own subprocess. Reference: eager (contiguous NCHW, float32). "
                "`channels_last+bfloat16` (autocast, weights and optimiser in float32) is what `ccdseg train` "
                "does on a CPU that computes bfloat16 natively (`TrainConfig.mixed_precision`); the row is "
                "left out elsewhere.", ""])
    _emit(out, _table(["mode", "tiles/s", "× eager", "warm-up s", "note"], rows))
    gain = tput[best_mode] / tput["eager"]
    _emit(out, ["", f"Target ≥ 1.3× eager: {'met' if gain >= 1.3 else 'missed'} (best: {best_mode}, {gain:.2f}×).", ""])
    # prediction
    sizes = [4096] + ([] if args.quick else [6144])
    rows, pred = [], {}
    flops_tile = _model_flops_per_tile(256)
    matmul = {name: _matmul_flops(getattr(torch, name)) for name in sorted({_spec_precision(s) for s in PREDICT_SPECS})}
    for size in sizes:
        for spec in PREDICT_SPECS:
            pred[(size, spec)] = _predict_sub(size, spec, timeout=600)
        naive = pred[(size, "naive")]
        labelled = [("naive 256² loop (reference)", naive)] + [
            (f"predict_normalised {spec}" + (" (default)" if spec == DEFAULT_SPEC else ""), pred[(size, spec)])
            for spec in PREDICT_SPECS[1:]
        ]
        for (spec, r), raw_spec in zip(labelled, PREDICT_SPECS):
            n_tiles = (size // 256) ** 2 if spec.startswith("naive") else len(tile_starts(size, 256, 16)) ** 2
            fps = flops_tile * n_tiles / r["seconds"] if r.get("seconds") else None
            precision = _spec_precision(raw_spec)
            rows.append([f"{size}²", spec, precision, r.get("seconds"), r.get("peak_rss_mb"),
                         None if not (r.get("seconds") and naive.get("seconds")) else naive["seconds"] / r["seconds"],
                         None if fps is None else fps / 1e9, None if fps is None else fps / matmul[precision]])
    results["predict"] = pred
    _emit(out, ["### Prediction", "",
                "Freshly initialised `small` U-Net on a normalised noise frame, each configuration in its own "
                "subprocess (`bench_predict.py --one`) so the peak RSS is its own. Config tile:overlap:batch:precision; "
                f"the default `{DEFAULT_SPEC}` takes the package's batch for the device (1 tile on a CPU) and "
                f"precision `auto` ({_spec_precision(DEFAULT_SPEC)} here: bfloat16 where the CPU computes it natively). "
                "FLOPs per 256² tile counted "
                f"with `torch.utils.flop_counter.FlopCounterMode`: {flops_tile / 1e9:.2f} GFLOP; "
                "reference FLOP/s: a 2048² matmul in the row's precision, best of 5: "
                + ", ".join(f"{name} {flops / 1e9:.1f} GFLOP/s" for name, flops in matmul.items()) + ".", ""])
    _emit(out, _table(["frame", "config", "precision", "seconds", "peak RSS MB", "speed-up vs naive",
                       "model GFLOP/s", "FLOP efficiency"], rows))
    t4 = pred[(4096, DEFAULT_SPEC)]
    if t4.get("seconds"):
        ok = t4["seconds"] <= 10 and t4["peak_rss_mb"] <= 2048
        _emit(out, ["", f"Target 4096² ≤ 10 s with ≤ 2 GB: {'met' if ok else 'missed'} "
                    f"({t4['seconds']} s, {t4['peak_rss_mb']} MB).", ""])
    _plot_speed(tput, rows)
    out += ["", "![speed](images/benchmarks-speed.png)", ""]
    return results


def _native_cpu_bfloat16() -> bool:
    from napari_ccdseg.devices import native_bfloat16

    return native_bfloat16(torch.device("cpu"))


def _spec_precision(spec: str) -> str:
    """The arithmetic a PREDICT_SPECS entry runs in (the naive loop: float32)."""
    if spec == "naive":
        return "float32"
    from napari_ccdseg.devices import resolve_precision

    dtype = resolve_precision(bench_predict.parse_spec(spec)[3], torch.device("cpu"))
    return str(dtype).removeprefix("torch.")


def _plot_speed(tput: dict, pred_rows: list[list]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.5), layout="constrained")
    left, right = figure.subplots(1, 2)
    names = [m for m in tput if tput[m]]
    left.bar(names, [tput[m] for m in names], color="tab:blue")
    left.set_ylabel("training tiles/s (128²)")
    left.set_title("Training throughput")
    timed = [r for r in pred_rows if r[3]]
    labels = [f"{r[0]}\n{r[1].removeprefix('predict_normalised ').split(' ')[0]}\n{r[2]}" for r in timed]
    right.bar(labels, [r[3] for r in timed], color="tab:orange")
    right.set_ylabel("seconds per frame")
    right.set_title("Prediction time (CPU)")
    for r_axes in (left, right):
        r_axes.grid(True, axis="y", alpha=0.3)
    figure.savefig(IMAGES / "benchmarks-speed.png", dpi=90)


# ----------------------------------------------------------------------------- 4. GPU


def gpu(args, out: list[str]) -> None:
    _emit(out, ["## 4. GPU", ""])
    if not torch.cuda.is_available():
        _emit(out, ["not run: no CUDA device", ""])
        return
    rows = device_rows(torch.device("cuda"))
    _emit(out, [f"{torch.cuda.get_device_name()}", ""])
    _emit(out, _table(["setting", "4096² prediction s", "training tiles/s (batch 32)"], rows))
    out.append("")


def device_rows(device: torch.device, size: int = 4096, batch: int = 32, steps: int = 20) -> list[list]:
    """Per mixed-precision setting (off, and on where the device computes bfloat16 natively):
    seconds to predict a size² frame in batches of ``batch`` tiles, and training tiles/s (``batch``
    tiles of 128² per step). Any device, so the GPU section's code also runs, on a CPU, in the
    test suite."""
    from napari_ccdseg.devices import native_bfloat16
    from napari_ccdseg.predict import predict_normalised

    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rows = []
    image = bench_predict._frame(size)
    for amp in (False, True) if native_bfloat16(device) else (False,):  # emulated bfloat16: not worth timing
        model = build_unet("small").to(device).to(memory_format=torch.channels_last).eval()
        precision = "bfloat16" if amp else "float32"
        predict_normalised(model, image[:512, :512], precision=precision)  # warm-up
        synchronise()
        seconds = _seconds(lambda: predict_normalised(model, image, batch_size=batch, precision=precision))
        model.train()
        optimiser = torch.optim.Adam(model.parameters())
        x = torch.randn(batch, 1, 128, 128, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 4, (batch, 128, 128), device=device)

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        def timed_steps() -> None:
            for _ in range(steps):
                step()
            synchronise()

        step()
        synchronise()
        rows.append([f"mixed precision {'on' if amp else 'off'}", seconds, batch * steps / _seconds(timed_steps)])
    return rows


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes-per-model", dest="minutes", type=float, default=None)
    parser.add_argument("--quick", action="store_true", help="small frames, short training, no 6144², no compile")
    parser.add_argument("--throughput-child", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.throughput_child:
        _throughput_child(args.throughput_child, args.steps or 10)
        return
    if args.minutes is None:
        args.minutes = 0.2 if args.quick else 1.0
    args.train_frames, args.train_size = (6, 128) if args.quick else (12, 256)
    args.test_frames, args.test_size = (2, 256) if args.quick else (4, 512)
    args.realistic_frames = 2 if args.quick else 16
    args.steps = args.steps or (5 if args.quick else 15)
    args.repeat = 1 if args.quick else 2
    args.compile_timeout = 180
    IMAGES.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    out = ["# Benchmarks", "",
           "Generated by `python benchmarks/run_benchmarks.py"
           + (f" --minutes-per-model {args.minutes}" if args.minutes else "") + (" --quick" if args.quick else "")
           + f"` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (sections 1–4; from section 5 on, "
           "each section names the script that measured it); do not edit by hand.", ""]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        quality(args, out, tmp)
        seed_v1(args, out, tmp)
    speed(args, out)
    gpu(args, out)
    out += [f"Whole run: {(time.perf_counter() - started) / 60:.1f} min.", ""]
    page = DOCS / "benchmarks.md"
    atomic_write_text(page, "\n".join(out) + kept_sections(page))
    print(f"wrote {page}")


KEPT_FROM = "## 5. "
"""Sections from this heading on come from the single bench_*.py scripts (each names its command)
and are kept as they are when this script rewrites the page above them."""


def kept_sections(page: Path) -> str:
    """The page's sections this script does not write (from :data:`KEPT_FROM`), or nothing."""
    if not page.exists():
        return ""
    text = page.read_text(encoding="utf-8")
    start = text.find(KEPT_FROM)
    return "" if start < 0 else "\n" + text[start:]


if __name__ == "__main__":
    main()
