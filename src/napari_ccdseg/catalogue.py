"""The calibrated cluster catalogue: one row per cluster with its charge, energy, position and shape.

What a physicist hands on is not a class map but this table (DAMIC-M's ``clustersRec``, CONNIE's
hit catalogue). It is built from any class map — a model's prediction, the ``physical`` preset's
labels, or a map corrected by hand — and a frame calibrated to electrons:

- **clusters** are the 8-connected components of the CLUSTER-class pixels (two pixels touching by
  an edge or a corner belong to the same cluster, :func:`metrics.cluster_instances`), so diffused
  points and diagonal tracks stay whole; two clusters whose pixels touch are one row;
- **charge** ``charge_e`` = Σ over the cluster's pixels of (pixel − zero-electron pedestal of its
  row) / gain, i.e. of ``Calibration.electrons(image)``, minus ``dark_e``, the dark current those
  pixels held on average (Σ of their rows' λ, ``Calibration.row_dark_e``: at ~1 e⁻/px a 20-pixel
  cluster of 50 e⁻ would otherwise read 40 % high); ``energy_kev = charge_e · ev_per_e / 1000``;
- **position and spread** are charge-weighted with the *positive* pixel charges as weights (noise
  pixels below the pedestal would otherwise pull the centroid away and can make a variance
  negative); a cluster with no positive pixel is weighted uniformly. Coordinates are 0-based image
  (column, row) of pixel centres: ``x`` is the column, ``y`` the row;
- **shape**: the principal axes of the same weighted second moments (``std_long``/``std_trans``,
  CONNIE's stdL/stdT), extent ``n_cols``/``n_rows`` (DAMIC-M's DX/DY), ``fill`` = npix / box area.

Columns, units and formulas are listed in docs/catalogue.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .atomic import atomic_path, atomic_write_text
from .calibrate import EV_PER_E_DEFAULT as EV_PER_E
from .calibrate import Calibration, calibrate_frame, write_calibration
from .classes import CLUSTER, GLOWING, HOT_PIXEL
from .errors import InputError
from .metrics import cluster_instances

if TYPE_CHECKING:
    from .io import Frame

CATALOGUE_COLUMNS: tuple[str, ...] = (
    "frame", "hdu", "cluster_id", "npix", "charge_e", "energy_kev", "x", "y",
    "sigma_x", "sigma_y", "qmax_e", "xmin", "xmax", "ymin", "ymax",
    "particle", "particle_score",
    "charge_err_e", "cov_xy", "std_long", "std_trans", "angle_deg",
    "n_cols", "n_rows", "fill", "qmax_x", "qmax_y", "nearest_px", "dark_e",
)
"""Every column of the catalogue, in file order (units in docs/catalogue.md)."""

CALIBRATION_EXCLUDED = (CLUSTER, HOT_PIXEL, GLOWING)
"""Classes whose pixels the calibration histogram leaves out: only background pixels form the comb."""

ROOT_TREE = "clustersRec"
"""Name of the ROOT tree, after DAMIC-M's reconstruction output."""

_DTYPES = {
    "frame": object, "hdu": np.int64, "cluster_id": np.int64, "npix": np.int64,
    "xmin": np.int64, "xmax": np.int64, "ymin": np.int64, "ymax": np.int64,
    "n_cols": np.int64, "n_rows": np.int64, "qmax_x": np.int64, "qmax_y": np.int64,
    "particle": object,
}
_TEXT_COLUMNS = ("frame", "particle")


# ---------------------------------------------------------------- the table of one frame


def empty_table() -> pd.DataFrame:
    """A catalogue with every column and no row (a frame without clusters)."""
    return pd.DataFrame({name: pd.Series(dtype=_DTYPES.get(name, np.float64)) for name in CATALOGUE_COLUMNS})


def cluster_table(
    electrons: np.ndarray,
    labels: np.ndarray,
    *,
    frame: str,
    hdu: int,
    ev_per_e: float = EV_PER_E,
    noise_e: float = float("nan"),
    dark_e: np.ndarray | None = None,
    allow_empty: bool = False,
) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per cluster of ``labels`` (CLUSTER pixels, 8-connected) measured on ``electrons``.

    ``electrons`` is the frame in e⁻ with each row's zero-electron pedestal subtracted
    (``Calibration.electrons``); ``dark_e`` (rows,) each row's dark current λ, e⁻/px
    (``Calibration.row_dark_e``; None: none known), subtracted from the charge; ``noise_e`` (read
    noise, e⁻) gives ``charge_err_e`` = √(noise_e²·npix + dark), the read noise and the dark
    current's Poisson spread in the cluster's pixels. Returns the table and a uint32
    instance map whose values are ``cluster_id`` (0 outside clusters). A class map with no cluster
    pixel is an InputError naming ``frame`` unless ``allow_empty`` (then the table has no row).
    """
    electrons, labels = _checked(electrons, labels, frame, ev_per_e)
    instances = cluster_instances(labels).view(np.uint32)  # ids >= 0: same bits, no copy
    flat = np.flatnonzero(instances)
    if flat.size == 0:
        if not allow_empty:
            where = f"{frame} (HDU {hdu})" if hdu else str(frame)
            raise InputError(f"{where}: the class map has no cluster pixel (class {CLUSTER}); nothing to catalogue")
        return empty_table(), instances
    charge = electrons.ravel()[flat].astype(np.float64)
    if not np.isfinite(charge).all():
        raise InputError(f"{frame}: NaN or infinite pixel values inside clusters")
    ids = instances.ravel()[flat].astype(np.int64) - 1
    rows, cols = np.divmod(flat, labels.shape[1])
    columns = _measure(ids, rows, cols, charge)
    n = columns["npix"].size
    dark = np.zeros(n) if dark_e is None else np.bincount(ids, _row_values(dark_e, labels.shape[0], frame)[rows], minlength=n)
    columns["charge_e"] = columns["charge_e"] - dark
    table = pd.DataFrame(
        {
            "frame": np.full(n, str(frame), dtype=object),
            "hdu": np.full(n, int(hdu), dtype=np.int64),
            "cluster_id": np.arange(1, n + 1, dtype=np.int64),
            **columns,
            "energy_kev": columns["charge_e"] * (ev_per_e / 1000.0),
            "charge_err_e": np.sqrt(float(noise_e) ** 2 * columns["npix"] + dark),
            "dark_e": dark,
            "particle": np.full(n, "", dtype=object),
            "particle_score": np.full(n, np.nan),
        }
    )
    return table[list(CATALOGUE_COLUMNS)], instances


def _row_values(values: np.ndarray, rows: int, frame: str) -> np.ndarray:
    """One finite value per row of the image, or InputError naming the frame."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size != rows:
        raise InputError(f"{frame}: expected one dark current per row ({rows}), got {values.size} values")
    if not np.isfinite(values).all():
        raise InputError(f"{frame}: the dark current per row holds NaN or infinite values")
    return values


def _checked(electrons: np.ndarray, labels: np.ndarray, frame: str, ev_per_e: float) -> tuple[np.ndarray, np.ndarray]:
    """2-D arrays of the same size and a positive pair energy, or InputError naming the frame."""
    electrons, labels = np.asarray(electrons), np.asarray(labels)
    if electrons.ndim != 2 or labels.ndim != 2:
        raise InputError(
            f"{frame}: the image and class map must be 2-D, got shapes {electrons.shape} and {labels.shape}"
        )
    if electrons.shape != labels.shape:
        raise InputError(
            f"{frame}: the class map is {labels.shape[0]}×{labels.shape[1]} but the image is "
            f"{electrons.shape[0]}×{electrons.shape[1]}"
        )
    if not np.isfinite(ev_per_e) or ev_per_e <= 0:
        raise InputError(f"{frame}: the energy per electron-hole pair must be > 0 eV, got {ev_per_e}")
    return electrons, labels


def _measure(ids: np.ndarray, rows: np.ndarray, cols: np.ndarray, charge: np.ndarray) -> dict[str, np.ndarray]:
    """Per-cluster sums by np.bincount (ids 0..n-1, one entry per cluster pixel); see the module docstring."""
    npix = np.bincount(ids)
    n = npix.size
    total = np.bincount(ids, charge, minlength=n)
    positive = np.clip(charge, 0.0, None)
    no_positive = np.bincount(ids, positive, minlength=n) <= 0
    weight = np.where(no_positive[ids], 1.0, positive)
    sum_w = np.bincount(ids, weight, minlength=n)
    x = np.bincount(ids, weight * cols, minlength=n) / sum_w
    y = np.bincount(ids, weight * rows, minlength=n) / sum_w
    dx, dy = cols - x[ids], rows - y[ids]
    var_x = np.bincount(ids, weight * dx * dx, minlength=n) / sum_w
    var_y = np.bincount(ids, weight * dy * dy, minlength=n) / sum_w
    cov = np.bincount(ids, weight * dx * dy, minlength=n) / sum_w
    half_sum, half_diff = (var_x + var_y) / 2, (var_x - var_y) / 2
    root = np.hypot(half_diff, cov)
    # Pixels of one cluster, together, brightest last: group maxima and extremes in one pass.
    order = np.lexsort((charge, ids))
    starts = np.concatenate(([0], np.cumsum(npix)[:-1]))
    brightest = order[starts + npix - 1]
    xmin = np.minimum.reduceat(cols[order], starts)
    xmax = np.maximum.reduceat(cols[order], starts)
    ymin = np.minimum.reduceat(rows[order], starts)
    ymax = np.maximum.reduceat(rows[order], starts)
    n_cols, n_rows = xmax - xmin + 1, ymax - ymin + 1
    return {
        "nearest_px": _nearest_distance(x, y),
        "npix": npix.astype(np.int64),
        "charge_e": total,
        "x": x,
        "y": y,
        "sigma_x": np.sqrt(var_x),
        "sigma_y": np.sqrt(var_y),
        "qmax_e": charge[brightest],
        "xmin": xmin.astype(np.int64),
        "xmax": xmax.astype(np.int64),
        "ymin": ymin.astype(np.int64),
        "ymax": ymax.astype(np.int64),
        "cov_xy": cov,
        "std_long": np.sqrt(half_sum + root),
        "std_trans": np.sqrt(np.clip(half_sum - root, 0.0, None)),
        "angle_deg": np.degrees(0.5 * np.arctan2(2 * cov, var_x - var_y)),
        "n_cols": n_cols.astype(np.int64),
        "n_rows": n_rows.astype(np.int64),
        "fill": npix / (n_cols * n_rows),
        "qmax_x": cols[brightest].astype(np.int64),
        "qmax_y": rows[brightest].astype(np.int64),
    }


def _nearest_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance from each centroid to the nearest other one in the image (NaN when alone): a pile-up cut."""
    from scipy.spatial import cKDTree

    if x.size < 2:
        return np.full(x.size, np.nan)
    points = np.column_stack([x, y])
    distance, _ = cKDTree(points).query(points, k=2)
    return distance[:, 1]


# ---------------------------------------------------------------- files


def write_catalogue(out_dir: str | Path, table: pd.DataFrame) -> list[Path]:
    """``clusters.csv`` and ``clusters.parquet`` in ``out_dir``, each written atomically."""
    out = Path(out_dir)
    csv_path, parquet_path = out / "clusters.csv", out / "clusters.parquet"
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(parquet_path) as tmp:
        table.to_parquet(tmp, engine="pyarrow", index=False)
    return [csv_path, parquet_path]


def read_catalogue(path: str | Path) -> pd.DataFrame:
    """A catalogue written by :func:`write_catalogue` (``.csv`` or ``.parquet``), InputError naming a bad file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such catalogue file")
    try:
        if path.suffix.lower() == ".parquet":
            table = pd.read_parquet(path, engine="pyarrow")
        else:
            table = _read_csv(path)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable cluster catalogue ({error})") from error
    missing = [name for name in CATALOGUE_COLUMNS if name not in table.columns]
    if missing:
        raise InputError(f"{path}: not a cluster catalogue, missing column(s) {', '.join(missing)}")
    return table


def _read_csv(path: Path) -> pd.DataFrame:
    """A catalogue CSV with its dtypes: text columns stay text (an empty particle is "", a frame may
    be called "NA"); every other column, the known ones and extras such as ``depth_um``, reads empty
    cells as NaN, so a column of floats with gaps stays float and an empty catalogue keeps its dtypes."""
    header = pd.read_csv(path, nrows=0).columns
    text = [name for name in _TEXT_COLUMNS if name in header]
    numeric = [name for name in header if name not in _TEXT_COLUMNS]
    table = pd.read_csv(
        path, dtype=dict.fromkeys(text, str), keep_default_na=False,
        na_values={name: ["", "nan", "NaN"] for name in numeric},
    )
    if table.empty:
        table = table.astype({name: _DTYPES.get(name, np.float64) for name in header})
    return table


def write_instances(path: str | Path, instances: np.ndarray) -> Path:
    """The uint32 instance map as a zlib-compressed TIFF (mostly zeros: ~200× smaller), atomically."""
    import tifffile

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        tifffile.imwrite(
            handle, np.asarray(instances, dtype=np.uint32), compression="zlib", compressionargs={"level": 1}
        )
    return Path(path)


def write_root(path: str | Path, table: pd.DataFrame) -> Path:
    """The catalogue as a ROOT file with one ``clustersRec`` tree, one branch per column (needs uproot)."""
    try:
        import uproot
    except ImportError as error:
        raise InputError(f"{path}: writing ROOT files needs uproot: pip install napari-ccdseg[root]") from error
    branches = {}
    for name in table.columns:
        column = table[name].to_numpy()
        if column.dtype.kind in "OUT":  # text as fixed-width unicode, one character wide at least
            column = np.asarray(column, dtype=str) if column.size else np.empty(0, dtype="U1")
        branches[name] = column
    with atomic_path(path) as tmp:
        with uproot.recreate(tmp) as root_file:
            root_file[ROOT_TREE] = branches
    return Path(path)


# ---------------------------------------------------------------- one frame, end to end


class ClassMaps:
    """The class map of each frame from one source: a model (the bundled default when none is
    given), an auto-label preset, or label maps ``<stem>_labels.<png|tif|tiff|npy>`` in a folder."""

    def __init__(
        self,
        *,
        model: str | Path | None = None,
        preset: str | None = None,
        labels_dir: str | Path | None = None,
        device: str = "cpu",
    ) -> None:
        given = [name for name, value in (("a model", model), ("a preset", preset), ("a labels folder", labels_dir))
                 if value is not None]
        if len(given) > 1:
            raise InputError(f"give one source of class maps, not {' and '.join(given)}")
        self.preset = preset
        self.labels_dir = Path(labels_dir) if labels_dir is not None else None
        self._model = None
        if self.labels_dir is not None and not self.labels_dir.is_dir():
            raise InputError(f"{self.labels_dir}: no such labels folder")
        if not given:
            from .bundled import DEFAULT_MODEL

            model = DEFAULT_MODEL
        if model is not None:
            from .bundled import resolve_model
            from .devices import resolve_device
            from .modelfile import load_model

            self.model_path = resolve_model(model)
            self._model = load_model(self.model_path, resolve_device(device))

    @property
    def description(self) -> str:
        """Where the class maps came from, for the summary."""
        if self._model is not None:
            return f"model {self.model_path.name}"
        if self.preset is not None:
            return f"auto-label preset {self.preset}"
        return f"label maps in {self.labels_dir}"

    def __call__(self, frame: Frame, stem: str) -> np.ndarray:
        """The class map of ``frame``, whose outputs are named ``stem`` (``io.output_stem``)."""
        if self._model is not None:
            from .predict import predict_frame

            model, meta = self._model
            return predict_frame(model, meta, frame.data, source=frame.name).labels
        if self.preset is not None:
            from .autolabel import label_frame

            return label_frame(frame.data, self.preset, name=frame.name, header=frame.header)
        from .io import LABEL_SUFFIXES, labels_path_for, read_label_map

        path = labels_path_for(self.labels_dir / stem, stem)
        if path is None:
            raise InputError(
                f"{frame.name}: no label map {stem}_labels{{{','.join(LABEL_SUFFIXES)}}} in {self.labels_dir}"
            )
        return read_label_map(path, frame.data.shape, frame=frame.name)


@dataclass
class FrameCatalogue:
    """The catalogue of one frame (one amplifier) and what it was built from."""

    table: pd.DataFrame
    instances: np.ndarray
    """uint32, values cluster_id (0 outside clusters)."""
    calibration: Calibration


def frame_file_name(frame: Frame) -> str:
    """The ``frame`` of the catalogue and calibration: the file name, or the frame's name when not from a file."""
    return frame.source.name if frame.source is not None else frame.name


def catalogue_frame(
    frame: Frame,
    labels: np.ndarray,
    *,
    calibration: Calibration | None = None,
    gain: float | None = None,
    previous: Calibration | None = None,
    ev_per_e: float = EV_PER_E,
    allow_empty: bool = False,
) -> FrameCatalogue:
    """Calibrate ``frame`` (unless ``calibration`` is given) with the class map's clusters, hot pixels
    and glowing pixels left out of the histogram (glow adds a second, larger dark current that the
    comb of one Poisson λ cannot describe), then catalogue the clusters of ``labels`` and name each
    one's particle type, with the depth of point-like ones (``particles.add_particle_columns``), so
    every caller — CLI, widget, scripts — gets the same table.

    ``gain`` and ``previous`` are the calibration's fallbacks when the peaks are not resolved
    (see ``calibrate.calibrate_frame``).
    """
    from .particles import add_particle_columns

    name = frame_file_name(frame)
    _checked(frame.data, labels, frame.name, ev_per_e)  # before a calibration that would be wasted
    if calibration is None:
        calibration = calibrate_frame(
            frame.data, frame=name, hdu=frame.hdu, extname=frame.extname, header=frame.header,
            exclude=np.isin(labels, CALIBRATION_EXCLUDED), gain=gain, previous=previous,
        )
    electrons = calibration.electrons(frame.data)
    table, instances = cluster_table(
        electrons, labels, frame=name, hdu=frame.hdu, ev_per_e=ev_per_e,
        noise_e=calibration.noise_e, dark_e=calibration.row_dark_e(), allow_empty=allow_empty,
    )
    table = add_particle_columns(table, electrons, instances, noise_e=calibration.noise_e)
    return FrameCatalogue(table, instances, calibration)


def concat_tables(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One catalogue from per-frame tables (an empty catalogue from none or only empty ones)."""
    kept = [table for table in tables if len(table)]
    return pd.concat(kept, ignore_index=True) if kept else empty_table()


def write_catalogue_folder(
    out_dir: str | Path,
    tables: Sequence[pd.DataFrame],
    calibrations: Sequence[Calibration],
    pixels: Sequence[int],
    *,
    source: str,
    ev_per_e: float = EV_PER_E,
    root: bool = False,
) -> list[Path]:
    """Everything but the instance maps: the catalogue files, calibration.json, spectrum.png,
    summary.md and, with ``root``, clusters.root (``pixels``: each amplifier image's size)."""
    from .catalogue_report import plot_spectrum, summary_markdown

    out = Path(out_dir)
    table = concat_tables(tables)
    paths = write_catalogue(out, table)
    paths.append(write_calibration(out / "calibration.json", list(calibrations)))
    paths.append(plot_spectrum(table, out / "spectrum.png", ev_per_e=ev_per_e))
    summary = summary_markdown(table, calibrations, pixels, source=source, ev_per_e=ev_per_e)
    paths.append(atomic_write_text(out / "summary.md", summary))
    if root:
        paths.append(write_root(out / "clusters.root", table))
    return paths
