"""Test-wide settings: headless Qt, no network call from albumentations, one CPU thread pool."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
