"""Prediction speed and peak memory on large frames, against the naive 256²-tile loop.

Each configuration runs in a fresh subprocess so that its peak RSS is its own.
Usage: python benchmarks/bench_predict.py [--size 4096] [--configs naive 256:16 256:16:1:float32 ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def _frame(size: int) -> np.ndarray:
    from napari_ccdseg.normalise import normalise

    rng = np.random.default_rng(0)
    raw = rng.normal(1000, 3.2, size=(size, size)).astype(np.float32)
    return normalise(raw, "sigma")


def _naive(model, image: np.ndarray, tile: int = 256) -> np.ndarray:
    """Reference: non-overlapping tiles, one at a time, no blending."""
    labels = np.empty(image.shape, np.uint8)
    with torch.inference_mode():
        for y in range(0, image.shape[0], tile):
            for x in range(0, image.shape[1], tile):
                block = torch.from_numpy(np.ascontiguousarray(image[y : y + tile, x : x + tile]))
                labels[y : y + tile, x : x + tile] = model(block[None, None]).argmax(1)[0].numpy()
    return labels


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM starts afresh at exec; ru_maxrss keeps the peak of the
    parent that forked us, so a large parent would be counted in a small child."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_spec(spec: str) -> tuple[int, int, int | None, str]:
    """'TILE:OVERLAP[:BATCH[:PRECISION]]' -> (tile, overlap, batch or None, precision, auto if absent)."""
    tile, overlap, batch, precision = (spec.split(":") + ["", ""])[:4]
    return int(tile), int(overlap), int(batch) if batch else None, precision or "auto"


def run_one(size: int, spec: str) -> dict:
    """Time one configuration in this process; ``spec`` is 'naive' or
    'TILE:OVERLAP[:BATCH[:PRECISION]]' (BATCH empty or absent: the package's default for the
    device; PRECISION absent: auto)."""
    from napari_ccdseg.predict import predict_normalised
    from napari_ccdseg.unet import build_unet

    torch.manual_seed(0)
    model = build_unet("small").eval()
    image = _frame(size)
    start = time.perf_counter()
    if spec == "naive":
        _naive(model, image)
    else:
        tile, overlap, batch, precision = parse_spec(spec)
        predict_normalised(model, image, tile=tile, overlap=overlap, batch_size=batch, precision=precision)
    seconds = time.perf_counter() - start
    peak_mb = _peak_rss_mb()
    return {"size": size, "config": spec, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[4096])
    parser.add_argument("--configs", nargs="+", default=["naive", "256:16", "256:16:1:float32", "256:16:2", "256:16:8"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.size[0], args.one)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'frame':>10} {'config':>10} {'seconds':>8} {'peak RSS MB':>12}")
    for size in args.size:
        for spec in args.configs:
            out = subprocess.run(
                [sys.executable, __file__, "--size", str(size), "--one", spec],
                capture_output=True, text=True, check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{size:>5}x{size:<4} {spec:>10} {row['seconds']:>8} {row['peak_rss_mb']:>12}")


if __name__ == "__main__":
    main()
