"""napari dock widgets: thin views over the headless core (simulate, load, auto-label, train, predict).

Each widget gathers settings, runs the same core function the CLI runs in a napari worker, and
turns the worker's typed updates into layers, plots and text. No Qt outside this package.
"""

from .autolabel import AutolabelWidget
from .dataset import DatasetWidget
from .predict import PredictWidget
from .simulate import SimulateWidget
from .train import TrainWidget

__all__ = ["AutolabelWidget", "DatasetWidget", "PredictWidget", "SimulateWidget", "TrainWidget"]
