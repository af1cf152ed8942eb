"""Train a U-Net on labelled CCD frames: one function, used by the CLI and the napari widget.

Data flow: labelled frames -> normalised once -> random tiles (clusters oversampled) ->
geometric augmentation -> class-weighted cross-entropy (unlabelled 255 ignored) -> the best
checkpoint by validation loss, written atomically after every improving epoch, so a stopped or
crashed run keeps it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import __version__
from .atomic import atomic_write_text
from .augment import augment_pair, band_columns, build_augmentation, paste_band_strip, paste_hot_pixels
from .classes import CLASS_NAMES, CLASS_WEIGHTINGS, CLUSTER, HOT_PIXEL, N_CLASSES, UNLABELLED, class_weights
from .dataset import LabelledFrame
from .devices import describe_device, native_bfloat16, resolve_device
from .ddp import SingleProcess
from .errors import InputError
from .modelfile import MODEL_SUFFIX, load_model, model_file_path, save_model
from .normalise import DEFAULT_CLIP, choose_normalisation, normalisation_params, normalise
from .unet import build_unet
from .updates import EpochUpdate, LogUpdate, StepUpdate, Update

OPTIMISERS = ("adam", "adadelta")
HOT_VALUE_SAMPLE = 4096
MIN_LR_FRACTION = 0.01
"""The learning rate halves on plateaus down to this share of its start, no lower: a 55-minute run of
the default model had halved it to ~1e-9 by epoch 220 of 900, so its last 40 minutes learnt nothing."""


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved in the model file."""

    architecture: str = "small"
    epochs: int = 30
    steps_per_epoch: int = 32
    batch_size: int = 8
    tile_size: int = 128
    learning_rate: float = 1e-3
    optimiser: str = "adam"
    val_split: float = 0.2
    augment: bool = True
    cluster_oversample: float = 0.5
    """Share of training tiles centred on a cluster pixel: clusters are rare but matter most."""
    band_augment: float = 0.25
    """Share of training tiles (with ``augment``, from frames with a glowing band) given a 1–16 px
    strip of that band along one edge (:func:`augment.paste_band_strip`), so thin glow strips at a
    frame's edge are not taken for clusters."""
    hot_augment: float = 0.25
    """Share of training tiles (with ``augment``, from frames with hot pixels) given 1–8 single hot
    pixels or short segments with the frame's own hot-pixel values (:func:`augment.paste_hot_pixels`),
    so lone hot pixels are known where the training frames have them only in dense groups."""
    keep_readout_axes: bool = True
    """Augment without turning rows into columns (flips, scale and shift only; hot-pixel pastes along
    columns, band strips at the left or right edge): a CCD's serial trails run along rows and its hot
    columns along columns (:func:`augment.build_augmentation`). Off for images whose axes are alike,
    such as the original project's PNGs (:func:`keeps_readout_axes` decides from the label preset)."""
    class_weighting: str = "sqrt"
    """One of ``classes.CLASS_WEIGHTINGS``: ``inverse`` presence, its square root, or ``none``.

    ``sqrt`` by default: tiles already oversample clusters, and full inverse weights then
    over-predict rare classes (on simulated 1.6 e⁻ frames, cluster precision 0.31 vs 0.53).
    """
    early_stopping: int = 8
    plateau_patience: int = 3
    max_val_tiles: int = 64
    seed: int = 0
    device: str = "auto"
    max_minutes: float | None = None
    mixed_precision: bool = True
    """bfloat16 autocast where the device computes it natively (``devices.native_bfloat16``). On a
    2-core AVX512-BF16 CPU: 54 epochs in 4 min instead of 35, held-out cluster F1 0.762 vs 0.755."""

    def validate(self) -> None:
        """Refuse settings that would fail later inside torch."""
        if self.optimiser not in OPTIMISERS:
            raise InputError(f"optimiser {self.optimiser!r}: choose one of {', '.join(OPTIMISERS)}")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise InputError(f"class weighting {self.class_weighting!r}: choose one of {', '.join(CLASS_WEIGHTINGS)}")
        for name in ("cluster_oversample", "band_augment", "hot_augment"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"{name.replace('_', ' ')} {getattr(self, name)}: must be a share in [0, 1]")
        if not 0 <= self.val_split < 1:
            raise InputError(f"validation split {self.val_split}: must be in [0, 1)")
        for name in ("epochs", "steps_per_epoch", "batch_size", "tile_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', ' ')} must be at least 1")
        if self.learning_rate <= 0:
            raise InputError("learning rate must be positive")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TrainConfig:
        """A validated config from the CLI's arguments or the widget's fields, by field name.

        Other keys are ignored, as are fields given as None (they keep their defaults); a time
        limit of 0 means none, as the widget's spin box shows it.
        """
        names = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in options.items() if k in names and v is not None})
        config.max_minutes = config.max_minutes or None
        config.validate()
        return config


AXES_ALIKE_PRESETS = ("seed-v1",)
"""Label presets of images whose rows and columns are alike: the original project's PNGs hold hot
segments and glow strips both ways (60 along rows, 54 along columns in 20 images). Trained with the
axes kept, a model scores cluster F1 0.74 on realistic seed-v1 frames, 1.00 with turned tiles
(docs/benchmarks.md sections 2 and 7)."""


def keeps_readout_axes(label_preset: str | None) -> bool:
    """Whether training on frames labelled by ``label_preset`` keeps rows and columns apart: yes for
    CCD frames (None: truth or hand labels), no for :data:`AXES_ALIKE_PRESETS`."""
    return label_preset not in AXES_ALIKE_PRESETS


@dataclass
class TrainResult:
    """Where the model went and how the run ended."""

    model_path: Path
    history: list[dict]
    best_epoch: int
    device: str
    stopped: str | None = None
    """None when all epochs ran; else why it ended early (cancelled, time budget, early stopping)."""
    files: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------- data


@dataclass
class _Prepared:
    """A frame normalised once, with the positions of its cluster pixels for oversampling."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    cluster_pixels: np.ndarray
    band_columns: np.ndarray
    hot_values: np.ndarray
    """Up to HOT_VALUE_SAMPLE normalised values of the frame's hot pixels, for hot-pixel pastes."""


def _prepare(frames: Sequence[LabelledFrame], method: str, params: dict) -> list[_Prepared]:
    prepared = []
    for frame in frames:
        if choose_normalisation(frame.image) != method:
            raise InputError(
                f"{frame.name}: mixes colour images and CCD frames in one training set "
                f"(expected '{method}' data like the first frame)"
            )
        image = normalise(frame.image, method, **params, source=frame.name)
        hot = image[frame.labels == HOT_PIXEL]
        prepared.append(
            _Prepared(
                frame.name, image, frame.labels, np.argwhere(frame.labels == CLUSTER), band_columns(frame.labels),
                np.random.default_rng(0).choice(hot, min(len(hot), HOT_VALUE_SAMPLE), replace=False),
            )
        )
    return prepared


def split_frames(
    frames: Sequence[LabelledFrame], val_split: float, seed: int
) -> tuple[list[LabelledFrame], list[LabelledFrame]]:
    """Hold out whole frames for validation; a single frame is split by rows instead."""
    if val_split == 0:
        return list(frames), []
    if len(frames) >= 2:
        order = np.random.default_rng(seed).permutation(len(frames))
        n_val = min(len(frames) - 1, max(1, round(val_split * len(frames))))
        val = [frames[i] for i in sorted(order[:n_val])]
        train = [frames[i] for i in sorted(order[n_val:])]
        return train, val
    frame = frames[0]
    cut = max(1, int(round(frame.image.shape[0] * (1 - val_split))))
    if cut >= frame.image.shape[0]:
        return [frame], []
    top = LabelledFrame(f"{frame.name} (top)", frame.image[:cut], frame.labels[:cut])
    bottom = LabelledFrame(f"{frame.name} (bottom)", frame.image[cut:], frame.labels[cut:])
    return [top], [bottom]


def _crop(frame: _Prepared, top: int, left: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size window at (top, left); outside the frame: image 0, labels unlabelled."""
    image = np.zeros((size, size), np.float32)
    labels = np.full((size, size), UNLABELLED, np.uint8)
    rows, cols = frame.labels.shape
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + size, rows), min(left + size, cols)
    image[r0 - top : r1 - top, c0 - left : c1 - left] = frame.image[r0:r1, c0:c1]
    labels[r0 - top : r1 - top, c0 - left : c1 - left] = frame.labels[r0:r1, c0:c1]
    return image, labels


class _TileSampler:
    """Random training tiles; a share of them centred (with jitter) on a cluster pixel."""

    def __init__(self, frames: list[_Prepared], config: TrainConfig) -> None:
        self.frames = frames
        self.size = config.tile_size
        self.oversample = config.cluster_oversample
        self.band_augment = config.band_augment if config.augment else 0.0
        self.hot_augment = config.hot_augment if config.augment else 0.0
        self.rng = np.random.default_rng(config.seed)
        self.with_clusters = [i for i, f in enumerate(frames) if len(f.cluster_pixels)]
        # Margin so that affine transforms and crops see real pixels, not padding.
        self.context = int(self.size * 1.25) if config.augment else self.size
        self.keep_axes = config.keep_readout_axes
        self.transform = build_augmentation(self.size, config.seed, self.keep_axes) if config.augment else None

    def tile(self) -> tuple[np.ndarray, np.ndarray]:
        size = self.context
        if self.with_clusters and self.rng.random() < self.oversample:
            frame = self.frames[self.rng.choice(self.with_clusters)]
            centre = frame.cluster_pixels[self.rng.integers(len(frame.cluster_pixels))]
            jitter = self.rng.integers(-self.size // 3, self.size // 3 + 1, size=2)
            top, left = (centre + jitter - size // 2).tolist()
        else:
            frame = self.frames[self.rng.integers(len(self.frames))]
            rows, cols = frame.labels.shape
            top = int(self.rng.integers(0, max(rows - size, 0) + 1))
            left = int(self.rng.integers(0, max(cols - size, 0) + 1))
        image, labels = _crop(frame, top, left, size)
        if self.transform is not None:
            image, labels = augment_pair(self.transform, image, labels)
        if self.band_augment and len(frame.band_columns) and self.rng.random() < self.band_augment:
            image, labels = paste_band_strip(
                image, labels, (frame.image, frame.labels), frame.band_columns, self.rng, keep_axes=self.keep_axes
            )
        if self.hot_augment and len(frame.hot_values) and self.rng.random() < self.hot_augment:
            image, labels = paste_hot_pixels(image, labels, frame.hot_values, self.rng, keep_axes=self.keep_axes)
        return image, labels

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        tiles = [self.tile() for _ in range(n)]
        images = torch.from_numpy(np.stack([t[0] for t in tiles]))[:, None]
        labels = torch.from_numpy(np.stack([t[1] for t in tiles]).astype(np.int64))
        return images, labels


def _validation_tiles(frames: list[_Prepared], config: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """A fixed grid of validation tiles, capped in number, so each epoch costs the same."""
    size = config.tile_size
    tiles = []
    for frame in frames:
        rows, cols = frame.labels.shape
        for top in range(0, rows, size):
            for left in range(0, cols, size):
                tiles.append(_crop(frame, top, left, size))
    if len(tiles) > config.max_val_tiles:
        keep = np.random.default_rng(config.seed).choice(len(tiles), config.max_val_tiles, replace=False)
        tiles = [tiles[i] for i in sorted(keep)]
    return tiles


# ---------------------------------------------------------------- loss and metrics


def _confusion(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    pred = logits.argmax(1)
    keep = labels != UNLABELLED
    index = labels[keep] * N_CLASSES + pred[keep]
    return torch.bincount(index, minlength=N_CLASSES**2).reshape(N_CLASSES, N_CLASSES).cpu()


def scores_from_confusion(confusion: np.ndarray) -> dict[str, float]:
    """Pixel accuracy and per-class F1 from a confusion matrix (rows truth, columns prediction)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * tp / (confusion.sum(0) + confusion.sum(1)))
    total = confusion.sum()
    scores = {"accuracy": float(tp.sum() / total) if total else 0.0}
    scores.update({f"f1_{name}": float(v) for name, v in zip(CLASS_NAMES, f1)})
    return scores


# ---------------------------------------------------------------- the loop


def _write_history(history: list[dict], model_path: Path) -> list[Path]:
    """History as JSON and CSV beside the model, rewritten after every epoch."""
    stem = model_path.name.removesuffix(MODEL_SUFFIX) + "_history"
    json_path, csv_path = model_path.with_name(stem + ".json"), model_path.with_name(stem + ".csv")
    atomic_write_text(json_path, json.dumps(history, indent=1))
    columns = list(history[0]) if history else []
    lines = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in history]
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    return [json_path, csv_path]


class _Run:
    """State of one training run: model, optimiser, data and bookkeeping."""

    def __init__(self, frames, model_path, config, emit, init_model, metadata, dist):
        config.validate()
        self.config = config
        self.emit = emit
        self.dist = dist
        self.model_path = model_file_path(model_path)
        if init_model is not None and Path(init_model).resolve() == self.model_path.resolve():
            raise InputError(
                f"{self.model_path}: fine-tuning would overwrite the model it starts from; "
                "choose another output file"
            )
        self.device = dist.place(resolve_device(config.device))
        emit(LogUpdate(f"training on {describe_device(self.device)}"))
        torch.manual_seed(config.seed)

        if init_model is not None:
            self.model, base_meta = load_model(init_model, self.device)
            self.method = base_meta["normalisation"]
            self.norm_params = base_meta["normalisation_params"]
            emit(LogUpdate(f"fine-tuning {init_model}"))
        else:
            self.method = choose_normalisation(frames[0].image)
            self.norm_params = normalisation_params(self.method, clip=DEFAULT_CLIP, scale="frame", dark_as_noise=True)
            self.model = build_unet(config.architecture).to(self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.net = dist.wrap(self.model)  # what training steps run; self.model is what is saved

        train_frames, val_frames = split_frames(frames, config.val_split, config.seed)
        weights = class_weights([f.labels for f in train_frames], config.class_weighting)
        self.criterion = nn.CrossEntropyLoss(
            weight=torch.from_numpy(weights).to(self.device), ignore_index=UNLABELLED
        )
        train_data = _prepare(train_frames, self.method, self.norm_params)
        self.sampler = _TileSampler(train_data, replace(config, seed=dist.seed(config.seed)))
        val_source = val_frames or train_frames
        val_tiles = _validation_tiles(_prepare(val_source, self.method, self.norm_params), config)
        self.val_tiles = dist.shard(val_tiles)
        emit(
            LogUpdate(
                f"{len(train_frames)} training frame(s), {len(val_frames)} validation frame(s), "
                f"class weights {np.round(weights, 3).tolist()}"
            )
        )
        self.optimiser = self._optimiser()
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimiser, factor=0.5, patience=config.plateau_patience,
            min_lr=config.learning_rate * MIN_LR_FRACTION,
        )
        self.amp = config.mixed_precision and native_bfloat16(self.device)
        if self.amp:
            emit(LogUpdate(f"bfloat16 autocast: {self.device.type} computes it natively (weights stay float32)"))
        self.metadata = {
            **metadata,
            "bfloat16_autocast": self.amp,
            "normalisation": self.method,
            "normalisation_params": self.norm_params,
            "class_weights": weights.tolist(),
            "training": asdict(config),
            "package_version": __version__,
        }

    def _optimiser(self) -> torch.optim.Optimizer:
        params = self.model.parameters()
        if self.config.optimiser == "adadelta":
            return torch.optim.Adadelta(params, lr=self.config.learning_rate)
        return torch.optim.Adam(params, lr=self.config.learning_rate)

    def _to_device(self, images: torch.Tensor, labels: torch.Tensor):
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=True)

    def step(self) -> float:
        self.net.train()
        images, labels = self._to_device(*self.sampler.batch(self.config.batch_size))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = self.criterion(self.net(images).float(), labels)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        return float(loss.detach())

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        total_loss, n_pixels = 0.0, 0
        confusion = torch.zeros(N_CLASSES, N_CLASSES, dtype=torch.int64)
        size = self.config.batch_size
        for start in range(0, len(self.val_tiles), size):
            chunk = self.val_tiles[start : start + size]
            images = torch.from_numpy(np.stack([t[0] for t in chunk]))[:, None]
            labels = torch.from_numpy(np.stack([t[1] for t in chunk]).astype(np.int64))
            images, labels = self._to_device(images, labels)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.model(images).float()
            valid = int((labels != UNLABELLED).sum())
            if valid:
                total_loss += float(self.criterion(logits, labels)) * valid
                n_pixels += valid
            confusion += _confusion(logits, labels)
        totals = self.dist.sum(torch.tensor([total_loss, n_pixels], dtype=torch.float64))
        total_loss, n_pixels, confusion = float(totals[0]), int(totals[1]), self.dist.sum(confusion)
        scores = scores_from_confusion(confusion.numpy())
        return {"val_loss": total_loss / n_pixels if n_pixels else float("nan"), **{f"val_{k}": v for k, v in scores.items()}}

    def save(self, history: list[dict], best_epoch: int) -> None:
        if not self.dist.is_writer:
            return
        summary = dict(history[best_epoch - 1]) if best_epoch else {}
        save_model(self.model_path, self.model, {**self.metadata, "history_summary": summary})


def train(
    frames: Sequence[LabelledFrame],
    model_path: str | Path,
    config: TrainConfig | None = None,
    *,
    progress: Callable[[Update], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    init_model: str | Path | None = None,
    metadata: dict | None = None,
    distributed: SingleProcess | None = None,
) -> TrainResult:
    """Train (or fine-tune ``init_model``) and write the best model to ``model_path``.

    ``progress`` receives typed updates (a step, an epoch's scores, a log line);
    ``should_stop`` is polled every step: when it returns True the run ends after that step,
    keeping the best checkpoint. ``metadata`` (label preset, thresholds...) goes into the file.
    ``distributed`` is this process's rank under torchrun (see ddp.py); None: one process.
    """
    config = config or TrainConfig()
    emit = progress or (lambda update: None)
    stop_requested = should_stop or (lambda: False)
    if not frames:
        raise InputError("no training frames given")
    strategy = distributed or SingleProcess()
    run = _Run(list(frames), model_path, config, emit, init_model, metadata or {}, strategy)

    history: list[dict] = []
    best_loss, best_epoch, stale = float("inf"), 0, 0
    stopped: str | None = None
    started = time.monotonic()
    deadline = started + config.max_minutes * 60 if config.max_minutes else None
    files: list[Path] = []
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.monotonic()
        losses = []
        for step in range(1, config.steps_per_epoch + 1):
            losses.append(run.step())
            emit(StepUpdate(epoch, config.epochs, step, config.steps_per_epoch, losses[-1]))
            if stop_requested():
                stopped = "cancelled"
            elif deadline is not None and time.monotonic() > deadline:
                stopped = "time budget reached"
            stopped = run.dist.agree_stop(stopped)
            if stopped:
                break
        row = {"epoch": epoch, "train_loss": run.dist.mean(float(np.mean(losses))), **run.validate()}
        row["lr"] = run.optimiser.param_groups[0]["lr"]
        row["seconds"] = round(time.monotonic() - epoch_start, 3)
        history.append(row)
        improved = row["val_loss"] < best_loss or best_epoch == 0
        if improved:
            best_loss, best_epoch, stale = row["val_loss"], epoch, 0
            run.save(history, best_epoch)
        else:
            stale += 1
        if run.dist.is_writer:
            files = [run.model_path, *_write_history(history, run.model_path)]
        emit(EpochUpdate(epoch, config.epochs, row, improved))
        if stopped:
            break
        run.scheduler.step(row["val_loss"])
        if stale >= config.early_stopping:
            stopped = "early stopping"
            break
    emit(
        LogUpdate(
            f"best epoch {best_epoch} (val loss {best_loss:.4f}) saved to {run.model_path}"
            + (f"; stopped: {stopped}" if stopped else "")
        )
    )
    return TrainResult(run.model_path, history, best_epoch, str(run.device), stopped, files)
