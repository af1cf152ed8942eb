"""napari dock widgets: thin views over the headless core (simulate, dataset, auto-label, train,
predict, clusters, masks, view).

Each widget gathers settings, runs the same core function the CLI runs in a napari worker, and
turns the worker's typed updates into layers, plots and text. No Qt outside this package.

The manifest names each widget by its own module, so opening one imports only what it needs
(Simulate never imports torch); ``from napari_ccdseg.widgets import X`` still works, importing
X's module on first use.
"""

from importlib import import_module

_MODULES = {
    "AutolabelWidget": "autolabel",
    "ClustersWidget": "clusters",
    "DatasetWidget": "dataset",
    "MasksWidget": "masks",
    "PredictWidget": "predict",
    "SimulateWidget": "simulate",
    "TrainWidget": "train",
    "ViewWidget": "view",
}

__all__ = list(_MODULES)


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_MODULES[name]}", __name__), name)
