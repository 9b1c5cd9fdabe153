"""The science figures on simulated surveys, whose true vote probabilities are known: label efficiency
of the real active-learning campaign for the binomial smooth-or-featured model and the Dirichlet tree
model (7), calibration of the posteriors (8), how close the predicted fractions come to the truth
against the volunteers' own, and whether the MC spread follows the error (9), and transfer of the tree
model to a new 0/1 question, finetuned (10) and as a campaign's start (11; zoobot.bench.transfer). Each over
`sizes.science_seeds` seeds: a new survey, split, initialisation and campaign per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoobot.bench import timing
from zoobot.bench.config import ARMS, QUESTION, Sizes, campaign_config
from zoobot.bench.data import simulate
from zoobot.bench.measurement import SCIENCE_KEYS, Measurement, over_seeds
from zoobot.bench.scratch import in_own_thread, scratch_experiment
from zoobot.bench.transfer import transfer_base, transfer_campaign_figure, transfer_figure

CAMPAIGN_MODELS = {"label_efficiency": "binomial", "label_efficiency_dirichlet": "dirichlet"}
GROUP_KEYS = {"label_efficiency": tuple(CAMPAIGN_MODELS),
              "calibration": ("coverage_error_w5", "coverage_error_w10", "recovery_rmse_ratio", "spread_error_spearman"),
              "transfer": ("transfer_auc_finetuned", "transfer_auc_gain", "transfer_label_ratio")}


def science_figures(root: Path, sizes: Sizes, seed: int, say=print) -> list[Measurement]:
    """The figures of `sizes.science_groups`, each over the seeds (the others are left out)."""
    flag = "" if sizes.mode in ("full", "science") else f" Measured at {sizes.mode} sizes: not comparable with the paper."
    groups = sizes.science_groups
    seeds = [seed + i for i in range(sizes.science_seeds)]
    per_seed: dict[str, list[Measurement]] = {key: [] for key in SCIENCE_KEYS}
    if "transfer" in groups:
        say(f"  transfer: training the base tree model on {sizes.transfer_base_galaxies:,} simulated galaxies (once) ...")
        base = transfer_base(root / "transfer_base", sizes, seed)
    for s in seeds:
        folder = root / f"science_seed_{s}"
        if "calibration" in groups:
            say(f"  seed {s}: calibration, recovery and spread: training the tree model ...")
            survey = simulate(folder / "science_survey", sizes.science_galaxies, sizes.science_image_size, s + 1)
            for measurement in calibration_figures(folder, survey, sizes, s, flag):
                per_seed[measurement.key].append(measurement)
        if "transfer" not in groups and "label_efficiency" not in groups:
            continue
        al_survey = simulate(folder / "al_survey", sizes.al_galaxies, sizes.science_image_size, s + 101)
        if "transfer" in groups:
            say(f"  seed {s}: transfer: the tree model finetuned to 'has a bar', against from scratch ...")
            for measurement in transfer_figure(folder / "transfer", base, al_survey, sizes, s, flag):
                per_seed[measurement.key].append(measurement)
            say(f"  seed {s}: transfer: BALD campaigns on 'has a bar' from the tree model and from scratch ...")
            per_seed["transfer_label_ratio"].append(transfer_campaign_figure(
                folder / "transfer_campaign", base, al_survey, sizes, s, flag, say))
        if "label_efficiency" in groups:
            shards = active_learning_shards(folder, al_survey, sizes, s)
            for key, output in CAMPAIGN_MODELS.items():
                say(f"  seed {s}: label efficiency of the {output} model: BALD and random campaigns ...")
                per_seed[key].append(label_efficiency_figure(folder / output, shards, sizes, s, flag, say,
                                                             output=output, key=key))
    return [over_seeds(key, per_seed[key], seeds) for key in SCIENCE_KEYS if per_seed[key]]


# -- 7: label efficiency ------------------------------------------------------------------------------


def active_learning_shards(root: Path, survey, sizes: Sizes, seed: int) -> Path:
    """The survey converted with al_initial labelled galaxies, the rest an unlabelled pool."""
    from zoobot.data.convert import ConvertConfig, convert

    return Path(convert(ConvertConfig(
        catalog=str(survey.catalog_path), output_dir=str(root / "al_shards"), image_size=sizes.science_image_size,
        labelled_size=sizes.al_initial, seed=seed)).manifest.root)


def label_efficiency_figure(root: Path, shards: Path, sizes: Sizes, seed: int, flag: str, say=print,
                            output: str = "binomial", key: str = "label_efficiency") -> Measurement:
    """zoobot.workflows.campaign.run_campaign, as `zoobot active_learning` runs it (default model
    settings but the output), with its MLflow runs in a throwaway store."""
    from zoobot.model.network import ModelConfig
    from zoobot.workflows.campaign import run_campaign

    config = campaign_config(shards, root, sizes, seed)
    with scratch_experiment(root / "al_tracking"), timing.quiet():
        outcome = in_own_thread(run_campaign, config, ModelConfig(output=output),
                                say=lambda text: say(f"    {text}"))
    batch = f"selection={config.selection}" + (f", {config.diverse_candidates} candidates per pick"
                                               if config.selection == "diverse" else "")
    return label_efficiency(outcome, sizes, flag, key, batch)


def label_efficiency(outcome, sizes: Sizes, flag: str, key: str = "label_efficiency",
                     selection: str = "") -> Measurement:
    """Labels BALD needs / labels random needs, from a campaign's learning curves and label saving."""
    saving, curves = outcome.label_saving, outcome.curves
    value = float(1.0 - saving) if np.isfinite(saving) else None
    curve_text = "; ".join(f"{arm}: " + ", ".join(f"{int(n)}->{loss:.3f}" for n, loss in
                                                  zip(c["n_labelled"], c["test_loss"])) for arm, c in curves.items())
    notes = (f"Paper: 0.40-0.65. zoobot.workflows.campaign.run_campaign, one arm each for {ARMS} from the same "
             f"{sizes.al_initial} labelled galaxies, {sizes.al_iterations} iterations of {sizes.al_acquire} acquired "
             f"(T={sizes.al_samples}{f'; BALD batch: {selection}' if selection else ''}); test loss by labelled "
             f"count: {curve_text}."
             + (f" Not computed: {outcome.reason}." if value is None else "") + flag)
    return Measurement(key, value, None, () if value is None else (value,), notes,
                       {arm: c.to_dict(orient="list") for arm, c in curves.items()})


# -- 8 and 9: calibration and recovery ----------------------------------------------------------------


def calibration_figures(root: Path, survey, sizes: Sizes, seed: int, flag: str,
                        n_bootstrap: int = 100) -> list[Measurement]:
    from zoobot.core.model_meta import ModelMeta
    from zoobot.data.convert import ConvertConfig, convert
    from zoobot.data.manifest import Manifest
    from zoobot.model.network import ModelConfig
    from zoobot.model.predict import predict_split
    from zoobot.core.metrics import truth_metrics
    from zoobot.model.evaluate import known_truth
    from zoobot.model.train import Checkpoint, TrainConfig, train

    manifest = Manifest.read(convert(ConvertConfig(
        catalog=str(survey.catalog_path), output_dir=str(root / "science_shards"),
        image_size=sizes.science_image_size, seed=seed)).manifest.root)
    with timing.quiet():
        # the default recipe (zoobot train's), for the mode's number of epochs
        trained = train(TrainConfig(shards=str(manifest.root), epochs=sizes.science_epochs, seed=seed), ModelConfig(),
                        manifest, Checkpoint(root / "science_checkpoint"))
    meta = ModelMeta(manifest.schema, "dirichlet", image_shape=manifest.image_shape, val_loss=trained.best_val_loss)
    predictions, _, counts, _ = predict_split(trained.model, meta, manifest, "test", sizes.n_samples)
    w5, w10 = _coverage_errors(predictions, counts)
    scores = recovery(predictions, survey.catalog)
    spread = truth_metrics(predictions, known_truth(manifest, predictions.id_str))
    boot = _bootstrap(predictions, counts, survey.catalog, n_bootstrap, seed)
    details = {"n_galaxies": sizes.science_galaxies, "n_test": len(predictions.id_str),
               "epochs_run": trained.epochs_run, "best_val_loss": trained.best_val_loss,
               "image_size": sizes.science_image_size, **scores,
               "calibration_scales": trained.calibration.scales if trained.calibration else None}
    scale = (f", calibrated on its {manifest.counts['validation']} validation galaxies ({QUESTION} concentration "
             f"scale {trained.calibration.scales[QUESTION]:.3f})" if trained.calibration else ", not calibrated")
    common = (f"vgg dirichlet model trained on {manifest.counts['train']} simulated galaxies{scale}, tested on "
              f"{len(predictions.id_str)}, T={sizes.n_samples}; spread: 5-95% of {n_bootstrap} bootstrap resamples "
              "of the test set (one training).")

    def measurement(key, value, values, notes):
        low, high = np.nanpercentile(values, [5, 95])
        return Measurement(key, float(value), (float(low), float(high)), (float(value),), notes + flag, details)

    return [
        measurement("coverage_error_w5", w5, boot["w5"], "Paper's bar model: 10.6%. " + common),
        measurement("coverage_error_w10", w10, boot["w10"], "Paper's bar model: 2.9%. " + common),
        measurement("recovery_rmse_ratio", scores["rmse_predicted"] / scores["rmse_observed"], boot["rmse"],
                    f"RMSE of the posterior-mean fractions against the simulator's true probabilities "
                    f"({scores['rmse_predicted']:.3f}) over that of the volunteers' own vote fractions "
                    f"({scores['rmse_observed']:.3f}, the noise floor of one galaxy's votes). " + common),
        Measurement("spread_error_spearman", spread[f"{QUESTION}_spread_error_spearman"], None,
                    (spread[f"{QUESTION}_spread_error_spearman"],),
                    "Spearman correlation over test galaxies between the MC standard deviation of the predicted "
                    f"{QUESTION} fraction and its error against the true probability: > 0 means the model is "
                    "uncertain where it is wrong, which BALD needs (aim >= 0.3). " + common + flag, details),
    ]


def _bootstrap(predictions, counts, catalog, n_bootstrap: int, seed: int) -> dict[str, list[float]]:
    """One trained model: the spread is over resamples of the test galaxies."""
    rng = np.random.default_rng(seed)
    boot = {"w5": [], "w10": [], "rmse": []}
    for _ in range(n_bootstrap):
        index = rng.integers(0, len(predictions.id_str), len(predictions.id_str))
        subset = predictions.subset(index)
        w5, w10 = _coverage_errors(subset, counts[index])
        scores = recovery(subset, catalog)
        boot["w5"].append(w5)
        boot["w10"].append(w10)
        boot["rmse"].append(scores["rmse_predicted"] / scores["rmse_observed"])
    return boot


def recovery(predictions, catalog) -> dict[str, float]:
    """RMSE of predicted and of observed smooth-or-featured fractions against the simulator's truth."""
    truth = catalog.set_index(catalog.columns[0]).loc[predictions.id_str]
    columns = predictions.answer_columns(QUESTION)
    true = truth[[f"true_{c}" for c in columns]].to_numpy(float)
    observed = truth[[f"{c}_fraction" for c in columns]].to_numpy(float)
    predicted = predictions.mean_fractions(QUESTION)
    return {"rmse_predicted": float(np.sqrt(np.nanmean((predicted - true) ** 2))),
            "rmse_observed": float(np.sqrt(np.nanmean((observed - true) ** 2)))}


def _coverage_errors(predictions, counts) -> tuple[float, float]:
    from zoobot.core.coverage import coverage_errors, coverage_table

    errors = coverage_errors(coverage_table(predictions, counts, question=QUESTION))
    return errors[f"{QUESTION}_coverage_error_w5"], errors[f"{QUESTION}_coverage_error_w10"]
