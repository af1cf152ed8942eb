"""Batch-prediction throughput: frames per second in one process and on 1, 2... local dask workers.

The model is a freshly initialised ``small`` U-Net (prediction costs the same whatever the
weights). Each worker count gets its own LocalCluster: "cold" is its first pass, cluster start
included; "warm" is the best of ``--repeat`` further passes into fresh output folders, after the
workers have imported torch and loaded the model, which is what a long campaign sees. Best of
several, because on a shared machine other people's jobs only ever make a pass slower.
Usage: python benchmarks/bench_batch.py [--frames 8] [--size 512] [--workers 1 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch


def _setup(root: Path, frames: int, size: int) -> tuple[list[Path], Path]:
    from napari_ccdseg.modelfile import save_model
    from napari_ccdseg.simulate import SIM_PRESETS, simulate_dataset
    from napari_ccdseg.unet import build_unet

    config = dataclasses.replace(SIM_PRESETS["conventional"], rows=size, cols=size)
    paths = simulate_dataset(root / "frames", frames, config, seed=0)
    torch.manual_seed(0)
    model = save_model(root / "model.safetensors", build_unet("small"), {"normalisation": "sigma"})
    return paths, model


def _timed(run, repeat: int) -> float:
    """Fewest seconds of ``repeat`` calls of ``run(pass_index)``."""
    best = float("inf")
    for index in range(repeat):
        start = time.perf_counter()
        run(index)
        best = min(best, time.perf_counter() - start)
    return best


def _single_process(paths: list[Path], model_path: Path, root: Path, repeat: int) -> float:
    """Seconds for ``ccdseg predict`` without a scheduler (loading the model included)."""
    from napari_ccdseg.cli import main

    args = ["predict", str(model_path), *map(str, paths), "--device", "cpu"]
    return _timed(lambda index: main([*args, "--out", str(root / f"single{index}")]), repeat)


def _on_workers(
    paths: list[Path], model_path: Path, workers: int, root: Path, repeat: int
) -> tuple[float, float]:
    """(cold, warm) seconds with ``workers`` local worker processes."""
    from napari_ccdseg.batch import connect, predict_batch

    start = time.perf_counter()
    with connect(f"local:{workers}") as client:
        predict_batch(client, model_path, paths, root / f"cold{workers}", device="cpu")
        cold = time.perf_counter() - start
        def run(index: int) -> None:
            predict_batch(client, model_path, paths, root / f"warm{workers}_{index}", device="cpu")

        warm = _timed(run, repeat)
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths, model = _setup(root, args.frames, args.size)
        threads = torch.get_num_threads()
        seconds = _single_process(paths, model, root, args.repeat)
        results = [{"run": f"one process ({threads} torch threads)", "warm_fps": args.frames / seconds}]
        for workers in args.workers:
            cold, warm = _on_workers(paths, model, workers, root, args.repeat)
            fps = {"cold_fps": args.frames / cold, "warm_fps": args.frames / warm}
            results.append({"run": f"local:{workers}", **fps})
    for row in results:
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
