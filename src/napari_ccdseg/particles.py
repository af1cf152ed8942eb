"""Particle identification and depth of clusters: what made each cluster, and how deep it was.

A catalogue by type is what a physicist reads: diffusion-limited points for the dark-matter and
neutrino spectrum, muons for alignment and charge transfer, alphas for radio-purity, few-electron
hits and serial-register trails as backgrounds. Each cluster is described by shape features
(charge, size, PCA length and width, extents, how much charge sits in one row or one pixel …,
:func:`cluster_features`) and typed by a gradient-boosted tree ensemble trained on simulated,
domain-randomised frames (``scripts/train_particle_model.py``). The ensemble ships as plain arrays
in a safetensors file and is evaluated here with numpy: no pickle, no scikit-learn at run time.
:func:`hand_cut_types` is the baseline physicists use today (thin and long → muon, …).

Depth: a point-like cluster's lateral spread σ comes from how deep the charge was made,
σ² = −A ln(1 − b z) (the DAMIC model the simulator uses). :func:`fit_point_spread` fits a
pixel-integrated 2-D Gaussian to each cluster's pixels in electrons; :func:`depth_um` inverts the
model with an uncertainty. Everything works on an image in electrons (pedestal subtracted,
divided by the gain) and an instance map (0 none, k the cluster with id k).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import erf

from .errors import InputError
from .noise import pedestal_noise

PARTICLE_TYPES = ("point", "muon", "electron", "alpha", "trail", "few-electron")
"""Every type a cluster can be given; the simulator's truth kinds carry the same names."""
NO_KIND = "none"
"""True kind of a found cluster that holds no simulated event (noise, dark current, defect)."""
FRAGMENT = "fragment"
"""True kind of a found cluster holding a minor piece of an event found elsewhere (a stray
halo electron of an alpha, a piece of a trail broken by noise)."""

MODEL_DIR = Path(__file__).parent / "models"
MODEL_FILE = MODEL_DIR / "particles.trees"
"""The bundled classifier: safetensors format, named apart from the U-Net ``*.safetensors`` files
so ``ccdseg models`` and ``resolve_model`` never mistake it for a segmentation model."""

FEATURE_NAMES = (
    "charge_e", "npix", "qmax_e", "qmax_share", "mean_e", "n_rows", "n_cols", "row_share",
    "col_share", "std_l", "std_t", "geo_l", "geo_t", "elongation", "length_px", "charge_per_px_length",
    "fill", "width_px", "horizontal", "sigma_row", "sigma_col", "skew_l", "kurt_l", "level_e",
    "net_charge_e", "noise_e",
)
"""Columns of :func:`cluster_features`, in the order the model reads them."""

# ---------------------------------------------------------------- input checks


def _check_inputs(electrons: np.ndarray, instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 image and int64 instance map of the same 2-D shape, or InputError saying why."""
    image = np.asarray(electrons)
    labels = np.asarray(instances)
    if image.ndim != 2 or image.size == 0 or image.dtype.kind not in "biuf":
        raise InputError(f"particles: electrons must be a non-empty 2-D numeric image, got {image.dtype} {image.shape}")
    if labels.shape != image.shape:
        raise InputError(f"particles: instance map {labels.shape} and electrons image {image.shape} differ in size")
    if labels.dtype.kind not in "biu":
        raise InputError(f"particles: instance map must hold integer cluster ids, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InputError("particles: instance map holds negative ids (0 is no cluster, k the cluster with id k)")
    inside = labels > 0
    if not np.isfinite(image[inside]).all():
        raise InputError("particles: electrons image holds NaN or infinite values inside clusters")
    return image.astype(np.float64, copy=False), labels.astype(np.int64, copy=False)


def cluster_ids(instances: np.ndarray) -> np.ndarray:
    """The ids present in an instance map, ascending (the row order of every per-cluster result)."""
    ids = np.unique(np.asarray(instances))
    return ids[ids > 0]


def frame_noise_e(electrons: np.ndarray) -> float:
    """Read noise σ (e⁻) of a frame in electrons, robustly (MAD of its pedestal)."""
    return float(pedestal_noise(np.asarray(electrons, dtype=np.float32))[1])


# ---------------------------------------------------------------- features


def cluster_features(electrons: np.ndarray, instances: np.ndarray, *, noise_e: float | None = None) -> pd.DataFrame:
    """Shape features of every cluster, one row per id (ascending, index ``cluster_id``).

    Charge-weighted quantities use the pixel charge clipped at 0 (noise can make edge pixels
    negative); ``geo_*`` are the unweighted pixel-shape spreads. ``std_l``/``std_t`` are the PCA
    spreads along and across the main axis (px), ``length_px`` the extent along that axis,
    ``row_share``/``col_share`` the largest share of charge in one row/column, ``fill`` the pixel
    share of the bounding box, ``horizontal`` |cos| of the main axis to the rows, ``skew_l`` and
    ``kurt_l`` the |skewness| and kurtosis of the charge along the main axis, ``level_e`` the
    median of the free pixels around the cluster (glow, dark current) and ``net_charge_e`` the
    charge above that level, ``noise_e`` the
    frame's read noise (measured when not given), which tells the model how faint edges are lost.
    All computed with bincounts over the cluster pixels, no loop over clusters.
    """
    image, labels = _check_inputs(electrons, instances)
    noise = frame_noise_e(image) if noise_e is None else float(noise_e)
    flat = np.flatnonzero(labels)
    ids = cluster_ids(labels)
    n = ids.size
    if n == 0:
        return pd.DataFrame(columns=list(FEATURE_NAMES), index=pd.Index([], name="cluster_id", dtype=np.int64))
    k = np.searchsorted(ids, labels.ravel()[flat])
    r, c = np.divmod(flat, labels.shape[1])
    r = r.astype(np.float64)
    c = c.astype(np.float64)
    q = image.ravel()[flat]
    w = np.maximum(q, 0.0)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(k, values, minlength=n)

    npix = total(np.ones_like(q))
    charge = total(q)
    wsum = np.maximum(total(w), 1e-9)
    qmax = np.full(n, -np.inf)
    np.maximum.at(qmax, k, q)
    rmin, rmax, cmin, cmax = (np.full(n, fill) for fill in (np.inf, -np.inf, np.inf, -np.inf))
    np.minimum.at(rmin, k, r)
    np.maximum.at(rmax, k, r)
    np.minimum.at(cmin, k, c)
    np.maximum.at(cmax, k, c)
    n_rows, n_cols = rmax - rmin + 1, cmax - cmin + 1

    def spreads(weights: np.ndarray, norm: np.ndarray) -> tuple[np.ndarray, ...]:
        mr, mc = total(weights * r) / norm, total(weights * c) / norm
        dr, dc = r - mr[k], c - mc[k]
        vrr = total(weights * dr * dr) / norm
        vcc = total(weights * dc * dc) / norm
        vrc = total(weights * dr * dc) / norm
        half = 0.5 * (vrr + vcc)
        root = np.sqrt(np.maximum(0.25 * (vrr - vcc) ** 2 + vrc**2, 0.0))
        major, minor = half + root, np.maximum(half - root, 0.0)
        angle = 0.5 * np.arctan2(2 * vrc, vcc - vrr)  # main axis angle from the rows' direction
        along = dr * np.sin(angle[k]) + dc * np.cos(angle[k])
        return np.sqrt(major), np.sqrt(minor), np.sqrt(vrr), np.sqrt(vcc), angle, along

    std_l, std_t, sigma_row, sigma_col, _, along_w = spreads(w, wsum)
    geo_l, geo_t, _, _, angle, along = spreads(np.ones_like(q), npix)
    # shape of the charge profile along the track: an electron ends in a blob (skewed, peaked),
    # a muon deposits evenly (flat: kurtosis 1.8 of a uniform line)
    scale = np.maximum(std_l, 1e-6)
    skew_l = np.where(std_l > 1e-6, np.abs(total(w * along_w**3) / wsum) / scale**3, 0.0)
    kurt_l = np.where(std_l > 1e-6, total(w * along_w**4) / wsum / scale**4, 0.0)
    # extent along the main axis: projected pixel range + 1 (one pixel's width)
    amin, amax = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(amin, k, along)
    np.maximum.at(amax, k, along)
    length = amax - amin + 1.0
    row_share = _largest_share(k, r.astype(np.int64), w, wsum)
    col_share = _largest_share(k, c.astype(np.int64), w, wsum)
    level = _ring_level(image, labels, ids)
    table = pd.DataFrame(
        {
            "charge_e": charge,
            "npix": npix,
            "qmax_e": qmax,
            "qmax_share": qmax / np.maximum(np.abs(charge), 1e-9),
            "mean_e": charge / npix,
            "n_rows": n_rows,
            "n_cols": n_cols,
            "row_share": row_share,
            "col_share": col_share,
            "std_l": std_l,
            "std_t": std_t,
            "geo_l": geo_l,
            "geo_t": geo_t,
            "elongation": geo_t / np.maximum(geo_l, 1e-9),
            "length_px": length,
            "charge_per_px_length": charge / length,
            "fill": npix / (n_rows * n_cols),
            "width_px": npix / length,
            "horizontal": np.abs(np.cos(angle)),
            "sigma_row": sigma_row,
            "sigma_col": sigma_col,
            "skew_l": skew_l,
            "kurt_l": kurt_l,
            "level_e": level,
            "net_charge_e": charge - npix * level,
            "noise_e": np.full(n, noise),
        },
        index=pd.Index(ids, name="cluster_id"),
    )
    return table[list(FEATURE_NAMES)]


_RING_PX = 2
"""Width of the ring around a cluster whose median is its local level (glow, dark current)."""


def _ring_level(image: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per cluster, the median charge of the free pixels within 2 px of it (0 where there are
    none): the level under it, which glow or a dark-current ramp lift by electrons per pixel.
    A free pixel near several clusters counts for the one with the largest id."""
    from scipy import ndimage as ndi

    near = ndi.maximum_filter(labels, size=2 * _RING_PX + 1)
    ring = (labels == 0) & (near > 0)
    values = image[ring]
    k = np.searchsorted(ids, near[ring])
    order = np.lexsort((values, k))
    counts = np.bincount(k, minlength=ids.size)
    starts = np.cumsum(counts) - counts
    sorted_values = np.append(values[order], 0.0)  # one spare so empty rings index safely
    low = sorted_values[starts + np.maximum(counts - 1, 0) // 2]
    high = sorted_values[starts + counts // 2]
    return np.where(counts > 0, 0.5 * (low + high), 0.0)


def _largest_share(k: np.ndarray, line: np.ndarray, w: np.ndarray, wsum: np.ndarray) -> np.ndarray:
    """Per cluster, the largest share of its (clipped) charge found in one row or column."""
    keys, inverse = np.unique(k * (int(line.max()) + 1) + line, return_inverse=True)
    per_line = np.bincount(inverse, w)
    best = np.zeros(wsum.size)
    np.maximum.at(best, keys // (int(line.max()) + 1), per_line)
    return best / wsum


# ---------------------------------------------------------------- hand cuts (the baseline)


@dataclass(frozen=True)
class HandCuts:
    """Thresholds of the baseline, as physicists cut today (CONNIE/DAMIC style)."""

    few_electron_max_e: float = 12.0
    """Clusters holding at most this charge are few-electron hits (2–10 e⁻ plus a dark electron)."""
    point_max_std_l: float = 1.1
    """Diffusion spreads a point by at most ~1 px (675 µm, 15 µm pixels); wider is a track."""
    point_max_e: float = 8000.0
    """About 30 keV: brighter compact clusters are short electron tracks, not points."""
    alpha_min_e: float = 2e5
    """An alpha deposits MeV (≥ 0.75 MeV here): far above any point or track in the frame."""
    alpha_min_elongation: float = 0.5
    trail_min_row_share: float = 0.95
    trail_min_cols: int = 4
    muon_min_length_px: float = 8.0
    muon_max_std_t: float = 1.2
    muon_max_elongation: float = 0.3


def hand_cut_types(features: pd.DataFrame, cuts: HandCuts | None = None) -> np.ndarray:
    """Type per cluster by fixed shape cuts (a baseline, not the model); the last rule that holds
    wins: wide or bright → electron; thin and long → muon; all in one row, wide → trail; huge and
    round → alpha; few electrons → few-electron; none of these → point."""
    cuts = cuts or HandCuts()
    f = features
    result = np.full(len(f), "point", dtype=object)
    rules = [
        ("electron", (f["std_l"] > cuts.point_max_std_l) | (f["charge_e"] > cuts.point_max_e)),
        ("muon", (f["length_px"] >= cuts.muon_min_length_px) & (f["std_t"] <= cuts.muon_max_std_t)
         & (f["elongation"] <= cuts.muon_max_elongation)),
        ("trail", (f["row_share"] >= cuts.trail_min_row_share) & (f["n_cols"] >= cuts.trail_min_cols)),
        ("alpha", (f["charge_e"] >= cuts.alpha_min_e) & (f["elongation"] >= cuts.alpha_min_elongation)),
        ("few-electron", f["charge_e"] <= cuts.few_electron_max_e),
    ]
    for name, chosen in rules:
        result[np.asarray(chosen, dtype=bool)] = name
    return result.astype(str)


# ---------------------------------------------------------------- the learned model


@dataclass
class TreeEnsemble:
    """A gradient-boosted tree ensemble as flat arrays (all trees' nodes concatenated).

    Node i: leaf if ``is_leaf[i]``, else go to ``left[i]`` when x[feature[i]] <= threshold[i]
    (or when x is NaN and ``nan_left[i]``), to ``right[i]`` otherwise. Tree t starts at
    ``roots[t]`` and adds its leaf value to the raw score of class ``tree_class[t]``.
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    is_leaf: np.ndarray
    nan_left: np.ndarray
    roots: np.ndarray
    tree_class: np.ndarray
    baseline: np.ndarray
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    card: dict

    ARRAYS = (
        "feature", "threshold", "left", "right", "value", "is_leaf", "nan_left", "roots", "tree_class", "baseline",
    )

    def raw_scores(self, x: np.ndarray) -> np.ndarray:
        """Summed leaf values per (sample, class). Every (sample, tree) pair descends at once, and
        pairs that reached a leaf drop out, so deep trees cost only where they are deep."""
        x = np.asarray(x, dtype=np.float64)
        n, trees = x.shape[0], self.roots.size
        node = np.tile(self.roots, n)
        sample = np.repeat(np.arange(n), trees)
        active = np.arange(node.size)
        while active.size:
            current = node[active]
            inner = ~self.is_leaf[current]
            active, current = active[inner], current[inner]
            value = x[sample[active], self.feature[current]]
            go_left = np.where(np.isnan(value), self.nan_left[current], value <= self.threshold[current])
            node[active] = np.where(go_left, self.left[current], self.right[current])
        one_hot = self.tree_class[:, None] == np.arange(len(self.classes))[None, :]
        return self.baseline[None, :] + self.value[node].reshape(n, trees) @ one_hot

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (softmax of the raw scores), columns in ``classes`` order."""
        scores = self.raw_scores(x)
        scores -= scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> Path:
        """Arrays into a safetensors file and the card (classes, features, provenance) next to it."""
        from safetensors.numpy import save_file

        from .atomic import atomic_path, atomic_write_text

        path = Path(path)
        arrays = {name: np.ascontiguousarray(getattr(self, name)) for name in self.ARRAYS}
        arrays["is_leaf"] = arrays["is_leaf"].astype(np.uint8)
        arrays["nan_left"] = arrays["nan_left"].astype(np.uint8)
        with atomic_path(path) as temporary:
            save_file(arrays, str(temporary))
        card = {**self.card, "classes": list(self.classes), "feature_names": list(self.feature_names)}
        atomic_write_text(path.with_suffix(".json"), json.dumps(card, indent=1))
        return path


def load_particle_model(path: str | Path | None = None) -> TreeEnsemble:
    """The classifier from a safetensors file and its ``.json`` card (the bundled one by default)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path) if path is not None else MODEL_FILE
    card_path = path.with_suffix(".json")
    try:
        arrays = load_file(str(path))
        card = json.loads(card_path.read_text())
    except (OSError, SafetensorError, ValueError) as error:
        raise InputError(f"{path}: cannot read the particle model or its card {card_path.name} ({error})") from None
    missing = [name for name in TreeEnsemble.ARRAYS if name not in arrays]
    if missing or "classes" not in card or "feature_names" not in card:
        absent = ", ".join(missing) or "classes/feature_names in the card"
        raise InputError(f"{path}: not a particle model (missing {absent})")
    unknown = [name for name in card["feature_names"] if name not in FEATURE_NAMES]
    if unknown:
        raise InputError(f"{path}: the model reads features this version does not compute: {', '.join(unknown)}")
    nodes = arrays["left"].size
    consistent = (
        all(arrays[name].size == nodes for name in ("feature", "threshold", "right", "value", "is_leaf", "nan_left"))
        and arrays["feature"].max(initial=0) < len(card["feature_names"])
        and max(arrays["left"].max(initial=0), arrays["right"].max(initial=0), arrays["roots"].max(initial=0)) < nodes
        and arrays["tree_class"].size == arrays["roots"].size
        and arrays["tree_class"].max(initial=0) < len(card["classes"]) == arrays["baseline"].size
    )
    if not consistent:
        raise InputError(f"{path}: the particle model's arrays do not fit together (damaged file?)")
    return TreeEnsemble(
        feature=arrays["feature"].astype(np.int64),
        threshold=arrays["threshold"].astype(np.float64),
        left=arrays["left"].astype(np.int64),
        right=arrays["right"].astype(np.int64),
        value=arrays["value"].astype(np.float64),
        is_leaf=arrays["is_leaf"].astype(bool),
        nan_left=arrays["nan_left"].astype(bool),
        roots=arrays["roots"].astype(np.int64),
        tree_class=arrays["tree_class"].astype(np.int64),
        baseline=arrays["baseline"].astype(np.float64),
        classes=tuple(card["classes"]),
        feature_names=tuple(card["feature_names"]),
        card=card,
    )


_BUNDLED: TreeEnsemble | None = None


def bundled_particle_model() -> TreeEnsemble:
    """The bundled classifier, read once per process."""
    global _BUNDLED
    if _BUNDLED is None:
        _BUNDLED = load_particle_model(MODEL_FILE)
    return _BUNDLED


def classify_features(features: pd.DataFrame, model: TreeEnsemble | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Type and probability of that type per feature row (see :func:`classify`)."""
    model = model if model is not None else bundled_particle_model()
    if len(features) == 0:
        return np.array([], dtype=str), np.array([], dtype=np.float64)
    proba = model.predict_proba(features[list(model.feature_names)].to_numpy(np.float64))
    best = proba.argmax(axis=1)
    return np.asarray(model.classes)[best].astype(str), proba[np.arange(len(best)), best]


def classify(
    electrons: np.ndarray,
    instances: np.ndarray,
    model: TreeEnsemble | None = None,
    *,
    noise_e: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Particle type (one of :data:`PARTICLE_TYPES`) and its probability for every cluster.

    ``electrons``: the frame in e⁻ (pedestal subtracted, divided by the gain); ``instances``:
    cluster ids (0 none). Results follow the ids in ascending order (:func:`cluster_ids`);
    ``model`` defaults to the bundled one, ``noise_e`` to the frame's measured read noise.
    """
    return classify_features(cluster_features(electrons, instances, noise_e=noise_e), model)


# ---------------------------------------------------------------- depth from diffusion


@dataclass(frozen=True)
class Diffusion:
    """The detector's diffusion model σ² = −A ln(1 − b z); defaults are the simulator's (DAMIC)."""

    a_um2: float = 216.2
    b_per_um: float = 8.86e-4
    thickness_um: float = 675.0
    pixel_size_um: float = 15.0

    def __post_init__(self) -> None:
        for name in ("a_um2", "b_per_um", "thickness_um", "pixel_size_um"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise InputError(f"diffusion model: {name} must be a positive number, got {value!r}")
        if self.b_per_um * self.thickness_um >= 1:
            raise InputError(
                f"diffusion model: b·thickness must stay below 1 (σ diverges at z = 1/b), "
                f"got b={self.b_per_um} /µm, thickness={self.thickness_um} µm"
            )

    @property
    def max_sigma_px(self) -> float:
        """Spread of charge made at the back surface (the largest a point can have), px."""
        return float(np.sqrt(-self.a_um2 * np.log1p(-self.b_per_um * self.thickness_um))) / self.pixel_size_um


def depth_um(
    sigma_px: np.ndarray | float,
    sigma_err_px: np.ndarray | float = 0.0,
    diffusion: Diffusion | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Depth z (µm from the pixel side) and its uncertainty from a lateral spread σ ± δσ (px).

    z = (1 − exp(−σ²/A)) / b, clipped to [0, thickness]. The error is half the depth range that
    σ − δσ … σ + δσ spans (σ − δσ floored at 0), which stays honest where a linear propagation
    fails: near z = 0, where dz/dσ vanishes, and at the back surface, where z is clipped.
    """
    model = diffusion or Diffusion()
    sigma = np.asarray(sigma_px, dtype=np.float64)
    err = np.asarray(sigma_err_px, dtype=np.float64)
    if not (np.isfinite(sigma).all() and np.isfinite(err).all()) or (sigma < 0).any() or (err < 0).any():
        raise InputError("depth_um: spreads and their errors must be finite and >= 0")

    def depth(s_px: np.ndarray) -> np.ndarray:
        s_um = s_px * model.pixel_size_um
        return np.clip((1.0 - np.exp(-(s_um**2) / model.a_um2)) / model.b_per_um, 0.0, model.thickness_um)

    return depth(sigma), 0.5 * (depth(sigma + err) - depth(np.maximum(sigma - err, 0.0)))


STAMP_PX = 7
"""Side of the fitted stamp (px): ±3 px holds ±3σ of the deepest point in a 15 µm-pixel CCD."""
_FIT_ITERATIONS = 12
_MIN_SIGMA_PX = 0.05
_OUTLIER_CHI2 = 25.0
"""A pixel 5 standard deviations off the half-converged model is not this cluster's charge."""


SPREAD_AXES = ("row", "both")
"""Which fitted spread gives the depth: ``row`` (σ across the rows, which serial CTI never widens)
or ``both`` (the inverse-variance mean of σ_row and σ_col: √2 more precise on a CCD without CTI)."""


@dataclass
class SpreadFit:
    """Per cluster: fitted charge (e⁻), centre (row, col, px) and spreads σ ± error (px) along the
    column direction (``sigma_row``: spread of the row coordinate) and along the rows (``sigma_col``)."""

    charge_e: np.ndarray
    row: np.ndarray
    col: np.ndarray
    sigma_row: np.ndarray
    sigma_row_err: np.ndarray
    sigma_col: np.ndarray
    sigma_col_err: np.ndarray

    def spread(self, axis: str = "row") -> tuple[np.ndarray, np.ndarray]:
        """σ ± error (px) for the depth, from the row spread or from both (see :data:`SPREAD_AXES`)."""
        if axis not in SPREAD_AXES:
            raise InputError(f"depth: spread axis must be one of {', '.join(SPREAD_AXES)}, got {axis!r}")
        if axis == "row":
            return self.sigma_row, self.sigma_row_err
        w_row, w_col = 1 / np.maximum(self.sigma_row_err, 1e-9) ** 2, 1 / np.maximum(self.sigma_col_err, 1e-9) ** 2
        sigma = (w_row * self.sigma_row + w_col * self.sigma_col) / (w_row + w_col)
        return sigma, 1 / np.sqrt(w_row + w_col)


def fit_point_spread(
    electrons: np.ndarray,
    instances: np.ndarray,
    ids: np.ndarray | None = None,
    *,
    noise_e: float | None = None,
) -> SpreadFit:
    """Fit a pixel-integrated 2-D Gaussian (σ_row, σ_col) to each cluster's 7 × 7 stamp (in e⁻).

    Two spreads because serial charge-transfer inefficiency trails charge along the rows only,
    widening σ_col but never σ_row. The model N·Px(col)·Py(row) with P the Gaussian integrated
    over each pixel (erf), so the
    pixelisation needs no 1/12 px² correction. The cluster's pixels and their 8-neighbours take
    part (the faint halo below any threshold holds the spread), other clusters' pixels do not,
    and pixels 5σ off the half-converged fit are dropped (hot pixels, a neighbour's tail); the
    median of the stamp's other free pixels is the local level (glow) taken off first. Weighted least
    squares with variance noise² + model (the charge is Poisson in each pixel), all clusters in
    one batched Gauss–Newton; errors from the inverse of the normal matrix, so they grow at low
    charge and high noise.
    """
    image, labels = _check_inputs(electrons, instances)
    ids = cluster_ids(labels) if ids is None else np.asarray(ids, dtype=np.int64)
    noise = frame_noise_e(image) if noise_e is None else float(noise_e)
    n = ids.size
    if n == 0:
        empty = np.zeros(0)
        return SpreadFit(*(empty,) * 7)
    # charge-weighted centres from the cluster pixels
    flat = np.flatnonzero(np.isin(labels, ids))
    k = np.searchsorted(ids, labels.ravel()[flat])
    r, c = np.divmod(flat, labels.shape[1])
    w = np.maximum(image.ravel()[flat], 0.0) + 1e-9
    wsum = np.bincount(k, w, minlength=n)
    centre_r = np.bincount(k, w * r, minlength=n) / wsum
    centre_c = np.bincount(k, w * c, minlength=n) / wsum
    half = STAMP_PX // 2
    top = np.rint(centre_r).astype(np.int64) - half
    left = np.rint(centre_c).astype(np.int64) - half
    offsets = np.arange(STAMP_PX)
    rr = top[:, None] + offsets  # (n, S) rows of each stamp
    cc = left[:, None] + offsets
    inside = ((rr >= 0) & (rr < image.shape[0]))[:, :, None] & ((cc >= 0) & (cc < image.shape[1]))[:, None, :]
    rr_c = np.clip(rr, 0, image.shape[0] - 1)
    cc_c = np.clip(cc, 0, image.shape[1] - 1)
    data = image[rr_c[:, :, None], cc_c[:, None, :]]
    owner = labels[rr_c[:, :, None], cc_c[:, None, :]]
    own = owner == ids[:, None, None]
    ring = np.zeros_like(own)  # the cluster and its 8-neighbours: the halo, not the neighbours' halos
    padded = np.pad(own, ((0, 0), (1, 1), (1, 1)))
    for dr in range(3):
        for dc in range(3):
            ring |= padded[:, dr : dr + STAMP_PX, dc : dc + STAMP_PX]
    use = inside & ring & ((owner == 0) | own)
    around = inside & ~ring & (owner == 0)  # the local level under glow or dark current
    with warnings.catch_warnings():  # a stamp with no free pixel has no level: 0
        warnings.simplefilter("ignore", RuntimeWarning)
        background = np.nanmedian(np.where(around, data, np.nan).reshape(n, -1), axis=1)
    data = np.where(use, data - np.nan_to_num(background)[:, None, None], 0.0)
    # parameters: N, row, col, σ_row, σ_col
    params = np.stack([np.maximum(wsum, 1.0), centre_r, centre_c, np.full(n, 0.5), np.full(n, 0.5)], axis=1)
    var_floor = max(noise, 0.05) ** 2
    with np.errstate(all="ignore"):  # stamps that pin no parameter give inf/NaN steps, dropped below
        params, use = _gauss_newton(params, data, use, rr, cc, var_floor, half)
        model, jac = _gaussian_stamp(params, rr, cc)
        weight = use / (var_floor + np.maximum(model, 0.0))
        normal = np.einsum("nrcp,nrcq->npq", jac * weight[..., None], jac)
        # a direction the data do not pin (σ of a point split between two rows trades off against
        # its centre) must come out with a huge error, not the zero a pseudo-inverse would give
        ridge = 1e-12 * np.trace(normal, axis1=1, axis2=2)[:, None, None] * np.eye(5)[None]
        err = np.sqrt(np.maximum(np.diagonal(np.linalg.inv(normal + ridge + 1e-300), axis1=1, axis2=2), 0.0))
    err[use.sum(axis=(1, 2)) < 6] = np.nan  # fewer pixels than parameters + 1: no spread to speak of
    err[~np.isfinite(err)] = np.nan
    return SpreadFit(params[:, 0], params[:, 1], params[:, 2], params[:, 3], err[:, 3], params[:, 4], err[:, 4])


def _gauss_newton(
    params: np.ndarray, data: np.ndarray, use: np.ndarray, rr: np.ndarray, cc: np.ndarray, var_floor: float, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """Batched weighted Gauss–Newton of N, row, col, σ_row, σ_col; returns them and the pixels kept."""
    use = use.copy()
    for iteration in range(_FIT_ITERATIONS):
        model, jac = _gaussian_stamp(params, rr, cc)
        weight = use / (var_floor + np.maximum(model, 0.0))
        if iteration == _FIT_ITERATIONS // 2:  # drop outlying pixels (a hot pixel, a neighbour's tail) once
            use &= (data - model) ** 2 * weight <= _OUTLIER_CHI2
            weight = use / (var_floor + np.maximum(model, 0.0))
        resid = (data - model) * weight
        normal = np.einsum("nrcp,nrcq->npq", jac * weight[..., None], jac)
        grad = np.einsum("nrcp,nrc->np", jac, resid)
        step = (np.linalg.pinv(normal) @ grad[..., None])[..., 0]  # pinv: a stamp may pin no parameter
        step[~np.isfinite(step).all(axis=1)] = 0.0
        step[:, 0] = np.maximum(step[:, 0], -0.5 * params[:, 0])
        step[:, 1:3] = np.clip(step[:, 1:3], -1.0, 1.0)
        step[:, 3:] = np.clip(step[:, 3:], -0.5 * params[:, 3:], 0.5 * params[:, 3:])
        params = params + step
        params[:, 3:] = np.clip(params[:, 3:], _MIN_SIGMA_PX, half)
    return params, use


def _pixel_integrals(centre: np.ndarray, sigma: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, ...]:
    """Share of a 1-D Gaussian in each pixel of ``grid`` and its derivatives by centre and σ."""
    s = sigma[:, None]
    a = (grid - 0.5 - centre[:, None]) / s
    b = (grid + 0.5 - centre[:, None]) / s
    share = 0.5 * (erf(b / np.sqrt(2)) - erf(a / np.sqrt(2)))
    pdf_a = np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi)
    pdf_b = np.exp(-0.5 * b * b) / np.sqrt(2 * np.pi)
    d_centre = -(pdf_b - pdf_a) / s
    d_sigma = -(b * pdf_b - a * pdf_a) / s
    return share, d_centre, d_sigma


def _gaussian_stamp(params: np.ndarray, rr: np.ndarray, cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model stamps N·Py·Px (n, S, S) and their Jacobian (n, S, S, 5) by N, row, col, σ_row, σ_col."""
    amp, row, col, sigma_row, sigma_col = params.T
    py, dpy_r, dpy_s = _pixel_integrals(row, sigma_row, rr.astype(np.float64))
    px, dpx_c, dpx_s = _pixel_integrals(col, sigma_col, cc.astype(np.float64))
    a = amp[:, None, None]
    model = a * py[:, :, None] * px[:, None, :]
    jac = np.stack(
        [
            py[:, :, None] * px[:, None, :],
            a * dpy_r[:, :, None] * px[:, None, :],
            a * py[:, :, None] * dpx_c[:, None, :],
            a * dpy_s[:, :, None] * px[:, None, :],
            a * py[:, :, None] * dpx_s[:, None, :],
        ],
        axis=-1,
    )
    return model, jac


def spread_map(fit: SpreadFit, shape: tuple[int, int]) -> np.ndarray:
    """Expected event charge (e⁻) per pixel of an image of ``shape`` from fitted clusters: each
    cluster's pixel-integrated Gaussian over its 7 × 7 stamp (clusters whose fit failed add nothing)."""
    params = np.stack([fit.charge_e, fit.row, fit.col, fit.sigma_row, fit.sigma_col], axis=1)
    params = params[np.isfinite(params).all(axis=1)]
    out = np.zeros(shape)
    if not len(params):
        return out
    half = STAMP_PX // 2
    rr = np.rint(params[:, 1]).astype(np.int64)[:, None] - half + np.arange(STAMP_PX)
    cc = np.rint(params[:, 2]).astype(np.int64)[:, None] - half + np.arange(STAMP_PX)
    with np.errstate(all="ignore"):
        model, _ = _gaussian_stamp(params, rr, cc)
    rows = np.broadcast_to(rr[:, :, None], model.shape)
    cols = np.broadcast_to(cc[:, None, :], model.shape)
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1]) & np.isfinite(model)
    np.add.at(out, (rows[inside], cols[inside]), np.maximum(model[inside], 0.0))
    return out


def point_depths(
    electrons: np.ndarray,
    instances: np.ndarray,
    ids: np.ndarray | None = None,
    *,
    diffusion: Diffusion | None = None,
    noise_e: float | None = None,
    axis: str = "row",
) -> pd.DataFrame:
    """Depth (µm) ± error and the fitted spreads of the given clusters (all by default), by id.

    Meant for point-like clusters; a track's spread says nothing about one depth. ``axis``: which
    spread gives the depth (:data:`SPREAD_AXES`; ``row`` is immune to serial CTI). Clusters whose
    stamp holds fewer than 6 usable pixels get NaN (no spread can be fitted).
    """
    image, labels = _check_inputs(electrons, instances)
    ids = cluster_ids(labels) if ids is None else np.asarray(ids, dtype=np.int64)
    fit = fit_point_spread(image, labels, ids, noise_e=noise_e)
    sigma, sigma_err = fit.spread(axis)
    fitted = np.isfinite(sigma) & np.isfinite(sigma_err)
    depth, err = np.full(ids.size, np.nan), np.full(ids.size, np.nan)
    depth[fitted], err[fitted] = depth_um(sigma[fitted], sigma_err[fitted], diffusion)
    return pd.DataFrame(
        {"sigma_row_px": fit.sigma_row, "sigma_col_px": fit.sigma_col, "sigma_px": sigma, "sigma_err_px": sigma_err,
         "depth_um": depth, "depth_err_um": err},
        index=pd.Index(ids, name="cluster_id"),
    )


# ---------------------------------------------------------------- truth matching and confusion


def dominant_truth(found: np.ndarray, truth: np.ndarray, electrons: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each found cluster (ascending id): the true instance holding most of its charge
    (0 when none), that instance's share of the matched charge, how many true instances hold at
    least 10 % of it (> 1: merged clusters), and whether it is the found cluster holding most of
    that instance's charge (False: a fragment, such as a stray halo electron or a broken trail)."""
    found = np.asarray(found, dtype=np.int64)
    truth = np.asarray(truth, dtype=np.int64)
    ids = cluster_ids(found)
    best = np.zeros(ids.size, np.int64)
    share = np.zeros(ids.size)
    merged = np.zeros(ids.size, np.int64)
    main = np.zeros(ids.size, bool)
    flat = np.flatnonzero(found)
    k = np.searchsorted(ids, found.ravel()[flat])
    t = truth.ravel()[flat]
    hit = t > 0
    if not hit.any():
        return best, share, merged, main
    w = np.maximum(np.asarray(electrons, dtype=np.float64).ravel()[flat], 0.0) + 1e-6
    base = int(truth.max()) + 1
    keys, inverse = np.unique(k[hit] * base + t[hit], return_inverse=True)
    charge = np.bincount(inverse, w[hit])
    key_k, key_t = np.divmod(keys, base)
    total = np.bincount(key_k, charge, minlength=ids.size)
    by_found = np.lexsort((charge, key_k))
    last = np.r_[key_k[by_found][1:] != key_k[by_found][:-1], True]
    best[key_k[by_found][last]] = key_t[by_found][last]
    share[key_k[by_found][last]] = charge[by_found][last] / total[key_k[by_found][last]]
    merged[:] = np.bincount(key_k[charge >= 0.1 * total[key_k]], minlength=ids.size)
    by_truth = np.lexsort((charge, key_t))
    last = np.r_[key_t[by_truth][1:] != key_t[by_truth][:-1], True]
    main_of = np.full(base, -1, np.int64)
    main_of[key_t[by_truth][last]] = key_k[by_truth][last]
    main[:] = main_of[best] == np.arange(ids.size)
    main &= best > 0
    return best, share, merged, main


def particle_confusion(true_kinds, predicted, types: tuple[str, ...] = PARTICLE_TYPES) -> pd.DataFrame:
    """Counts of (true kind × predicted type); rows "fragment" and "none" collect found clusters
    that are minor pieces of an event or hold none.

    Rows and columns list every type (plus ``none`` as a row when present) so tables from
    different runs line up; unknown names are refused.
    """
    true_kinds = np.asarray(true_kinds, dtype=str)
    predicted = np.asarray(predicted, dtype=str)
    if true_kinds.shape != predicted.shape:
        raise InputError(f"particle_confusion: {true_kinds.size} true kinds but {predicted.size} predictions")
    rows = list(types) + [extra for extra in (FRAGMENT, NO_KIND) if (true_kinds == extra).any()]
    bad = sorted(set(true_kinds) - set(rows)) + sorted(set(predicted) - set(types))
    if bad:
        raise InputError(f"particle_confusion: unknown type(s) {', '.join(bad)}; known: {', '.join(types)}")
    table = pd.crosstab(pd.Categorical(true_kinds, rows), pd.Categorical(predicted, list(types)), dropna=False)
    table.index.name, table.columns.name = "true kind", "predicted"
    return table


def sum_confusions(confusions) -> pd.DataFrame:
    """Several frames' :func:`particle_confusion` tables added up, rows in the usual order (the
    types, then ``fragment`` and ``none`` where any frame has them)."""
    confusions = list(confusions)
    if not confusions:
        return particle_confusion([], [])
    total = confusions[0].astype(np.int64)
    for table in confusions[1:]:
        total = total.add(table, fill_value=0).astype(np.int64)
    extra = [row for row in (FRAGMENT, NO_KIND) if row in total.index]
    total = total.reindex(index=list(PARTICLE_TYPES) + extra, columns=list(PARTICLE_TYPES), fill_value=0)
    total.index.name, total.columns.name = "true kind", "predicted"
    return total


def type_scores(confusion: pd.DataFrame) -> pd.DataFrame:
    """Per type: clusters of that true kind, recall and precision (NaN where undefined)."""
    counts = confusion.loc[[t for t in confusion.columns if t in confusion.index]]
    true_total = counts.sum(axis=1)
    predicted_total = confusion.sum(axis=0)
    diagonal = np.array([counts.loc[t, t] for t in counts.index], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = diagonal / true_total.to_numpy()
        precision = diagonal / predicted_total.loc[counts.index].to_numpy()
    return pd.DataFrame(
        {"clusters": true_total.to_numpy(), "recall": recall, "precision": precision}, index=counts.index
    )


def accuracy(confusion: pd.DataFrame) -> float:
    """Share of clusters with a true kind that got that type (clusters of no event left out)."""
    counts = confusion.loc[[t for t in confusion.columns if t in confusion.index]]
    total = counts.to_numpy().sum()
    return float(sum(counts.loc[t, t] for t in counts.index) / total) if total else float("nan")


def format_confusion(confusion: pd.DataFrame) -> str:
    """Markdown table: true kind per row, predicted type per column, then recall and precision."""
    scores = type_scores(confusion)
    header = ["true \\ predicted", *confusion.columns, "recall", "precision"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind in confusion.index:
        cells = [str(int(v)) for v in confusion.loc[kind]]
        if kind in scores.index:
            rec, prec = scores.loc[kind, "recall"], scores.loc[kind, "precision"]
            cells += ["—" if np.isnan(rec) else f"{rec:.3f}", "—" if np.isnan(prec) else f"{prec:.3f}"]
        else:
            cells += ["", ""]
        lines.append("| " + " | ".join([kind, *cells]) + " |")
    lines.append(f"\naccuracy on clusters of a true kind: {accuracy(confusion):.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- labelled clusters from simulation

FOUND_BY = ("physical", "truth")
"""How clusters are found in a simulated frame: the ``physical`` threshold preset (what a
catalogue of a real frame holds) or the 8-connected components of the truth class map."""


def truth_calibration(image: np.ndarray, metadata: dict):
    """A Calibration of a simulated frame from its known gain, noise and dark current (no fit):
    what a perfect ``calibrate_frame`` would give. The row pedestals are measured (they follow
    the drift); the frame counts as resolving electrons below ``calibrate.RESOLVED_MAX_NOISE_E``."""
    from .calibrate import RESOLVED_MAX_NOISE_E, Calibration
    from .noise import row_pedestals

    config = metadata["config"]
    adu = metadata.get("units") == "adu"
    gain = float(config["gain_adu_per_e"]) if adu else 1.0
    rows = row_pedestals(np.asarray(image, dtype=np.float32))
    resolved = float(config["read_noise_e"]) < RESOLVED_MAX_NOISE_E
    return Calibration(
        frame="simulated", hdu=0, extname=None, gain_adu_per_e=gain, gain_err=0.0,
        noise_e=float(config["read_noise_e"]), noise_err=0.0,
        dark_current_e_per_px=float(config["dark_current_e"]) if resolved else float("nan"), dark_err=0.0,
        pedestal_adu=float(np.median(rows)), pedestal_err=0.0, method="peaks" if resolved else "given",
        row_pedestal_adu=rows, dark_bands=[],
    )


def electrons_from_metadata(image: np.ndarray, metadata: dict) -> np.ndarray:
    """A simulated frame in e⁻ by its :func:`truth_calibration`: minus its row pedestals (drift
    included), divided by the recorded gain."""
    return truth_calibration(image, metadata).electrons(np.asarray(image))


def true_kinds(
    found: np.ndarray, truth_instances: np.ndarray, electrons: np.ndarray, clusters: list[dict]
) -> pd.DataFrame:
    """True kind of every found cluster (ascending id) from the simulator's instances and cluster list.

    A found cluster takes the kind of the true event holding most of its charge when it is the
    found cluster holding most of that event (``fragment`` when another one does, ``none`` when
    it holds no event: noise, dark current, a defect); ``merged`` counts the events holding
    ≥ 10 % of it, ``energy_kev``/``depth_um`` are the dominant event's truth.
    """
    best, share, merged, main = dominant_truth(found, truth_instances, electrons)
    lookup = {
        key: np.array([c[key] for c in clusters] or [0], dtype=object) for key in ("kind", "energy_kev", "depth_um")
    }
    has = best > 0
    index = np.maximum(best - 1, 0)
    return pd.DataFrame(
        {
            "kind": np.where(main, lookup["kind"][index], np.where(has, FRAGMENT, NO_KIND)).astype(str),
            "energy_kev": np.where(has, lookup["energy_kev"][index], np.nan).astype(np.float64),
            "depth_um": np.where(has, lookup["depth_um"][index], np.nan).astype(np.float64),
            "truth_share": share,
            "merged": merged,
        },
        index=pd.Index(cluster_ids(found), name="cluster_id"),
    )


def simulated_clusters(frame, found_by: str = "physical") -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Features of the clusters found in a simulated frame, each with its truth (:func:`true_kinds`).

    The ``physical`` preset gets the frame's :func:`truth_calibration`, as a catalogue run gets
    ``calibrate_frame``'s. Returns the table, the electrons image and the found instance map (ids =
    the table's index).
    """
    from .autolabel import label_frame
    from .metrics import cluster_instances

    if found_by not in FOUND_BY:
        raise InputError(f"simulated_clusters: found_by must be one of {', '.join(FOUND_BY)}, got {found_by!r}")
    calibration = truth_calibration(frame.image, frame.metadata)
    electrons = calibration.electrons(np.asarray(frame.image))
    labels = label_frame(frame.image, "physical", calibration=calibration) if found_by == "physical" else frame.labels
    found = cluster_instances(labels)
    features = cluster_features(electrons, found)
    truth = true_kinds(found, frame.instances, electrons, frame.metadata["clusters"])
    return pd.concat([features, truth], axis=1), electrons, found


def frame_particle_confusion(
    image: np.ndarray,
    labels: np.ndarray,
    truth_instances: np.ndarray,
    metadata: dict,
    model: TreeEnsemble | None = None,
) -> pd.DataFrame:
    """Particle confusion (true kind × predicted type) of the clusters of a class map (a model's
    prediction) on a simulated frame, whose truth is ``truth_instances`` and its ``_meta.json``
    ``metadata``. Sum frames with ``DataFrame.add(other, fill_value=0)``; print with
    :func:`format_confusion`."""
    from .metrics import cluster_instances

    electrons = electrons_from_metadata(image, metadata)
    found = cluster_instances(labels)
    predicted, _ = classify(electrons, found, model)
    truth = true_kinds(found, truth_instances, electrons, metadata["clusters"])
    return particle_confusion(truth["kind"], predicted)


def add_particle_columns(
    table: pd.DataFrame,
    electrons: np.ndarray,
    instances: np.ndarray,
    *,
    noise_e: float | None = None,
    model: TreeEnsemble | None = None,
    diffusion: Diffusion | None = None,
) -> pd.DataFrame:
    """Fill a catalogue's ``particle``/``particle_score`` and add ``depth_um``/``depth_err_um``
    (point-typed clusters only, NaN for the rest). Rows must follow the instance ids ascending,
    as :func:`catalogue.cluster_table` makes them."""
    ids = cluster_ids(instances)
    if len(table) != ids.size:
        raise InputError(f"particles: the table has {len(table)} rows but the instance map {ids.size} clusters")
    noise = None if noise_e is None or not np.isfinite(noise_e) else float(noise_e)
    features = cluster_features(electrons, instances, noise_e=noise)
    types, scores = classify_features(features, model)
    out = table.copy()
    out["particle"] = types.astype(object)
    out["particle_score"] = scores
    depth = np.full(ids.size, np.nan)
    err = np.full(ids.size, np.nan)
    points = types == "point"
    if points.any():
        fit = point_depths(electrons, instances, ids[points], diffusion=diffusion, noise_e=features["noise_e"].iloc[0])
        depth[points], err[points] = fit["depth_um"].to_numpy(), fit["depth_err_um"].to_numpy()
    out["depth_um"], out["depth_err_um"] = depth, err
    return out
