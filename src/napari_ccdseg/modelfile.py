"""Model files: one ``.safetensors`` file with the weights and all metadata as JSON.

safetensors holds raw tensors and a JSON header, nothing executable, so loading a model file
someone sent you cannot run code (a pickled ``.pt`` checkpoint can). The metadata, under the
header key ``ccdseg``, holds what prediction and fine-tuning need: classes and colours, the
architecture, the input normalisation, the labelling preset, the training summary and, when
fitted, the decision rule (per-class logit offsets, :mod:`napari_ccdseg.decision`).
"""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as serialise

from . import __version__
from .atomic import atomic_path, jsonable
from .classes import CLASS_COLOURS, CLASS_NAMES, N_CLASSES
from .decision import DecisionRule
from .errors import InputError
from .normalise import INPUT_CHANNELS, NORMALISATIONS, normalisation_params
from .unet import UNet, UNetConfig

MODEL_SUFFIX = ".safetensors"
FORMAT_VERSION = 1
METADATA_KEY = "ccdseg"

_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
_PICKLE_MAGICS = tuple(b"\x80" + bytes([protocol]) for protocol in range(2, 6))  # PROTO opcode
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container, which wraps a pickle


def model_file_path(path: str | Path) -> Path:
    """The path a model is saved to: ``.safetensors`` appended when missing (no part of the name lost)."""
    path = Path(path)
    return path if path.suffix == MODEL_SUFFIX else path.with_name(path.name + MODEL_SUFFIX)


def save_model(path: str | Path, model: UNet, metadata: dict) -> Path:
    """Write ``model`` and ``metadata`` atomically; returns the path (``.safetensors`` appended).

    ``metadata`` must hold ``normalisation`` (the method name); ``normalisation_params`` is
    completed with the defaults it leaves out.
    Package version, classes, colours and architecture are added here and override any stale
    copies in ``metadata``, so metadata read from an older file can be passed straight back.
    An interrupted or failing save leaves the previous file at ``path`` untouched.
    """
    path = model_file_path(path)
    header = {**metadata, **_core_metadata(model)}
    header["normalisation_params"] = _normalisation_params_for_saving(metadata)
    text = json.dumps(jsonable(header))
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    _write_atomically(path, serialise(tensors, metadata={METADATA_KEY: text}))
    return path


def read_metadata(path: str | Path) -> dict:
    """The model file's metadata, checked, without reading the weights."""
    path = Path(path)
    raw = _read_header(path).get("__metadata__")
    return _checked_metadata(path, raw if isinstance(raw, dict) else {})


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, dict]:
    """The model (eval mode, on ``device``) and its metadata; refuses anything but safetensors."""
    path = Path(path)
    metadata = read_metadata(path)
    model = UNet(UNetConfig.from_dict(metadata["architecture"]))
    tensors = _read_tensors(path)
    _check_tensors(path, tensors, model.state_dict())
    model.load_state_dict(tensors)
    return model.to(device).eval(), metadata


def _core_metadata(model: UNet) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "classes": list(CLASS_NAMES),
        "colours": [list(CLASS_COLOURS[index]) for index in range(N_CLASSES)],
        "architecture": model.config.to_dict(),
    }


def _normalisation_params_for_saving(metadata: dict) -> dict:
    """All parameters of the normalisation: a model without them cannot be used for prediction."""
    method = metadata.get("normalisation")
    if method not in NORMALISATIONS:
        raise ValueError(f"model metadata needs 'normalisation', one of {NORMALISATIONS}")
    return normalisation_params(method, **metadata.get("normalisation_params", {}))


def _write_atomically(path: Path, data: bytes) -> None:
    """Via a temp file and ``os.replace``: a full disk or Ctrl-C leaves the old file intact."""
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def _read_header(path: Path) -> dict:
    """The safetensors JSON header, after checking the file is one and is complete."""
    if not path.is_file():
        raise InputError(f"model file {path} not found")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"model file {path} is empty")
    with open(path, "rb") as stream:
        start = stream.read(8)
        length = struct.unpack("<Q", start)[0] if len(start) == 8 else -1
        if not 0 < length <= min(_MAX_HEADER_BYTES, size - 8):
            _not_safetensors(path, start, "its header size is invalid, or it is truncated")
        raw = stream.read(length)
    header = _parse_header(raw)
    if header is None:
        _not_safetensors(path, start, "its header is not valid JSON")
    _check_complete(path, header, size - 8 - length)
    return header


def _not_safetensors(path: Path, start: bytes, reason: str) -> None:
    """Raise, naming a pickled checkpoint as such: users will try their old ``.pt`` files."""
    if start.startswith((*_PICKLE_MAGICS, _ZIP_MAGIC)):
        raise InputError(
            f"model file {path} is a pickled PyTorch checkpoint; ccdseg loads only .safetensors "
            "model files, because unpickling a file can run arbitrary code"
        )
    raise InputError(f"model file {path} is not a safetensors model file: {reason}")


def _parse_header(raw: bytes) -> dict | None:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return header if isinstance(header, dict) else None


def _check_complete(path: Path, header: dict, data_bytes: int) -> None:
    """Tensors must end where the file does; a shorter file was cut off while copying."""
    try:
        ends = [
            int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"
        ]
    except (TypeError, KeyError, IndexError, ValueError):
        raise InputError(f"model file {path} has a corrupt safetensors header") from None
    needed = max(ends, default=0)
    if needed > data_bytes:
        raise InputError(f"model file {path} is truncated ({data_bytes} of {needed} weight bytes)")


def _checked_metadata(path: Path, raw: dict) -> dict:
    """Parse and check the ``ccdseg`` metadata so a wrong file fails here, saying why."""
    if METADATA_KEY not in raw:
        raise InputError(
            f"model file {path} is a safetensors file but not a ccdseg model (no metadata)"
        )
    try:
        metadata = json.loads(raw[METADATA_KEY])
    except json.JSONDecodeError:
        raise InputError(f"model file {path} has corrupt metadata (invalid JSON)") from None
    if not isinstance(metadata, dict):
        raise InputError(f"model file {path} has corrupt metadata (not a JSON object)")
    _check_format_version(path, metadata.get("format_version"))
    _check_classes(path, metadata.get("classes"))
    _check_architecture(path, metadata.get("architecture"))
    metadata["normalisation_params"] = _checked_normalisation(path, metadata)
    _check_decision(path, metadata)
    _warn_on_other_version(path, metadata.get("package_version"))
    return metadata


def _check_format_version(path: Path, version: object) -> None:
    if version is None:
        raise InputError(f"model file {path} has no format_version")
    if not isinstance(version, int) or version < 1:
        raise InputError(f"model file {path} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise InputError(
            f"model file {path} has format version {version}, newer than this napari-ccdseg "
            f"({__version__}) reads ({FORMAT_VERSION}); upgrade napari-ccdseg"
        )


def _check_classes(path: Path, classes: object) -> None:
    if classes != list(CLASS_NAMES):
        raise InputError(
            f"model file {path} segments the classes {classes}, "
            f"but napari-ccdseg uses {list(CLASS_NAMES)}"
        )


def _check_architecture(path: Path, architecture: object) -> None:
    try:
        config = UNetConfig.from_dict(architecture)
    except (TypeError, ValueError) as error:
        raise InputError(f"model file {path} has an invalid architecture: {error}") from None
    if config.n_classes != N_CLASSES:
        raise InputError(
            f"model file {path} has {config.n_classes} output classes, expected {N_CLASSES}"
        )
    if config.in_channels != INPUT_CHANNELS:
        raise InputError(
            f"model file {path} expects {config.in_channels} input channels; "
            f"napari-ccdseg feeds {INPUT_CHANNELS}"
        )


def _checked_normalisation(path: Path, metadata: dict) -> dict:
    """The normalisation's complete parameters, after checking method and parameters are known."""
    method, params = metadata.get("normalisation"), metadata.get("normalisation_params", {})
    if not isinstance(method, str) or not isinstance(params, dict):
        raise InputError(f"model file {path} does not record its input normalisation")
    try:
        return normalisation_params(method, **params)
    except (TypeError, InputError) as error:
        raise InputError(
            f"model file {path} has an invalid normalisation {method!r} {params}: {error}"
        ) from None


def _check_decision(path: Path, metadata: dict) -> None:
    """A malformed decision rule fails here rather than predicting with the wrong offsets."""
    try:
        DecisionRule.from_metadata(metadata)
    except ValueError as error:
        raise InputError(f"model file {path} has an invalid decision rule: {error}") from None


def _warn_on_other_version(path: Path, version: object) -> None:
    """Same format, other release: it loads, but the user should know where it came from."""
    if str(version).split(".")[:2] != __version__.split(".")[:2]:
        warnings.warn(
            f"model file {path} was written by napari-ccdseg {version}; this is {__version__}",
            UserWarning,
            stacklevel=2,
        )


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise InputError(f"model file {path} has unreadable weights: {error}") from None


def _check_tensors(path: Path, tensors: dict, expected: dict) -> None:
    """Name the missing, extra or misshapen weights instead of torch's long RuntimeError."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tensors[k].shape != expected[k].shape)
    problems = [
        f"{label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
        for label, names in (
            ("missing weights", missing),
            ("unexpected weights", extra),
            ("wrong shapes", wrong),
        )
        if names
    ]
    if problems:
        raise InputError(
            f"model file {path} does not match its architecture ({'; '.join(problems)})"
        )
