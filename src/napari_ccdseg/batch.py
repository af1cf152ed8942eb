"""Batch prediction of many frame files on dask.distributed, on a local pool or a cluster.

A campaign is thousands of frames: one dask task per frame file, so the scheduler balances
the load and a lost worker's files are simply run again elsewhere. Each worker process loads
the model once and keeps it. Outputs have the names and contents of the single-process
``ccdseg predict`` and are written atomically, so after a kill every output on disk is
complete; running the same command again predicts only the frames that have none. The
summary CSV gives, per frame: clusters found, pixels per class and the seconds it took.

dask is imported here only, and only ``ccdseg predict --scheduler`` imports this module.
"""

from __future__ import annotations

import csv
import io
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from .atomic import atomic_write_text
from .classes import CLASS_NAMES, N_CLASSES
from .dataset import frame_files
from .devices import check_precision, resolve_device
from .errors import InputError
from .io import Frame, output_stem, read_frames, read_label_map
from .metrics import cluster_instances
from .modelfile import read_metadata
from .predict import prediction_paths
from .unet import UNet

try:
    import dask
    from dask.distributed import Client, LocalCluster, WorkerPlugin, as_completed
except ModuleNotFoundError as missing:  # the CLI prints this as its one-line error
    raise InputError(
        f"--scheduler needs dask.distributed ({missing}): pip install 'napari-ccdseg[distributed]'"
    ) from missing

SUMMARY_NAME = "summary.csv"
PIXEL_COLUMNS = tuple(f"pixels_{name.replace(' ', '_')}" for name in CLASS_NAMES)
COLUMNS = ("file", "frame", "status", "clusters", *PIXEL_COLUMNS, "seconds", "error")
PREDICTED, SKIPPED, FAILED = "predicted", "skipped", "failed"
NANNY_MALLOC_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


# ---------------------------------------------------------------- connecting


def _cpu_count() -> int:
    """CPUs this process may use (a SLURM or container limit, not the whole machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _local_workers(spec: str) -> int:
    """N of ``local:N``; plain ``local`` means one worker per CPU."""
    if spec == "local":
        return _cpu_count()
    count = spec.partition(":")[2]
    if not count.isdigit() or int(count) < 1:
        raise InputError(f"scheduler {spec!r}: expected local, local:N with N >= 1, or tcp://HOST:PORT")
    return int(count)


class TorchThreads(WorkerPlugin):
    """Gives each worker's torch a share of the CPUs, also on workers the nanny restarts.

    dask starts workers with OMP_NUM_THREADS=1, so one local worker would use one core of
    many. Set in each worker, not through the environment: dask copies its worker variables
    into this process, where they would then override the next cluster's.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def setup(self, worker: object) -> None:
        import torch

        torch.set_num_threads(self.threads)


@contextmanager
def connect(scheduler: str) -> Iterator[Client]:
    """A dask Client for ``local[:N]`` (a LocalCluster of N processes) or a running ``tcp://`` scheduler.

    Local workers have one dask thread each (torch parallelises inside a frame) and share the
    CPUs out as torch threads, so N workers do not oversubscribe the machine. They start
    without dask's MALLOC_TRIM_THRESHOLD_: setting it turns off glibc's adaptive mmap
    threshold, so every large tensor is mapped and faulted in afresh, which halved the
    prediction speed here (see docs/scaling.md).
    """
    if scheduler == "local" or scheduler.startswith("local:"):
        workers = _local_workers(scheduler)
        with dask.config.set({NANNY_MALLOC_TRIM: None}), LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster, Client(cluster) as client:
            client.register_plugin(TorchThreads(max(1, _cpu_count() // workers)))
            yield client
    elif scheduler.startswith(("tcp://", "tls://")):
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as error:  # refused, unreachable or timed out
            raise InputError(f"cannot connect to the dask scheduler at {scheduler}: {error}") from None
        with client:
            yield client
    else:
        raise InputError(f"scheduler {scheduler!r}: expected local, local:N or tcp://HOST:PORT")


# ---------------------------------------------------------------- on a worker


@lru_cache(maxsize=2)
def _cached_model(model_path: str, modified_ns: int, device: str) -> tuple[UNet, dict]:
    """Model and metadata, loaded once per worker process and version of the file on disk."""
    from .modelfile import load_model

    return load_model(model_path, resolve_device(device))


def _row(
    frame_path: str, frame: str, status: str, labels: np.ndarray | None, seconds: float, error: str = ""
) -> dict:
    """One summary line; clusters are 8-connected components, as in the evaluation report."""
    row = {"file": frame_path, "frame": frame, "status": status, "seconds": round(seconds, 3), "error": error}
    if labels is not None:
        counts = np.bincount(labels.ravel(), minlength=N_CLASSES)[:N_CLASSES]
        row["clusters"] = int(cluster_instances(labels).max(initial=0))
        row.update(zip(PIXEL_COLUMNS, counts.tolist()))
    return row


def _predict_to(
    model: UNet, meta: dict, frame: Frame, out_dir: str, stem: str, probabilities: bool, precision: str
) -> np.ndarray:
    """What ``ccdseg predict`` does for one frame: predict, then write the outputs atomically."""
    from .predict import predict_frame, write_prediction

    prediction = predict_frame(
        model, meta, frame.data, source=frame.name, probabilities=probabilities, precision=precision
    )
    write_prediction(prediction, out_dir, stem)
    return prediction.labels


def predict_file(
    frame_path: str, model_path: str, out_dir: str, device: str, probabilities: bool, precision: str = "auto"
) -> list[dict]:
    """The dask task: every frame of one file (a FITS file may hold several), done ones skipped.

    The file is read even when all its outputs exist, because a FITS file's frame names (and
    so its output names) are in the file; reading costs far less than predicting.
    Bad input becomes a ``failed`` row, so one corrupt file does not stop a campaign.
    """
    try:
        frames = read_frames(frame_path)
        rows = []
        for frame in frames:
            stem = output_stem(frame_path, frame.name, len(frames))
            outputs = prediction_paths(out_dir, stem, probabilities)
            if all(path.exists() for path in outputs):
                rows.append(_row(frame_path, frame.name, SKIPPED, read_label_map(outputs[0]), 0.0))
                continue
            model, meta = _cached_model(model_path, os.stat(model_path).st_mtime_ns, device)
            start = time.perf_counter()  # after loading: seconds are the frame's own
            labels = _predict_to(model, meta, frame, out_dir, stem, probabilities, precision)
            rows.append(_row(frame_path, frame.name, PREDICTED, labels, time.perf_counter() - start))
        return rows
    except Exception as error:  # one bad file (or a full disk) must not end a whole campaign
        message = str(error) if isinstance(error, InputError) else f"{frame_path}: {type(error).__name__}: {error}"
        return [_row(frame_path, "", FAILED, None, 0.0, message)]


# ---------------------------------------------------------------- on the client


@dataclass
class BatchReport:
    """What a batch did: one row per frame (or per unreadable file), and where the summary is."""

    rows: list[dict]
    summary_path: Path

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)


def _write_summary(path: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def predict_batch(
    client: Client,
    model_path: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    device: str = "auto",
    probabilities: bool = False,
    precision: str = "auto",
) -> BatchReport:
    """Predict every frame file in ``inputs`` on ``client``'s workers; write ``OUT/summary.csv``.

    Paths are made absolute because remote workers need not share our working directory
    (they must share the filesystem). Raises InputError after writing the summary when any
    file failed, naming the first failure.
    """
    check_precision(precision)  # like a wrong model file: fail here once, not in every task
    model = Path(model_path).resolve()
    read_metadata(model)  # a wrong model file fails here once, not in every task
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = list(dict.fromkeys(str(path.resolve()) for path, _ in frame_files(inputs)))
    futures = client.map(
        predict_file, files, model_path=str(model), out_dir=str(out), device=device,
        probabilities=probabilities, precision=precision, pure=False,
    )
    rows: list[dict] = []
    for future in tqdm(as_completed(futures), total=len(futures), desc="predicting", unit="file"):
        rows.extend(future.result())
    rows.sort(key=lambda row: (row["file"], row["frame"]))
    report = BatchReport(rows, out / SUMMARY_NAME)
    _write_summary(report.summary_path, rows)
    failed = [row for row in rows if row["status"] == FAILED]
    if failed:
        raise InputError(
            f"{len(failed)} of {len(files)} file(s) failed, first: {failed[0]['error']} "
            f"(all listed in {report.summary_path})"
        )
    return report
