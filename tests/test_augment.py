import numpy as np

from napari_ccdseg.augment import augment_pair, build_augmentation
from napari_ccdseg.classes import UNLABELLED


def _pair(rows=80, cols=90, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(rows, cols)).astype(np.float32)
    labels = np.digitize(image, [-0.5, 0.5, 1.5]).astype(np.uint8)  # a function of the pixel value
    return image, labels


def test_image_and_mask_move_together():
    transform = build_augmentation(64, seed=3)
    image, labels = _pair()
    for _ in range(20):
        out_image, out_labels = augment_pair(transform, image, labels)
        assert out_image.shape == out_labels.shape == (64, 64)
        labelled = out_labels != UNLABELLED
        expected = np.digitize(out_image, [-0.5, 0.5, 1.5])
        assert np.array_equal(expected[labelled], out_labels[labelled])


def test_no_intensity_change():
    transform = build_augmentation(64, seed=1)
    image, labels = _pair()
    allowed = set(np.unique(image).tolist()) | {0.0}
    for _ in range(10):
        out_image, _ = augment_pair(transform, image, labels)
        assert set(np.unique(out_image).tolist()) <= allowed


def test_small_tile_is_padded_with_unlabelled():
    transform = build_augmentation(64, seed=0)
    image, labels = _pair(20, 30)
    out_image, out_labels = augment_pair(transform, image, labels)
    assert out_image.shape == (64, 64)
    assert (out_labels == UNLABELLED).sum() >= 64 * 64 - 20 * 30


def test_seeded_augmentation_is_reproducible():
    image, labels = _pair()
    a = [augment_pair(build_augmentation(64, seed=7), image, labels)[0] for _ in range(2)]
    assert np.array_equal(a[0], a[1])
