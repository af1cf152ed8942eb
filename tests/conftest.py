"""Test-wide settings (headless Qt, no network call from albumentations), the tiny_frames fixture
and the GUI tests' errors fixture."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import dataclasses

import pytest


@pytest.fixture
def tiny_frames():
    """Four simulated 64 x 64 frames with exact truth, as training and evaluation data."""
    from napari_ccdseg.dataset import LabelledFrame
    from napari_ccdseg.simulate import SIM_PRESETS, simulate_frame

    config = dataclasses.replace(SIM_PRESETS["conventional"], rows=64, cols=64, cluster_rate=2000.0)
    frames = []
    for seed in range(4):
        sim = simulate_frame(config, seed=seed)
        frames.append(LabelledFrame(f"sim{seed}", sim.image, sim.labels, sim.instances))
    return frames


@pytest.fixture
def errors():
    """Error notifications shown to the user during the test (GUI tests)."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    shown: list[str] = []

    def record(notification) -> None:
        if notification.severity == NotificationSeverity.ERROR:
            shown.append(str(notification.message))

    notification_manager.notification_ready.connect(record)
    yield shown
    notification_manager.notification_ready.disconnect(record)
