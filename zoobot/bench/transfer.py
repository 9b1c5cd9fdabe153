"""Figure 10, transfer: a model trained on a large simulated survey's decision tree (the base, as users
download a model trained on a big Galaxy Zoo survey), finetuned to a binary question it never saw as
such ("has a bar", a 0/1 label from the simulator's latent bar strength) with a few hundred labelled
galaxies, against the same CNN trained from scratch on them for the same CPU time. Judged by the test
ROC AUC of the label. Figure 11: a campaign on that question started from the base against one
started from scratch.

The base is trained once per benchmark run (`transfer_base`, `sizes.transfer_base_galaxies`), on its
own survey; another survey of the same simulator (other galaxies) carries the question, so the base
model has seen none of the galaxies it is finetuned or tested on. The transfer study
(benchmarks/transfer_study.py, benchmarks/results/transfer-study-2026-12-07-base12k.md) found the base's
size to be the lever: finetuned from a base of 2,800 training galaxies the test AUC was 0.88, from 8,400
it was 0.95.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from zoobot.bench import timing
from zoobot.bench.config import Sizes, campaign_config
from zoobot.bench.measurement import Measurement

BAR_THRESHOLD = 0.3  # sim_bar_strength above this: "has a bar" (about 16% of simulated galaxies)
QUESTION = "barred"
SCHEMA = f"""\
name: bars
id_column: {{id_column}}
questions:
  - name: {QUESTION}
    binary_column: has_bar
"""


def write_bar_question(survey, n_galaxies: int | None = None) -> tuple[Path, Path]:
    """(catalog, schema) of a 0/1 'has a bar' question for the survey's first n_galaxies, written
    beside its catalog (the images' paths are relative to that folder)."""
    catalog = survey.catalog
    id_column = catalog.columns[0]
    table = catalog[[id_column, "file_loc", "sim_bar_strength"]].iloc[:n_galaxies].copy()
    table["has_bar"] = (table["sim_bar_strength"] > BAR_THRESHOLD).astype(int)
    folder = Path(survey.catalog_path).parent
    table.to_csv(folder / "bars.csv", index=False)
    (folder / "bars.yaml").write_text(SCHEMA.format(id_column=id_column))
    return folder / "bars.csv", folder / "bars.yaml"


def bar_split(n_train: int, n_available: int) -> tuple[int, float, float]:
    """(galaxies used, validation fraction, test fraction) for n_train training galaxies, a third as
    many for validation and twice as many for the test (or what the survey has)."""
    n_total = min(n_available, n_train * 10 // 3)
    return n_total, 0.1, 1 - 0.1 - n_train / n_total


def bar_shards(root: Path, survey, n_train: int, image_size: int, seed: int) -> Path:
    """The 'has a bar' question of the survey's galaxies as shards (bar_split's sizes)."""
    from zoobot.data.convert import ConvertConfig, convert

    n_total, val, test = bar_split(n_train, len(survey.catalog))
    catalog, schema = write_bar_question(survey, n_total)
    return Path(convert(ConvertConfig(
        catalog=str(catalog), schema=str(schema), output_dir=str(root / "bar_shards"), image_size=image_size,
        val_fraction=val, test_fraction=test, seed=seed)).manifest.root)


def transfer_base(root: Path, sizes: Sizes, seed: int) -> Path:
    """The base model of figures 10 and 11: the default tree model (`zoobot train`'s recipe) trained for
    `sizes.science_epochs` on a survey of `sizes.transfer_base_galaxies`; the path of its saved bundle."""
    from zoobot.bench.data import simulate
    from zoobot.core.model_meta import ModelMeta
    from zoobot.data.convert import ConvertConfig, convert
    from zoobot.data.manifest import Manifest
    from zoobot.model.checkpoint import Checkpoint
    from zoobot.model.network import BUNDLE_KERAS, ModelConfig, save_bundle
    from zoobot.model.train import TrainConfig, train

    survey = simulate(root / "survey", sizes.transfer_base_galaxies, sizes.science_image_size, seed + 11)
    manifest = Manifest.read(convert(ConvertConfig(
        catalog=str(survey.catalog_path), output_dir=str(root / "shards"), image_size=sizes.science_image_size,
        seed=seed)).manifest.root)
    with timing.quiet():
        trained = train(TrainConfig(shards=str(manifest.root), epochs=sizes.science_epochs, seed=seed), ModelConfig(),
                        manifest, Checkpoint(root / "checkpoint"))
    meta = ModelMeta(manifest.schema, "dirichlet", image_shape=manifest.image_shape, val_loss=trained.best_val_loss)
    return Path(save_bundle(trained.model, root / "bundle", meta)) / BUNDLE_KERAS


def cpu_budget(seconds: float):
    """A Keras callback that stops training at the end of the epoch in which the process has used
    `seconds` of CPU (imported lazily: `zoobot benchmark --help` does not load TensorFlow)."""
    import keras

    class CpuBudget(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.start = time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            if time.process_time() - self.start >= seconds:
                self.model.stop_training = True

    return CpuBudget()


def transfer_figure(root: Path, base_path: Path, survey, sizes: Sizes, seed: int, flag: str) -> list[Measurement]:
    """(finetuned test AUC, finetuned minus from-scratch test AUC) for one seed."""
    from zoobot.data.manifest import Manifest
    from zoobot.model.checkpoint import Checkpoint
    from zoobot.model.finetune import FinetuneConfig, finetune
    from zoobot.model.network import ModelConfig
    from zoobot.model.train import TrainConfig, train

    manifest = Manifest.read(bar_shards(root, survey, sizes.transfer_labels, sizes.science_image_size, seed))
    settings = {"shards": str(manifest.root), "seed": seed, "min_epochs": 0}
    with timing.quiet():
        start = time.process_time()
        tuned = finetune(FinetuneConfig(**settings, epochs=sizes.transfer_epochs, base_model=str(base_path)),
                         base_path, manifest, Checkpoint(root / "finetune_checkpoint"))
        budget = time.process_time() - start
        # from scratch: as many epochs as the finetune's CPU time buys (the schedule laid out over 4x
        # the finetune's epochs; the budget stops it), the best validation epoch kept
        scratch = train(TrainConfig(**settings, epochs=4 * sizes.transfer_epochs, patience=10 ** 6),
                        ModelConfig(output="binomial"), manifest, Checkpoint(root / "scratch_checkpoint"),
                        callbacks=[cpu_budget(budget)])
        scratch_cpu = time.process_time() - start - budget
    (finetuned_auc, positives), (scratch_auc, _) = (test_auc(r.model, manifest, sizes.n_samples) for r in (tuned, scratch))
    details = {"n_train": manifest.counts["train"], "n_validation": manifest.counts.get("validation", 0),
               "n_test": manifest.counts["test"], "positive_fraction_test": positives,
               "finetuned_auc": finetuned_auc, "scratch_auc": scratch_auc,
               "finetune_cpu_s": budget, "scratch_cpu_s": scratch_cpu,
               "finetune_epochs": tuned.epochs_run, "scratch_epochs": scratch.epochs_run,
               "finetune_best_epoch": tuned.best_epoch, "scratch_best_epoch": scratch.best_epoch}
    common = (f"'Has a bar' (sim_bar_strength > {BAR_THRESHOLD}) on another simulated survey: "
              f"{details['n_train']} training + {details['n_validation']} validation labels, test ROC AUC over "
              f"{details['n_test']} galaxies (T={sizes.n_samples}). Finetuned: a tree model trained on "
              f"{sizes.transfer_base_galaxies:,} other simulated galaxies "
              f"(zoobot finetune defaults, {sizes.transfer_epochs} epochs, {budget:.0f} CPU-s); from scratch: "
              f"the default CNN, binomial, for the same CPU time ({scratch.epochs_run} epochs, {scratch_cpu:.0f} "
              "CPU-s).")
    return [Measurement("transfer_auc_finetuned", finetuned_auc, None, (finetuned_auc,), common + flag, details),
            Measurement("transfer_auc_gain", finetuned_auc - scratch_auc, None, (finetuned_auc - scratch_auc,),
                        f"Finetuned {finetuned_auc:.3f} against from scratch {scratch_auc:.3f}. " + common + flag,
                        details)]


def test_auc(model, manifest, n_samples: int) -> tuple[float, float]:
    """(ROC AUC of the posterior-mean p(yes) against the 0/1 labels of the test split, the fraction of
    test galaxies labelled yes)."""
    from sklearn.metrics import roc_auc_score

    from zoobot.core.model_meta import ModelMeta
    from zoobot.model.predict import predict_split

    meta = ModelMeta(manifest.schema, "binomial", QUESTION)
    predictions, _, counts, _ = predict_split(model, meta, manifest, "test", n_samples)
    labels = counts[:, 0] > 0  # has_bar_yes: 1 vote for a barred galaxy
    return float(roc_auc_score(labels, predictions.samples[:, 0, :].mean(axis=-1))), float(labels.mean())



# -- 11: a campaign on the new question, from the tree model against from scratch ----------------------


def transfer_campaign_figure(root: Path, base_path: Path, survey, sizes: Sizes, seed: int, flag: str,
                             say=print) -> Measurement:
    """Labels a BALD campaign on 'has a bar' started from the tree model (`initial_model`) needs to reach
    the final test loss of the same campaign started from scratch, over the labels that one used."""
    from dataclasses import replace

    from zoobot.core.learning_curves import labels_needed
    from zoobot.bench.scratch import in_own_thread, scratch_experiment
    from zoobot.data.convert import ConvertConfig, convert
    from zoobot.model.network import ModelConfig
    from zoobot.workflows.campaign import run_campaign

    catalog, schema = write_bar_question(survey)
    shards = Path(convert(ConvertConfig(
        catalog=str(catalog), schema=str(schema), output_dir=str(root / "bar_campaign_shards"),
        image_size=sizes.science_image_size, labelled_size=sizes.al_initial, seed=seed)).manifest.root)
    curves = {}
    for name, initial in (("from_base", str(base_path)), ("scratch", "")):
        config = replace(campaign_config(shards, root / name, sizes, seed), arms="bald", initial_model=initial)
        with scratch_experiment(root / name / "tracking"), timing.quiet():
            outcome = in_own_thread(run_campaign, config, ModelConfig(output="binomial"),
                                    say=lambda text, name=name: say(f"    {name}: {text}"))
        curves[name] = outcome.curves["bald"]
    saving, reason = labels_needed(curves, baseline="scratch")
    value = float(1.0 - saving) if np.isfinite(saving) else None
    shown = "; ".join(f"{name}: " + ", ".join(f"{int(n)}->{loss:.3f}" for n, loss in zip(c["n_labelled"],
                                                                                          c["test_loss"]))
                      for name, c in curves.items())
    notes = (f"'Has a bar' (sim_bar_strength > {BAR_THRESHOLD}), BALD campaigns of {sizes.al_iterations} iterations "
             f"from {sizes.al_initial} labelled galaxies, {sizes.al_acquire} acquired each: one started from the tree "
             f"model trained on {sizes.transfer_base_galaxies:,} other simulated galaxies (initial_model), one from scratch; test loss by labelled count: {shown}."
             + (f" Not computed: {reason}." if value is None else "") + flag)
    return Measurement("transfer_label_ratio", value, None, () if value is None else (value,), notes,
                       {name: c.to_dict(orient="list") for name, c in curves.items()})
