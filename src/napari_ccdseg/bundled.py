"""Models shipped inside the package, so users can predict right after installing.

A bundled model is ``models/<name>.safetensors`` in the package, with ``models/<name>.json``
beside it: the model card (how it was trained, by which script and seed, what it reached). The
name ``default`` is what the CLI and the Predict widget use when no model file is chosen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .modelfile import MODEL_SUFFIX

BUNDLED_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class BundledModel:
    """A model file in the package and its card (an empty dict when it has none)."""

    name: str
    path: Path
    card: dict

    @property
    def summary(self) -> str:
        """One line for ``ccdseg models``: the card's description, or the file size."""
        size = f"{self.path.stat().st_size / 1e6:.1f} MB"
        description = self.card.get("description", "")
        return f"{self.name}: {description} ({size})" if description else f"{self.name} ({size})"


def bundled_models(folder: Path | None = None) -> dict[str, BundledModel]:
    """Every bundled model by name, sorted; ``folder`` defaults to the package's ``models/``."""
    folder = BUNDLED_DIR if folder is None else folder
    models = {}
    for path in sorted(folder.glob(f"*{MODEL_SUFFIX}")):
        name = path.name[: -len(MODEL_SUFFIX)]
        card_path = path.with_name(f"{name}.json")
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        models[name] = BundledModel(name, path, card)
    return models


def resolve_model(name_or_path: str | Path, folder: Path | None = None) -> Path:
    """A model file path from a path, or from the name of a bundled model (``default``).

    An existing file wins over a bundled model of the same name, so a user's own file called
    ``default`` is never shadowed.
    """
    path = Path(name_or_path)
    if path.exists() or path.suffix == MODEL_SUFFIX or len(path.parts) > 1:
        return path
    models = bundled_models(folder)
    if str(name_or_path) in models:
        return models[str(name_or_path)].path
    known = ", ".join(models) or "none installed"
    raise InputError(f"{name_or_path}: no such model file, and no bundled model of that name (bundled: {known})")
