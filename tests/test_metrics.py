"""Pixel and cluster metrics on tiny hand-built label maps whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import classification_report

from napari_ccdseg.classes import BACKGROUND, CLASS_NAMES, CLUSTER, GLOWING, HOT_PIXEL, UNLABELLED
from napari_ccdseg.errors import InputError
from napari_ccdseg.metrics import (
    FOUND_COVERAGE,
    cluster_instances,
    ClassScores,
    agreement_summary,
    compare_clusters,
    evaluate,
    match_clusters,
    pixel_report,
)
from napari_ccdseg.report_text import agreement_table, pixel_table


def _two_clusters() -> np.ndarray:
    """A 20 × 20 frame: a 3 × 3 cluster, a 2 × 5 cluster, a glowing column and a hot pixel."""
    labels = np.zeros((20, 20), dtype=np.uint8)
    labels[2:5, 2:5] = CLUSTER
    labels[10:12, 10:15] = CLUSTER
    labels[:, 19] = GLOWING
    labels[17, 3] = HOT_PIXEL
    return labels


def test_perfect_prediction_scores_one_everywhere():
    truth = _two_clusters()
    result = evaluate([(None, truth, None, truth.copy())])
    for name in CLASS_NAMES:
        assert result.pixel.classes[name].f1 == 1.0
    assert result.pixel.accuracy == 1.0
    assert result.clusters.efficiency == 1.0
    assert result.clusters.n_fake == 0
    assert result.clusters.fakes_per_megapixel == 0.0


def test_missing_one_of_two_clusters_halves_efficiency():
    truth = _two_clusters()
    pred = truth.copy()
    pred[10:12, 10:15] = BACKGROUND
    clusters = evaluate([(None, truth, None, pred)]).clusters
    assert (clusters.n_true, clusters.n_found) == (2, 1)
    assert clusters.efficiency == 0.5


@pytest.mark.parametrize(
    ("covered", "coverage", "found"),
    [(5, 0.5, True), (4, 0.5, False), (3, 0.3, True), (2, 0.3, False)],
)
def test_coverage_threshold_is_inclusive(covered, coverage, found):
    truth = np.zeros((4, 12), dtype=np.uint8)
    truth[1, 1:11] = CLUSTER  # one 10-pixel track
    pred = np.zeros_like(truth)
    pred[1, 1 : 1 + covered] = CLUSTER
    match = match_clusters(cluster_instances(truth), pred, coverage=coverage)
    assert match.found.tolist() == [found]
    assert FOUND_COVERAGE == 0.5


def test_fake_blobs_are_counted_per_megapixel():
    truth = np.zeros((500, 500), dtype=np.uint8)
    truth[100:103, 100:103] = CLUSTER
    pred = truth.copy()
    pred[300:302, 300:302] = CLUSTER  # fake, 4-connected blob
    pred[400, 400] = pred[401, 401] = CLUSTER  # fake, joined through a corner: one blob
    pred[103, 103] = CLUSTER  # touches the true cluster diagonally: not a fake
    clusters = evaluate([(None, truth, None, pred)]).clusters
    assert clusters.n_fake == 2
    assert clusters.fakes_per_megapixel == pytest.approx(2 / 0.25)


def test_unlabelled_truth_pixels_are_ignored():
    truth = _two_clusters()
    pred = truth.copy()
    truth[15:, :10] = UNLABELLED
    pred[15:, :10] = GLOWING  # wrong everywhere, but nobody labelled these pixels
    report = pixel_report(truth, pred)
    assert report.accuracy == 1.0
    assert report.weighted.support == int((truth != UNLABELLED).sum())
    assert report.classes["glowing"].precision == 1.0


def test_report_matches_scikit_learn_and_is_json():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (30, 30))
    pred = np.where(rng.random(truth.shape) < 0.2, rng.integers(0, 4, truth.shape), truth)
    report = pixel_report(truth, pred)
    expected = classification_report(
        truth.ravel(), pred.ravel(), labels=range(4), target_names=CLASS_NAMES, zero_division=0
    )
    assert pixel_table(report) == expected
    confusion = np.array(report.confusion)
    assert confusion.shape == (4, 4)
    assert confusion[1, 2] == np.sum((truth == 1) & (pred == 2))
    document = json.loads(json.dumps(evaluate([(None, truth, None, pred, "f")]).to_json(), allow_nan=False))
    assert document["pixel"]["cluster"]["f1-score"] == report.cluster.f1
    assert document["pixel"]["confusion"] == report.confusion and document["frames"][0]["name"] == "f"


def test_absent_classes_score_zero_without_error():
    truth = np.zeros((8, 8), dtype=np.uint8)
    report = pixel_report(truth, truth.copy())
    assert report.classes["background"].f1 == 1.0
    assert report.cluster == ClassScores(precision=0.0, recall=0.0, f1=0.0, support=0)
    result = evaluate([(None, truth, None, truth.copy())])
    assert result.clusters.n_true == 0
    assert result.clusters.efficiency is None
    assert result.clusters.efficiency_vs_charge.bin_edges == []


def test_predictions_outside_the_classes_count_as_errors():
    truth = np.zeros((4, 4), dtype=np.uint8)
    pred = truth.copy()
    pred[0, 0] = UNLABELLED
    report = pixel_report(truth, pred)
    assert report.accuracy == pytest.approx(15 / 16)
    assert report.classes["background"].support == 16


def test_all_unlabelled_truth_is_an_input_error():
    truth = np.full((4, 4), UNLABELLED, dtype=np.uint8)
    with pytest.raises(InputError, match="no labelled pixels"):
        pixel_report(truth, np.zeros_like(truth))


@pytest.mark.parametrize("which", ["pred", "image", "instances"])
def test_size_mismatch_is_an_input_error(which):
    truth = _two_clusters()
    arrays = {
        "image": np.zeros(truth.shape),
        "instances": cluster_instances(truth),
        "pred": truth.copy(),
    }
    arrays[which] = arrays[which][:-1]
    with pytest.raises(InputError, match="frame 0: sizes differ"):
        evaluate([(arrays["image"], truth, arrays["instances"], arrays["pred"])])


def test_cluster_instances_join_diagonal_neighbours():
    labels = np.zeros((5, 5), dtype=np.uint8)
    labels[0, 0] = labels[1, 1] = labels[4, 4] = CLUSTER
    instances = cluster_instances(labels)
    assert instances.dtype == np.int32
    assert instances.max() == 2
    assert instances[0, 0] == instances[1, 1] != instances[4, 4]


def test_cluster_instances_are_numbered_in_raster_order_of_first_pixels():
    """Ids 1…N in the order a row-by-row scan meets each component, as catalogue rows expect."""
    rng = np.random.default_rng(4)
    labels = np.where(rng.random((60, 70)) < 0.3, CLUSTER, 0).astype(np.uint8)
    instances = cluster_instances(labels)
    assert instances.max() > 20
    ids = instances.ravel()
    first_seen = ids[np.sort(np.unique(ids, return_index=True)[1])]
    np.testing.assert_array_equal(first_seen[first_seen > 0], np.arange(1, instances.max() + 1))
    # no 8-connected pair of cluster pixels is split between two ids
    padded = np.pad(instances, 1)
    centre = padded[1:-1, 1:-1]
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        neighbour = padded[1 + dr : padded.shape[0] - 1 + dr, 1 + dc : padded.shape[1] - 1 + dc]
        both = (centre > 0) & (neighbour > 0)
        assert (centre[both] == neighbour[both]).all()
    inside = labels == CLUSTER
    assert ((instances > 0) == inside).all()


def test_truth_instances_separate_touching_clusters():
    truth = np.zeros((3, 8), dtype=np.uint8)
    truth[1, 1:7] = CLUSTER
    instances = np.zeros(truth.shape, dtype=np.int32)
    instances[1, 1:4], instances[1, 4:7] = 1, 2  # two clusters that touch
    pred = np.zeros_like(truth)
    pred[1, 1:4] = CLUSTER
    assert evaluate([(None, truth, instances, pred)]).clusters.efficiency == 0.5


def test_charges_are_pedestal_subtracted_image_sums():
    truth = np.zeros((40, 40), dtype=np.uint8)
    truth[5:7, 5:7] = CLUSTER  # 4 pixels of 50 above pedestal: charge 200
    truth[20, 20:30] = CLUSTER  # 10 pixels of 500: charge 5000
    image = np.full(truth.shape, 1000.0)
    image[5:7, 5:7] += 50
    image[20, 20:30] += 500
    pred = truth.copy()
    pred[20, 20:30] = BACKGROUND
    match = match_clusters(cluster_instances(truth), pred, image - 1000)
    assert match.charges.tolist() == [200.0, 5000.0]
    clusters = evaluate([(image, truth, None, pred)]).clusters
    assert clusters.charge_unit == "image units"
    binned = clusters.efficiency_vs_charge
    edges = np.array(binned.bin_edges)
    assert np.allclose(np.diff(np.log10(edges)), 0.25)
    assert sum(binned.counts) == 2 and sum(binned.found) == 1
    low_bin = np.searchsorted(edges, 200.0) - 1
    assert binned.efficiency[low_bin] == 1.0
    json.dumps(evaluate([(image, truth, None, pred)]).to_json(), allow_nan=False)


def test_without_images_clusters_are_measured_in_pixels():
    truth = _two_clusters()
    samples = [(np.ones(truth.shape), truth, None, truth), (None, truth, None, truth)]
    clusters = evaluate(samples).clusters
    assert clusters.charge_unit == "pixels"
    assert sum(clusters.efficiency_vs_charge.counts) == 4


def test_frames_are_pooled_and_summarised():
    truth = _two_clusters()
    miss = truth.copy()
    miss[2:5, 2:5] = BACKGROUND
    result = evaluate([(None, truth, None, truth, "hit"), (None, truth, None, miss, "miss")])
    assert result.clusters.efficiency == 0.75
    assert [(frame.name, frame.efficiency) for frame in result.frames] == [("hit", 1.0), ("miss", 0.5)]
    assert result.frames[0].cluster_f1 == 1.0
    assert result.pixel.cluster.support == 2 * 19


def test_compare_clusters_counts_agreement():
    a = np.zeros((20, 20), dtype=np.uint8)
    a[2:4, 2:4] = CLUSTER  # both
    a[10, 10] = CLUSTER  # only a
    b = np.zeros_like(a)
    b[3:5, 3:5] = CLUSTER  # overlaps a's first cluster by one pixel
    b[15:17, 15] = CLUSTER  # only b
    b[18, 2] = CLUSTER  # only b
    result = compare_clusters(a, b)
    assert (result["n_a"], result["n_b"]) == (2, 3)
    assert (result["both_a"], result["both_b"], result["only_a"], result["only_b"]) == (1, 1, 1, 2)
    assert result["both"] == 1
    assert result["agreement"] == pytest.approx(1 / 4)  # both / (both + only a + only b)
    assert result["iou"] == pytest.approx(1 / 11)  # 5 + 7 cluster pixels, 1 shared
    assert result["only_a_positions"] == [[10.0, 10.0]]
    assert sorted(result["only_b_positions"]) == [[15.5, 15.0], [18.0, 2.0]]
    json.dumps(result, allow_nan=False)


def test_compare_clusters_of_empty_maps_agree():
    empty = np.zeros((5, 5), dtype=np.uint8)
    result = compare_clusters(empty, empty)
    assert (result["agreement"], result["iou"], result["n_a"], result["n_b"]) == (1.0, 1.0, 0, 0)
    with pytest.raises(InputError):
        compare_clusters(empty, empty[:, :4])


def test_compare_clusters_counts_a_merged_blob_once():
    a = np.zeros((20, 20), dtype=np.uint8)
    a[2:4, 2:12] = CLUSTER  # one long blob ...
    b = np.zeros_like(a)
    b[2, 2] = b[2, 6] = b[3, 10] = CLUSTER  # ... over three separate clusters
    b[2, 15] = CLUSTER  # only b
    result = compare_clusters(a, b)
    assert (result["n_a"], result["n_b"], result["both"]) == (1, 4, 1)
    assert (result["both_a"], result["both_b"], result["only_b"]) == (1, 3, 1)
    assert result["agreement"] == pytest.approx(1 / 2)


def test_agreement_summary_adds_frames_and_tabulates():
    a = np.zeros((20, 20), dtype=np.uint8)
    a[2:4, 2:4] = a[10, 10] = CLUSTER
    b = np.zeros_like(a)
    b[3:5, 3:5] = b[15, 15] = b[18, 2] = CLUSTER
    empty = np.zeros_like(a)
    summary = agreement_summary([("f1", compare_clusters(a, b)), ("f2", compare_clusters(empty, b))])
    first, second = summary["frames"]
    assert (first["model"], first["physical"], first["both"]) == (2, 3, 1)
    assert (first["only_model"], first["only_physical"]) == (1, 2)
    assert (second["model"], second["only_physical"], second["agreement"]) == (0, 3, 0.0)
    total = summary["total"]
    assert (total["model"], total["physical"], total["both"], total["only_physical"]) == (2, 6, 1, 5)
    assert total["agreement"] == pytest.approx(1 / 7)
    table = agreement_table(summary)
    assert "| f1 | 2 | 3 | 1 | 1 | 2 | 25.0 % |" in table
    assert "| **total** | 2 | 6 | 1 | 1 | 5 | 14.3 % |" in table
    json.dumps(summary, allow_nan=False)
    with pytest.raises(InputError, match="no frames"):
        agreement_summary([])


def test_plus_minus_rounds_to_the_errors_second_significant_digit():
    from napari_ccdseg.report_text import plus_minus

    assert plus_minus(4.01234, 0.0123, "ADU/e⁻") == "4.012 ± 0.012 ADU/e⁻"
    assert plus_minus(1234.4, 56.0) == "1234 ± 56"
    assert plus_minus(0.152345, 0.0, "e⁻") == "0.1523 e⁻"  # exact (a given gain): the value alone
    assert plus_minus(0.152345, float("nan")) == "0.1523"
    assert plus_minus(float("nan"), 0.1, "e⁻/px") == "n/a"
