"""Calibration of a Dirichlet model's concentrations after training: the fit recovers a known scale,
questions with few votes take the pooled one, training sets the scales in the saved model, and the
cases with nothing to calibrate say why."""

import numpy as np
import pytest

from tests.conftest import TINY_MODEL
from zoobot.core.calibration import Calibration, fit_calibration, mixture_nll
from zoobot.core.predictions import Predictions
from zoobot.core.schema import load_schema


def simulated(schema, n, true_scale, rng, n_samples=8, votes=40):
    """Predictions whose concentrations are 1/true_scale times too large: the votes are drawn from
    Dirichlet-multinomials of true_scale * alpha, with each answer of a question sharing N votes."""
    alpha = rng.uniform(2.0, 30.0, size=(n, schema.n_answers))
    samples = np.repeat(alpha[:, :, None], n_samples, axis=2) * rng.uniform(0.95, 1.05, (n, schema.n_answers, n_samples))
    counts = np.zeros((n, schema.n_answers), dtype=np.int64)
    for a, b in schema.question_index_groups:
        p = np.stack([rng.dirichlet(true_scale * row) for row in alpha[:, a:b]])
        counts[:, a:b] = np.stack([rng.multinomial(votes, row) for row in p])
    return Predictions(np.arange(n).astype(str), samples, "dirichlet", schema), counts


def test_fit_recovers_a_known_concentration_scale_per_question():
    schema = load_schema("decals")
    rng = np.random.default_rng(0)
    predictions, counts = simulated(schema, 600, 0.3, rng)
    fitted = fit_calibration(predictions, counts)
    assert not fitted.pooled and set(fitted.scales) == set(schema.question_names)
    for question, scale in fitted.scales.items():
        assert 0.2 < scale < 0.45, (question, scale)
    assert fitted.nll_after < fitted.nll_before
    scales = fitted.answer_scales(schema)
    a, b = schema.question_index_groups[1]
    assert scales.shape == (schema.n_answers,) and np.all(scales[a:b] == fitted.scales[schema.question_names[1]])
    assert set(fitted.metrics()) == {"calibration_nll_before", "calibration_nll_after",
                                     *(f"calibration_scale_{q}" for q in schema.question_names)}

    calibrated, _ = simulated(schema, 600, 1.0, np.random.default_rng(1))
    for scale in fit_calibration(calibrated, counts_of(calibrated, schema, 1.0)).scales.values():
        assert 0.7 < scale < 1.4


def counts_of(predictions, schema, true_scale):
    rng = np.random.default_rng(2)
    alpha = predictions.samples.mean(axis=2)
    counts = np.zeros(alpha.shape, dtype=np.int64)
    for a, b in schema.question_index_groups:
        counts[:, a:b] = np.stack([rng.multinomial(40, rng.dirichlet(true_scale * row)) for row in alpha[:, a:b]])
    return counts


def test_questions_with_few_votes_take_the_pooled_scale():
    schema = load_schema("decals")
    predictions, counts = simulated(schema, 200, 0.5, np.random.default_rng(3))
    rare = schema.question_names[-1]
    a, b = schema.question_index_groups[-1]
    counts[10:, a:b] = 0  # only 10 galaxies were asked the last question
    fitted = fit_calibration(predictions, counts)
    assert fitted.pooled == (rare,) and fitted.n_galaxies[rare] == 10
    assert fitted.scales[rare] == fitted.pooled_scale and 0.35 < fitted.pooled_scale < 0.7
    assert "too few votes" in fitted.summary()


def test_mixture_nll_is_the_dirichlet_multinomial_of_one_sample_and_averages_probabilities():
    from scipy.stats import dirichlet_multinomial

    alpha = np.array([[[2.0, 5.0], [3.0, 1.0]]])  # one galaxy, two answers, two samples
    counts = np.array([[7, 3]])
    one = dirichlet_multinomial(alpha[0, :, 0], 10).logpmf(counts[0])
    two = dirichlet_multinomial(alpha[0, :, 1], 10).logpmf(counts[0])
    assert mixture_nll(alpha[:, :, :1], counts)[0] == pytest.approx(-one)
    assert mixture_nll(alpha, counts)[0] == pytest.approx(-np.log((np.exp(one) + np.exp(two)) / 2))


def test_binomial_predictions_and_unvoted_galaxies_are_refused_with_the_reason():
    schema = load_schema("decals")
    binomial = Predictions(np.array(["a"]), np.full((1, 1, 4), 0.5), "binomial", schema, schema.question_names[0])
    with pytest.raises(ValueError, match="binomial"):
        fit_calibration(binomial, np.zeros((1, schema.n_answers)))
    predictions, _ = simulated(schema, 3, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="No galaxy of the 3 given has a vote"):
        fit_calibration(predictions, np.zeros((3, schema.n_answers)))


def test_training_calibrates_the_saved_model_and_says_when_it_cannot(tiny_shards, tmp_path):
    import dataclasses

    from zoobot.core.model_meta import ModelMeta
    from zoobot.data.manifest import Manifest
    from zoobot.model.calibrate import calibration_layer
    from zoobot.model.checkpoint import Checkpoint
    from zoobot.model.network import ModelConfig, load_bundle, save_bundle
    from zoobot.model.train import TrainConfig, train

    manifest = Manifest.read(tiny_shards)
    config = TrainConfig(shards=str(tiny_shards), batch_size=8, epochs=1, schedule="constant", min_epochs=0)
    result = train(config, ModelConfig(**TINY_MODEL), manifest, Checkpoint(tmp_path / "c"))
    assert isinstance(result.calibration, Calibration)
    assert result.calibration.n_validation == manifest.counts["validation"]
    assert result.calibration_note.startswith(f"Calibrated on {manifest.counts['validation']} validation galaxies")
    scales = calibration_layer(result.model).scale.numpy()
    np.testing.assert_allclose(scales, result.calibration.answer_scales(manifest.schema_obj))
    assert not np.allclose(scales, 1.0)
    # the scales travel with the saved model, and the checkpoint's weights (training's) stay uncalibrated
    save_bundle(result.model, tmp_path / "bundle", ModelMeta(manifest.schema, "dirichlet"))
    from zoobot.model.network import BUNDLE_KERAS
    loaded, _ = load_bundle(tmp_path / "bundle" / BUNDLE_KERAS)
    np.testing.assert_allclose(calibration_layer(loaded).scale.numpy(), scales)

    off = train(dataclasses.replace(config, calibrate=False), ModelConfig(**TINY_MODEL), manifest,
                Checkpoint(tmp_path / "off"))
    assert off.calibration is None and "calibrate=false" in off.calibration_note
    np.testing.assert_allclose(calibration_layer(off.model).scale.numpy(), 1.0)

    binomial = train(config, ModelConfig(**TINY_MODEL, output="binomial"), manifest, Checkpoint(tmp_path / "b"))
    assert binomial.calibration is None and binomial.calibration_note == ""
    assert calibration_layer(binomial.model) is None
