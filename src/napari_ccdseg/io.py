"""Reading CCD frames and label maps from disk, and writing them back safely.

Formats: FITS (every image HDU, including fpack/``.fz`` tile-compressed and gzipped ``.fits.gz``
files), TIFF, PNG and NPY.
Every failure a user can cause raises :class:`~napari_ccdseg.errors.InputError` naming the file,
so the CLI and the napari reader can show it as is.

A dataset folder holds frames ``X.<ext>`` with optional class label maps
``X_labels.<png|tif|tiff|npy>`` beside them (and possibly ``X_instances.*`` and ``X_clusters.tif``
maps, which are not frames).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from .atomic import atomic_path
from .classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL, UNLABELLED
from .errors import InputError
from .noise import check_finite

FITS_SUFFIXES: tuple[str, ...] = (".fits.fz", ".fits", ".fit", ".fts", ".fz", ".fits.gz", ".fit.gz", ".fts.gz")
"""gzip-compressed FITS (how archived frames are often kept) is read by astropy as it is."""
FRAME_SUFFIXES: tuple[str, ...] = (*FITS_SUFFIXES, ".npy", ".tif", ".tiff", ".png")
LABEL_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".npy")
LABEL_VALUES: frozenset[int] = frozenset({BACKGROUND, GLOWING, HOT_PIXEL, CLUSTER, UNLABELLED})
_COMPANION_TAGS: tuple[str, ...] = ("_labels", "_instances", "_clusters")  # _clusters: ccdseg catalogue's instance maps
# Keys that describe a FITS file's layout, not the frame: never copied between headers.
_STRUCTURAL_KEYS = frozenset(
    {"SIMPLE", "XTENSION", "BITPIX", "EXTEND", "PCOUNT", "GCOUNT", "BZERO", "BSCALE", "BLANK",
     "CHECKSUM", "DATASUM", "EXTNAME", "EXTVER", "INHERIT"}
)


@dataclass
class Frame:
    """One image read from disk: a 2-D float32 CCD frame, or an (H, W, 3|4) colour image as stored."""

    data: np.ndarray
    name: str
    source: Path | None = None
    header: dict = field(default_factory=dict)
    hdu: int = 0
    """Index of the FITS HDU the frame came from (0 for other formats)."""
    extname: str | None = None
    """The HDU's EXTNAME, where it has one."""


# ----------------------------------------------------------------------------- paths


def _matching_suffix(path: Path, suffixes: tuple[str, ...]) -> str | None:
    """The longest suffix of ``suffixes`` the file name ends with (case-insensitive), so ``.fits.fz`` wins."""
    name = path.name.lower()
    matches = [s for s in suffixes if name.endswith(s)]
    return max(matches, key=len) if matches else None


def frame_stem(path: str | Path) -> str:
    """File name without its frame suffix: ``run1.fits.fz`` -> ``run1``."""
    path = Path(path)
    suffix = _matching_suffix(path, FRAME_SUFFIXES)
    return path.name[: -len(suffix)] if suffix else path.stem


def output_stem(frame_path: str | Path, frame_name: str, frames_in_file: int) -> str:
    """Stem of the files written for one frame: ``X`` for ``X.fits``, a safe form of
    ``X[AMP2]`` for each extension of a multi-extension file (so outputs never collide)."""
    return frame_stem(frame_path) if frames_in_file == 1 else safe_stem(frame_name)


def safe_stem(name: str) -> str:
    """A file-name-safe form of a frame or layer name, e.g. ``run1[AMP2]`` -> ``run1_AMP2``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "frame"


def is_frame_file(path: str | Path) -> bool:
    """True for a file name a frame can be read from (by suffix only)."""
    return _matching_suffix(Path(path), FRAME_SUFFIXES) is not None


def labels_path_for(frame_path: str | Path, stem: str | None = None) -> Path | None:
    """The existing label map ``X_labels.<png|tif|tiff|npy>`` beside ``X.<ext>``, first in that order.

    ``stem`` overrides ``X``: each extension of a multi-extension file has its own map, named by
    ``output_stem`` as ``label`` and ``predict`` write them.
    """
    frame_path = Path(frame_path)
    stem = stem or frame_stem(frame_path)
    for suffix in LABEL_SUFFIXES:
        candidate = frame_path.with_name(f"{stem}_labels{suffix}")
        if candidate.is_file():
            return candidate
    return None


def _is_companion(path: Path) -> bool:
    """Label and instance maps share the frame suffixes but are not frames."""
    return frame_stem(path).endswith(_COMPANION_TAGS)


def find_dataset(folder: str | Path) -> list[tuple[Path, Path | None]]:
    """Frames in ``folder`` (not recursive, hidden files skipped) paired with their label maps, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    frames = sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and is_frame_file(p) and not _is_companion(p)
    )
    if not frames:
        raise InputError(f"{folder}: no frames found (expected files ending in {', '.join(FRAME_SUFFIXES)})")
    return [(frame, labels_path_for(frame)) for frame in frames]


# ----------------------------------------------------------------------------- reading frames


def _check_readable(path: Path, suffixes: tuple[str, ...]) -> str:
    """Fail early, naming the file, on the problems every format shares; returns the matched suffix."""
    suffix = _matching_suffix(path, suffixes)
    if suffix is None:
        raise InputError(f"{path}: unsupported file type (expected one of {', '.join(suffixes)})")
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    return suffix


def _parse(path: Path, what: str, load: Callable[[], Any]) -> Any:
    """Run a format parser; corrupt or truncated files fail in many library-specific ways, all reported alike."""
    try:
        return load()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable file
        raise InputError(f"{path}: cannot read {what}, the file is corrupt or truncated ({exc})") from exc


def _load_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _load_tiff(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path)


def _load_png(path: Path) -> np.ndarray:
    """PNG pixels as stored: grey (8/16 bit) 2-D, RGB/RGBA 3-D; palette and other modes expanded to RGB(A)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode not in ("L", "I;16", "I", "F", "RGB", "RGBA"):
            has_alpha = "A" in image.mode or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
        return np.asarray(image)


def _load_plain_label(path: Path) -> np.ndarray:
    """Label maps keep palette indices as values (a palette PNG stores class indices, not colours)."""
    suffix = _matching_suffix(path, LABEL_SUFFIXES)
    if suffix == ".npy":
        return _load_npy(path)
    if suffix == ".png":
        from PIL import Image

        with Image.open(path) as image:
            image.load()
            return np.asarray(image)
    return _load_tiff(path)


def is_colour(array: np.ndarray) -> bool:
    """An (H, W, 3|4) RGB(A) image, kept as it is rather than treated as a CCD frame."""
    return array.ndim == 3 and array.shape[-1] in (3, 4)


def monochrome(image: np.ndarray, source: str = "image") -> np.ndarray:
    """One value per pixel: a 2-D frame as it is, or the float32 mean of an RGB(A) image's colour
    channels (alpha dropped). The one grey conversion, so labels, network input and figures agree."""
    array = np.asarray(image)
    if array.dtype.kind not in "biuf" or array.size == 0:
        raise InputError(f"{source}: expected a non-empty numeric image, got {array.dtype} {array.shape}")
    if is_colour(array):
        return array[..., :3].mean(axis=-1, dtype=np.float32)
    if array.ndim != 2:
        raise InputError(f"{source}: expected a 2-D frame or an (H, W, 3|4) colour image, got shape {array.shape}")
    return array


def _check_image(path: Path, array: np.ndarray, allow_colour: bool) -> None:
    """Reject shapes and dtypes that cannot be a CCD frame, saying what was found."""
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"{path}: pixel type {array.dtype} is not numeric")
    if array.ndim == 2 or (allow_colour and is_colour(array)):
        if 0 in array.shape:
            raise InputError(f"{path}: image has no pixels (shape {array.shape})")
        return
    if array.ndim == 3:
        hint = "; colour images must be (H, W, 3) or (H, W, 4)" if allow_colour else ""
        raise InputError(f"{path}: 3-D stack of shape {array.shape} is not a single 2-D frame{hint}")
    raise InputError(f"{path}: expected a 2-D image, got {array.ndim}-D data of shape {array.shape}")


def _json_safe(value: Any) -> Any:
    """FITS card values as plain JSON types; undefined values become None, anything odd a string."""
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    from astropy.io.fits.card import Undefined

    return None if isinstance(value, Undefined) else str(value)


def _header_dict(header: Any) -> dict:
    """A FITS header as a dict; COMMENT and HISTORY become lists of strings, malformed cards their raw text."""
    out: dict = {}
    for card in header.cards:
        key = card.keyword
        if not key:
            continue
        try:
            value = card.value
        except Exception:  # noqa: BLE001 - astropy raises several types for unparsable cards
            value = card.image
        if key in ("COMMENT", "HISTORY"):
            out.setdefault(key, []).append(str(value))
        else:
            out[key] = _json_safe(value)
    return out


def _fits_int(path: Path, header: dict, key: str) -> int | None:
    """An integer keyword that real files also write as a string (``NSAMP = '1'``)."""
    if header.get(key) is None:
        return None
    try:
        return int(float(str(header[key]).strip()))
    except ValueError:
        raise InputError(f"{path}: header keyword {key} = {header[key]!r} is not a number") from None


def _average_samples(path: Path, data: np.ndarray, header: dict, name: str) -> np.ndarray:
    """Average skipper samples when NSAMP > 1.

    Layout assumed (skipper-CCD LTA raw frames): each pixel's NSAMP samples are adjacent columns,
    so a row of NCOL pixels is stored as NSAMP * NCOL values ``p0s0 p0s1 ... p1s0 ...``.
    A frame whose width already equals the header's NCOL is taken as averaged and left alone.
    """
    nsamp = _fits_int(path, header, "NSAMP")
    if nsamp is None or nsamp <= 1 or data.shape[1] == _fits_int(path, header, "NCOL"):
        return data
    rows, width = data.shape
    if width % nsamp:
        raise InputError(
            f"{path}: {name} is {width} columns wide, not a multiple of NSAMP = {nsamp}; "
            "read it without averaging skipper samples"
        )
    averaged = data.reshape(rows, width // nsamp, nsamp).mean(axis=2, dtype=np.float64)
    header["NSAMP"] = 1  # so that writing and re-reading this frame does not average it again
    header["NSAMPAVG"] = nsamp
    return averaged.astype(np.float32)


def _subtract_overscan(path: Path, data: np.ndarray, columns: int, name: str) -> np.ndarray:
    """Remove the pedestal row by row: the median of each row's last ``columns`` (overscan) pixels."""
    if columns >= data.shape[1]:
        raise InputError(
            f"{path}: {name} has {data.shape[1]} columns, too few for {columns} overscan columns"
        )
    pedestal = np.median(data[:, -columns:], axis=1, keepdims=True)
    return data - pedestal


def _finish_frame(
    path: Path, data: np.ndarray, name: str, header: dict, average_samples: bool, subtract_overscan: int
) -> Frame:
    """Shared tail of every reader: validate, average samples, subtract overscan, convert to float32."""
    _check_image(path, data, allow_colour=True)
    if is_colour(data):
        if subtract_overscan:
            raise InputError(f"{path}: {name} is a colour image; overscan subtraction needs a 2-D frame")
        return Frame(data=data, name=name, source=path, header=header)
    check_finite(data, f"{path}: {name}")
    with np.errstate(over="ignore"):
        values = data.astype(np.float32, copy=False)
    if values is not data and not np.isfinite(values).all():
        raise InputError(f"{path}: {name} has {data.dtype} pixel values beyond the float32 range (max ±3.4e38)")
    if average_samples:
        values = _average_samples(path, values, header, name)
    if subtract_overscan:
        values = _subtract_overscan(path, values, subtract_overscan, name)
    return Frame(data=values, name=name, source=path, header=header)


def _open_fits(path: Path) -> list[tuple[int, np.ndarray, dict]]:
    """(HDU index, data, header) of every image HDU holding data.

    Extensions inherit the keywords of a data-less primary header (real files put NSAMP there),
    their own keywords winning. Truncation that astropy only warns about is turned into an error.
    """
    from astropy.io import fits

    images = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(path, memmap=False) as hdul:
            primary = _header_dict(hdul[0].header) if hdul[0].data is None else {}
            inherited = {k: v for k, v in primary.items() if k not in _STRUCTURAL_KEYS and not k.startswith("NAXIS")}
            for index, hdu in enumerate(hdul):
                if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) or hdu.data is None:
                    continue
                header = {**inherited, **_header_dict(hdu.header)} if index else _header_dict(hdu.header)
                images.append((index, np.array(hdu.data), header))
    for warning in caught:
        message = str(warning.message)
        if "Error validating header" in message or "File may have been truncated" in message:
            raise InputError(f"{path}: the file is corrupt or truncated ({message.splitlines()[0]})")
    return images


def _read_fits(path: Path, average_samples: bool, subtract_overscan: int) -> list[Frame]:
    images = _parse(path, "FITS data", lambda: _open_fits(path))
    if not images:
        raise InputError(f"{path}: no image data in this FITS file (no image HDU holds pixels)")
    names = _hdu_names(frame_stem(path), images)
    frames = []
    for name, (index, data, header) in zip(names, images):
        if data.ndim != 2:
            raise InputError(f"{path}: HDU {index} holds {data.ndim}-D data of shape {data.shape}, not a 2-D frame")
        frame = _finish_frame(path, data, name, header, average_samples, subtract_overscan)
        frame.hdu, frame.extname = index, (str(header["EXTNAME"]).strip() or None) if header.get("EXTNAME") else None
        frames.append(frame)
    return frames


def _hdu_names(stem: str, images: list[tuple[int, np.ndarray, dict]]) -> list[str]:
    """``stem`` for a lone image, else ``stem[EXTNAME]``, or ``stem[index]`` where EXTNAME is missing or repeated."""
    if len(images) == 1:
        return [stem]
    extnames = [str(header.get("EXTNAME") or "").strip() for _, _, header in images]
    keys = [name if name and extnames.count(name) == 1 else str(index) for name, (index, _, _) in zip(extnames, images)]
    return [f"{stem}[{key}]" for key in keys]


_PLAIN_LOADERS: dict[str, tuple[str, Callable[[Path], np.ndarray]]] = {
    ".npy": ("NumPy array", _load_npy),
    ".tif": ("TIFF image", _load_tiff),
    ".tiff": ("TIFF image", _load_tiff),
    ".png": ("PNG image", _load_png),
}


def read_frames(path: str | Path, *, average_samples: bool = True, subtract_overscan: int = 0) -> list[Frame]:
    """Every frame in a file: one per FITS image HDU, exactly one for NPY/TIFF/PNG.

    ``average_samples`` averages skipper samples when the header says NSAMP > 1 (see
    :func:`_average_samples` for the layout); ``subtract_overscan=N`` subtracts each row's median over
    the last N columns (after averaging). Raises InputError naming the file on any problem.
    """
    path = Path(path)
    if subtract_overscan < 0:
        raise InputError(f"{path}: overscan column count must be >= 0, got {subtract_overscan}")
    suffix = _check_readable(path, FRAME_SUFFIXES)
    if suffix in FITS_SUFFIXES:
        return _read_fits(path, average_samples, subtract_overscan)
    what, loader = _PLAIN_LOADERS[suffix]
    data = _parse(path, what, lambda: loader(path))
    return [_finish_frame(path, data, frame_stem(path), {}, average_samples, subtract_overscan)]


# ----------------------------------------------------------------------------- label maps


def validated_labels(where: str | Path, labels: Any) -> np.ndarray:
    """A 2-D uint8 class map, or InputError listing the values outside the class scheme."""
    array = np.asarray(labels)
    if array.ndim != 2:
        raise InputError(f"{where}: a label map must be 2-D, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"{where}: label values of type {array.dtype} are not numbers")
    values = np.unique(array)
    unknown = [v for v in values.tolist() if v not in LABEL_VALUES]
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise InputError(
            f"{where}: {len(unknown)} unknown label value(s): {shown} "
            f"(allowed: {', '.join(str(v) for v in sorted(LABEL_VALUES))})"
        )
    return array.astype(np.uint8)


def read_label_map(
    path: str | Path, expected_shape: tuple[int, int] | None = None, *, frame: str | Path | None = None
) -> np.ndarray:
    """A uint8 class map from PNG/TIFF/NPY; ``expected_shape`` is the frame's (H, W), ``frame`` names it in errors."""
    path = Path(path)
    _check_readable(path, LABEL_SUFFIXES)
    labels = validated_labels(path, _parse(path, "label map", lambda: _load_plain_label(path)))
    if expected_shape is not None and labels.shape != tuple(expected_shape[:2]):
        of_frame = f"frame {frame}" if frame is not None else "the frame"
        raise InputError(
            f"{path}: label map is {labels.shape[0]}x{labels.shape[1]} but {of_frame} "
            f"is {expected_shape[0]}x{expected_shape[1]}"
        )
    return labels


# ----------------------------------------------------------------------------- writing


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through a file handle on a temp file that replaces ``path`` only once complete."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return path


def _png_writer(array: np.ndarray) -> Callable[[IO[bytes]], None]:
    from PIL import Image

    return lambda handle: Image.fromarray(array).save(handle, format="PNG")


def _tiff_writer(array: np.ndarray) -> Callable[[IO[bytes]], None]:
    import tifffile

    return lambda handle: tifffile.imwrite(handle, array)


def _npy_writer(array: np.ndarray) -> Callable[[IO[bytes]], None]:
    return lambda handle: np.save(handle, array, allow_pickle=False)


_LABEL_WRITERS = {".png": _png_writer, ".tif": _tiff_writer, ".tiff": _tiff_writer, ".npy": _npy_writer}


def write_label_map(path: str | Path, labels: Any) -> Path:
    """Save a class map as uint8 PNG/TIFF/NPY (by suffix), atomically, after checking its values."""
    path = Path(path)
    suffix = _matching_suffix(path, LABEL_SUFFIXES)
    if suffix is None:
        raise InputError(f"{path}: unsupported label map type (expected one of {', '.join(LABEL_SUFFIXES)})")
    array = validated_labels(path, labels)
    return _atomic_write(path, _LABEL_WRITERS[suffix](array))


def _fits_header(header: dict) -> Any:
    """An astropy Header from a header dict, minus the layout keywords astropy sets itself."""
    from astropy.io import fits

    out = fits.Header()
    for key, value in header.items():
        if key in _STRUCTURAL_KEYS or key.startswith("NAXIS"):
            continue
        if key in ("COMMENT", "HISTORY"):
            for line in value if isinstance(value, list) else [value]:
                out.append((key, str(line)))
        else:
            out[key] = value
    return out


def _fits_writer(image: np.ndarray, header: dict | None) -> Callable[[IO[bytes]], None]:
    from astropy.io import fits

    hdu = fits.PrimaryHDU(data=image, header=_fits_header(header or {}))
    return lambda handle: hdu.writeto(handle)


def write_frame(path: str | Path, image: Any, header: dict | None = None) -> Path:
    """Save a frame atomically: ``.npy`` (2-D float32 or colour as is) or ``.fits``/``.fit``/``.fts`` (2-D float32)."""
    path = Path(path)
    suffix = _matching_suffix(path, (".npy", ".fits", ".fit", ".fts"))
    if suffix is None:
        raise InputError(f"{path}: frames can be written as .npy or .fits, not {path.suffix or 'no suffix'}")
    array = np.asarray(image)
    _check_image(path, array, allow_colour=suffix == ".npy")
    if not is_colour(array):
        array = array.astype(np.float32)
    try:
        writer = _npy_writer(array) if suffix == ".npy" else _fits_writer(array, header)
    except ValueError as exc:  # astropy refuses keys or values FITS cannot hold
        raise InputError(f"{path}: header cannot be written as FITS ({exc})") from exc
    return _atomic_write(path, writer)


def write_fits_extensions(
    path: str | Path, extensions: list[tuple[Any, dict]], primary_header: dict | None = None
) -> Path:
    """Save several 2-D frames (one per amplifier) atomically as one multi-extension FITS file.

    A data-less primary HDU holds ``primary_header`` (keywords shared by all extensions, as real
    CCD files do), then one image extension per ``(image, header)``, e.g. with ``EXTNAME``.
    """
    from astropy.io import fits

    path = Path(path)
    if _matching_suffix(path, (".fits", ".fit", ".fts")) is None:
        raise InputError(f"{path}: multi-extension frames are written as .fits, not {path.suffix or 'no suffix'}")
    if not extensions:
        raise InputError(f"{path}: no frames to write (a FITS file without image extensions cannot be read back)")
    hdus = []
    try:
        hdus.append(fits.PrimaryHDU(header=_fits_header(primary_header or {})))
        for image, header in extensions:
            array = np.asarray(image)
            _check_image(path, array, allow_colour=False)
            name = header.get("EXTNAME")  # a layout key _fits_header drops; astropy sets it from name=
            hdus.append(fits.ImageHDU(data=array.astype(np.float32), header=_fits_header(header), name=name))
    except ValueError as exc:
        raise InputError(f"{path}: header cannot be written as FITS ({exc})") from exc
    hdul = fits.HDUList(hdus)
    return _atomic_write(path, lambda handle: hdul.writeto(handle))
