"""The plain-language verdict of an evaluation: signed coverage errors read as over- or
under-confidence, single-label questions by accuracy and ROC AUC, the paper's figures beside ours."""

import math

import pytest

from zoobot.core.verdicts import calibration_words, question_verdict, verdicts


@pytest.mark.parametrize("signed, words", [
    (0.01, "well calibrated"), (-0.029, "well calibrated"), (-0.05, "slightly over-confident"),
    (0.07, "slightly under-confident"), (-0.15, "over-confident"), (0.2, "under-confident"),
    (-0.4, "badly over-confident"), (math.nan, "calibration not measured")])
def test_signed_coverage_errors_read_as_confidence(signed, words):
    assert calibration_words(signed) == words


def test_a_question_of_votes_and_one_of_single_labels():
    metrics = {"smooth_mae": 0.081, "smooth_rmse": 0.112, "smooth_accuracy": 0.87, "smooth_n_galaxies": 1234,
               "smooth_coverage_signed_error_w5": -0.041, "smooth_coverage_signed_error_w10": -0.012,
               "ring_accuracy": 0.91, "ring_roc_auc": 0.95, "ring_precision": 0.8, "ring_recall": 0.7, "ring_f1": 0.75,
               "coverage_error_w5": 0.041, "coverage_error_w10": 0.012}
    said = verdicts(metrics, ["smooth", "ring"], single_label_questions=["ring"])
    assert said[0] == ("smooth (1,234 galaxies with enough votes for a majority): mean error 0.081 in vote fraction "
                       "(RMSE 0.112); the volunteers' majority answer predicted for 87%; at +-5 votes 4.1% fewer "
                       "galaxies inside than the model promised: slightly over-confident (at +-10: -1.2%).")
    assert said[1].startswith("ring: accuracy 0.91, ROC AUC 0.95 (0.5 is chance); precision 0.80")
    assert "no coverage in votes" in said[1]
    assert "the 2020 paper's model: 10.6% and 2.9%" in said[2]
    quiet = question_verdict("bar", {"bar_mae": 0.1, "bar_rmse": 0.2}, single_label=False)
    assert "coverage not measured" in quiet
