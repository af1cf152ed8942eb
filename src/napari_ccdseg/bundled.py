"""Models shipped inside the package, so users can predict right after installing.

A bundled model is ``models/<name>.safetensors`` in the package, with ``models/<name>.json``
beside it: the model card (how it was trained, by which script and seed, what it reached).
:func:`resolve_model` turns whatever the user typed (or left empty) into a model file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .modelfile import MODEL_SUFFIX, model_file_path

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


def resolve_model(name_or_path: str | Path | None, folder: Path | None = None) -> Path:
    """The model file meant by what the user gave: the one rule for the CLI and the widgets.

    In order: nothing (None or an empty field) means the bundled ``default`` model; an existing
    file wins over a bundled model of the same name, so a user's own file called ``default`` is
    never shadowed; ``m`` finds ``m.safetensors`` (what ``ccdseg train --out m`` wrote); then a
    bundled model's name. A path that matches none of these is returned for the loader to report.
    """
    text = "" if name_or_path is None else str(name_or_path).strip()
    models = bundled_models(folder)
    if not text:
        if DEFAULT_MODEL not in models:
            raise InputError("choose a model file (or train one first): no bundled default model is installed")
        return models[DEFAULT_MODEL].path
    path = Path(text)
    for candidate in (path, model_file_path(path)):
        if candidate.is_file():
            return candidate
    if path.suffix == MODEL_SUFFIX or len(path.parts) > 1:
        return path
    if text in models:
        return models[text].path
    known = ", ".join(models) or "none installed"
    raise InputError(
        f"{text}: no such model file (nor {model_file_path(path)}), and no bundled model of that name (bundled: {known})"
    )
