"""The decision rule: logit offsets and the smallest cluster kept, read from the model file and
applied by predict_frame; offsets fitted on labelled pixels recover a known bias."""

import dataclasses
import json

import numpy as np
import pytest
from scipy import ndimage
import torch
from safetensors.torch import save_file

from napari_ccdseg.calibrate import calibrate_frame
from napari_ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL, N_CLASSES, UNLABELLED
from napari_ccdseg.decision import (
    DECISION_KEY, DecisionRule, decide_with_fallback, drop_small_clusters, fit_logit_offsets, grow_halos,
    halo_posterior_map,
)
from napari_ccdseg.errors import InputError
from napari_ccdseg.metrics import cluster_instances
from napari_ccdseg.modelfile import load_model, save_model
from napari_ccdseg.predict import predict_frame
from napari_ccdseg.simulate import SimConfig, simulate_frame
from napari_ccdseg.unet import UNetConfig, build_unet

TINY = UNetConfig(widths=(4, 8, 16))


@pytest.fixture(scope="module")
def frame():
    return simulate_frame(SimConfig(rows=64, cols=64, read_noise_e=0.5, cluster_rate=400.0), seed=3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_unet(TINY).eval()


def _saved(tmp_path, model, decision=None):
    metadata = {"normalisation": "sigma"}
    if decision is not None:
        metadata[DECISION_KEY] = decision
    return load_model(save_model(tmp_path / "model.safetensors", model, metadata))


def _cluster_pixels(model, meta, image):
    return int((predict_frame(model, meta, image).labels == CLUSTER).sum())


def test_a_model_without_a_rule_predicts_the_plain_argmax(tmp_path, model, frame):
    loaded, meta = _saved(tmp_path, model)
    assert DecisionRule.from_metadata(meta) == DecisionRule()
    plain = predict_frame(loaded, meta, frame.image, probabilities=True)
    assert np.array_equal(plain.labels, plain.probabilities.argmax(0))
    explicit = predict_frame(loaded, meta, frame.image, offsets=None, min_cluster_pixels=1)
    assert np.array_equal(plain.labels, explicit.labels)


def test_offsets_are_read_from_the_file_and_move_pixels_the_expected_way(tmp_path, model, frame):
    loaded, meta = _saved(tmp_path, model)
    logits = np.log(predict_frame(loaded, meta, frame.image, probabilities=True).probabilities)
    # a cluster offset halfway between the cluster logit's low and high values: some pixels change
    margin = logits[CLUSTER] - np.delete(logits, CLUSTER, axis=0).max(0)
    shift = float(-np.median(margin))
    baseline = _cluster_pixels(loaded, meta, frame.image)
    counts = {}
    for sign in (1, -1):
        offsets = [0.0] * N_CLASSES
        offsets[CLUSTER] = sign * shift
        loaded_with, meta_with = _saved(tmp_path, model, {"logit_offsets": offsets})
        assert DecisionRule.from_metadata(meta_with).offsets[CLUSTER] == pytest.approx(sign * shift)
        counts[sign] = _cluster_pixels(loaded_with, meta_with, frame.image)
    up, down = (counts[1], counts[-1]) if shift > 0 else (counts[-1], counts[1])
    assert down < baseline < up


def test_probabilities_follow_the_offsets(tmp_path, model, frame):
    loaded, meta = _saved(tmp_path, model, {"logit_offsets": [0.0, -1.0, 0.5, -2.0]})
    prediction = predict_frame(loaded, meta, frame.image, probabilities=True)
    assert np.array_equal(prediction.labels, prediction.probabilities.argmax(0))


def test_small_clusters_are_dropped_to_their_best_other_class():
    labels = np.zeros((6, 8), np.uint8)
    labels[1, 1] = CLUSTER  # 1 px
    labels[3:5, 4:7] = CLUSTER  # 6 px
    fallback = np.full(labels.shape, BACKGROUND, np.uint8)
    fallback[1, 1] = HOT_PIXEL
    out = drop_small_clusters(labels.copy(), fallback, min_pixels=2)
    assert out[1, 1] == HOT_PIXEL
    assert (out == CLUSTER).sum() == 6
    assert np.array_equal(drop_small_clusters(labels.copy(), fallback, 1), labels)


def test_min_cluster_pixels_in_the_file_removes_small_components(tmp_path, model, frame):
    loaded, meta = _saved(tmp_path, model, {"logit_offsets": [0.0, 0.0, 0.0, 2.0], "min_cluster_pixels": 4})
    labels = predict_frame(loaded, meta, frame.image).labels
    components = cluster_instances(labels)
    assert components.max() > 0
    assert np.bincount(components.ravel())[1:].min() >= 4


@pytest.mark.parametrize(
    "decision",
    [
        {"logit_offsets": [0.0, 1.0]}, {"logit_offsets": [0.0, 0.0, 0.0, float("nan")]}, {"min_cluster_pixels": 0},
        {"zero_electron_veto": "yes"}, [1, 2], {"halo_posterior": 1.5}, {"halo_posterior": True},
    ],
)
def test_a_malformed_rule_is_refused_naming_the_file(tmp_path, model, decision):
    path = save_model(tmp_path / "model.safetensors", model, {"normalisation": "sigma"})
    loaded, meta = load_model(path)
    meta[DECISION_KEY] = decision
    save_file({k: v.contiguous() for k, v in loaded.state_dict().items()}, path, metadata={"ccdseg": json.dumps(meta)})
    with pytest.raises(InputError, match="model.safetensors.*decision"):
        load_model(path)


def test_fitting_recovers_a_known_cluster_bias():
    rng = np.random.default_rng(0)
    n = 40_000
    truth = rng.choice([BACKGROUND, HOT_PIXEL, CLUSTER], size=n, p=[0.5, 0.1, 0.4])
    # unbiased logits: 2 for the true class, 0 otherwise, plus equal noise; then a known bias
    logits = rng.normal(0.0, 1.0, size=(N_CLASSES, n)).astype(np.float32)
    logits[truth, np.arange(n)] += 2.0
    logits[1] -= 10.0  # a class never present
    bias = 1.5
    biased = logits.copy()
    biased[CLUSTER] += bias
    truth_with_gaps = truth.copy()
    truth_with_gaps[:100] = UNLABELLED
    fit = fit_logit_offsets(biased, truth_with_gaps, step=0.05, span=3.0)
    reference = fit_logit_offsets(logits, truth, step=0.05, span=3.0)
    assert fit.offsets[BACKGROUND] == 0.0
    assert fit.offsets[CLUSTER] - reference.offsets[CLUSTER] == pytest.approx(-bias, abs=0.15)
    assert fit.score_after > fit.score_before
    assert fit.pixels == n - 100


SKIPPER = SimConfig(rows=160, cols=160, units="adu", pedestal_adu=200.0, gain_adu_per_e=6.0, read_noise_e=0.15,
                    dark_current_e=0.05, cluster_rate=400.0)
"""A frame that resolves single electrons (its own comb gives pedestal and gain)."""


def _electrons(sim):
    return (sim.image - sim.metadata["pedestal_adu"]) / sim.metadata["gain_adu_per_e"]


def test_the_veto_keeps_empty_pixels_out_of_clusters_on_a_frame_that_resolves_electrons(tmp_path, model):
    sim = simulate_frame(SKIPPER, seed=5)
    everything_cluster = {"logit_offsets": [0.0, 0.0, 0.0, 60.0]}
    loaded, meta = _saved(tmp_path, model, everything_cluster)
    plain = predict_frame(loaded, meta, sim.image).labels
    assert (plain == CLUSTER).all()
    loaded, meta = _saved(tmp_path, model, {**everything_cluster, "zero_electron_veto": True})
    assert DecisionRule.from_metadata(meta).zero_electron_veto
    vetoed = predict_frame(loaded, meta, sim.image).labels
    electrons = _electrons(sim)
    assert (vetoed[electrons < 0.3] != CLUSTER).all()  # empty pixels (3 σ below the cut) never cluster
    assert (vetoed[electrons > 0.7] == CLUSTER).all()  # occupied ones keep the network's call
    assert vetoed[sim.labels == CLUSTER].tolist().count(CLUSTER) / (sim.labels == CLUSTER).sum() > 0.99
    # the caller can switch it off for the raw rule
    assert (predict_frame(loaded, meta, sim.image, zero_electron_veto=False).labels == CLUSTER).all()


def test_the_veto_changes_nothing_on_a_frame_that_does_not_resolve_electrons(tmp_path, model, frame):
    rule = {"logit_offsets": [0.0, 0.0, 0.0, 1.0]}
    loaded, meta = _saved(tmp_path, model, rule)
    without = predict_frame(loaded, meta, frame.image).labels
    loaded, meta = _saved(tmp_path, model, {**rule, "zero_electron_veto": True})
    assert np.array_equal(predict_frame(loaded, meta, frame.image).labels, without)


def test_a_calibration_given_to_predict_frame_sets_the_electron_scale_of_the_veto(tmp_path, model):
    """The frame's own calibration is the one source of its gain: one that says 3× the gain makes
    one-electron pixels read a third of an electron, and the veto takes them out of clusters."""
    sim = simulate_frame(SKIPPER, seed=6)
    loaded, meta = _saved(tmp_path, model, {"logit_offsets": [0.0, 0.0, 0.0, 60.0], "zero_electron_veto": True})
    own = calibrate_frame(sim.image, frame="skipper")
    assert own.resolves_electrons
    one_electron = np.abs(_electrons(sim) - 1) < 0.3
    with_own = predict_frame(loaded, meta, sim.image, calibration=own).labels
    np.testing.assert_array_equal(with_own, predict_frame(loaded, meta, sim.image).labels)
    assert (with_own[one_electron] == CLUSTER).all()
    tripled = dataclasses.replace(own, gain_adu_per_e=3 * own.gain_adu_per_e)
    assert not (predict_frame(loaded, meta, sim.image, calibration=tripled).labels[one_electron] == CLUSTER).any()
    # a rule without the veto takes the calibration for the normalisation only: no pixel is vetoed
    no_veto = predict_frame(loaded, meta, sim.image, calibration=tripled, zero_electron_veto=False).labels
    assert (no_veto[one_electron] == CLUSTER).all()


def test_decide_with_fallback_gives_each_pixel_its_best_class_other_than_cluster():
    logits = np.zeros((4, 1, 3), np.float32)
    logits[CLUSTER] = [[5.0, 5.0, 0.0]]
    logits[GLOWING] = [[1.0, 0.0, 2.0]]
    logits[HOT_PIXEL] = [[0.0, 3.0, 0.0]]
    labels, fallback = decide_with_fallback(logits)
    assert labels.dtype == fallback.dtype == np.uint8
    assert labels.tolist() == [[CLUSTER, CLUSTER, GLOWING]]
    assert fallback.tolist() == [[GLOWING, HOT_PIXEL, GLOWING]]


def test_the_halo_posterior_is_the_poisson_chance_of_some_event_charge():
    counts = np.array([[0.0, 1.0, 2.0, 2.0, 5.0]])
    expected = np.array([[3.0, 1.0, 1.0, 0.0, 0.5]])
    posterior = halo_posterior_map(counts, np.array([1.0]), expected)
    # no electron: no event charge; μ = 0: none expected; n = 2, λ = μ = 1: 1 − (1/2)²
    np.testing.assert_allclose(posterior, [[0.0, 0.5, 0.75, 0.0, 1 - (1 / 1.5) ** 5]])
    # 30 e- where dark current and the halo expect 3: another event or a defect, not this halo
    assert halo_posterior_map(np.array([[30.0, 6.0]]), np.array([1.0]), np.array([[2.0, 2.0]])).tolist()[0][0] == 0.0
    assert halo_posterior_map(np.array([[30.0, 6.0]]), np.array([1.0]), np.array([[2.0, 2.0]]))[0, 1] > 0.99


def _diffused_cluster(rng, dark_e, electrons=400, sigma=0.8, shape=(48, 48), centre=(24.3, 23.6)):
    """Electron counts of a frame of Poisson dark current with one diffused point of charge, and its
    event charge per pixel."""
    rows = np.floor(rng.normal(centre[0], sigma, electrons)).astype(int)
    cols = np.floor(rng.normal(centre[1], sigma, electrons)).astype(int)
    event = np.zeros(shape)
    np.add.at(event, (rows, cols), 1)
    counts = event + rng.poisson(dark_e, shape)
    return counts + rng.normal(0, 0.15, shape), event


def test_halos_add_the_edge_pixels_a_diffused_cluster_holds_and_nothing_far_from_it():
    rng = np.random.default_rng(1)
    electrons, event = _diffused_cluster(rng, dark_e=1.0)
    electrons[5, 5] += 40  # a bright pixel far away: no cluster near it, no halo
    labels = np.zeros(event.shape, np.uint8)
    labels[event >= 4] = CLUSTER  # a network's core: the bright pixels only
    labels[30:33, 40] = HOT_PIXEL  # other classes keep theirs
    before = labels.copy()
    grow_halos(labels, electrons, np.ones(event.shape[0]), 0.15, posterior=0.9)
    added = (labels == CLUSTER) & (before != CLUSTER)
    assert added.sum() >= 3
    assert (before[added] == BACKGROUND).all()
    touching = ndimage.binary_dilation(before == CLUSTER, np.ones((3, 3), bool))
    assert not (added & ~touching).any()  # one pixel deep
    assert (event[added] >= 1).mean() >= 0.8  # the added pixels hold the cluster's charge
    assert np.array_equal(labels[30:33, 40], before[30:33, 40]) and labels[5, 5] == BACKGROUND
    # a stricter posterior adds a subset
    strict = before.copy()
    grow_halos(strict, electrons, np.ones(event.shape[0]), 0.15, posterior=0.99)
    assert ((strict == CLUSTER) <= (labels == CLUSTER)).all() and (strict == CLUSTER).sum() < (labels == CLUSTER).sum()


def test_without_dark_current_a_halo_takes_every_occupied_pixel_the_profile_reaches():
    rng = np.random.default_rng(2)
    electrons, event = _diffused_cluster(rng, dark_e=0.0)
    labels = np.zeros(event.shape, np.uint8)
    labels[event >= 4] = CLUSTER
    reach = ndimage.binary_dilation(labels == CLUSTER, np.ones((3, 3), bool))
    grow_halos(labels, electrons, np.zeros(event.shape[0]), 0.15, posterior=0.9)
    within = reach & (event >= 1)
    assert (labels[within] == CLUSTER).mean() > 0.95
    assert not (labels[event == 0] == CLUSTER).any()


def test_a_track_gets_no_halo():
    """The fitted profile is a point's Gaussian: a component longer than the fit's stamp is left as it is."""
    rng = np.random.default_rng(3)
    shape = (40, 40)
    electrons = rng.poisson(1.0, shape) + rng.normal(0, 0.15, shape)
    electrons[20, 5:25] += 30
    electrons[19, 5:25] += 2
    labels = np.zeros(shape, np.uint8)
    labels[20, 5:25] = CLUSTER
    before = labels.copy()
    grow_halos(labels, electrons, np.ones(shape[0]), 0.15, posterior=0.5)
    assert np.array_equal(labels, before)


def test_halos_change_nothing_on_a_frame_that_does_not_resolve_electrons(tmp_path, model, frame):
    rule = {"logit_offsets": [0.0, 0.0, 0.0, 1.0]}
    loaded, meta = _saved(tmp_path, model, rule)
    without = predict_frame(loaded, meta, frame.image).labels
    loaded, meta = _saved(tmp_path, model, {**rule, "halo_posterior": 0.5})
    assert DecisionRule.from_metadata(meta).halo_posterior == 0.5
    assert np.array_equal(predict_frame(loaded, meta, frame.image).labels, without)
