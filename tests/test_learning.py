"""Training that does not give up at chance: a from-scratch model, the default settings, a few hundred
labelled galaxies and a user-defined binary question (issue 13, item 2).

The question is a 0/1 column derived from the simulator's latent morphology (is the galaxy a disc?),
written as a one-question schema file and one "vote" per galaxy, as a user would bring their own
labels. The losses' chance level is that of always answering 0.5: ln 2 = 0.693 nats per galaxy.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from zoobot.model.checkpoint import Checkpoint
from zoobot.model.network import ModelConfig
from zoobot.model.train import TrainConfig, train
from tests.conftest import TINY_MODEL

CHANCE = math.log(2)


@pytest.fixture(scope="module")
def binary_shards(tmp_path_factory):
    from zoobot.data.convert import ConvertConfig, convert
    from zoobot.data.simulate import SimulateConfig, simulate_survey

    root = tmp_path_factory.mktemp("binary")
    survey = simulate_survey(SimulateConfig(output_dir=str(root / "survey"), n_galaxies=360, image_size=32,
                                            seed=3, workers=1))
    table = pd.read_csv(survey.catalog_path)
    disc = table["sim_is_disc"].astype(int)
    catalog = pd.DataFrame({"iauname": table["iauname"], "file_loc": table["file_loc"],
                            "is-disc_yes": disc, "is-disc_no": 1 - disc})
    catalog.to_csv(root / "survey" / "binary.csv", index=False)
    (root / "binary.yaml").write_text(
        "name: is-disc\nid_column: iauname\nquestions:\n  - name: is-disc\n    answers: {'yes': is-disc_yes, 'no': is-disc_no}\n")
    convert(ConvertConfig(catalog=str(root / "survey" / "binary.csv"), schema=str(root / "binary.yaml"),
                          output_dir=str(root / "shards"), image_size=32, workers=1, seed=3))
    return root / "shards"


@pytest.mark.slow
def test_the_default_recipe_learns_a_binary_question_from_a_few_hundred_galaxies(binary_shards, tmp_path):
    from zoobot.data.manifest import Manifest

    manifest = Manifest.read(binary_shards)
    assert 200 <= manifest.split("train").count <= 300
    result = train(TrainConfig(shards=str(binary_shards), seed=1), ModelConfig(output="binomial"), manifest,
                   Checkpoint(tmp_path / "checkpoint"))
    assert result.best_val_loss < 0.6 * CHANCE, result.history["val_loss"]


def test_early_stopping_waits_for_min_epochs(binary_shards, tmp_path):
    """A model whose validation loss never improves (learning rate ~0, and no dropout: MC dropout would
    make each epoch's validation loss a new draw) would stop after `patience` epochs; min_epochs holds
    it on."""
    from zoobot.data.manifest import Manifest

    manifest = Manifest.read(binary_shards)
    config = TrainConfig(shards=str(binary_shards), epochs=4, patience=1, min_epochs=3, learning_rate=1e-12,
                         batch_size=64)
    result = train(config, ModelConfig(output="binomial", dropout_rate=0.0, **TINY_MODEL), manifest, Checkpoint(tmp_path / "c"))
    assert result.epochs_run == 3 and result.stopped_early


def test_the_cosine_schedule_warms_up_then_decays_to_a_hundredth():
    from zoobot.model.train import make_optimizer

    config = TrainConfig(shards="x", epochs=10, learning_rate=1e-3, schedule="cosine", warmup_epochs=2)
    schedule = make_optimizer(config, steps_per_epoch=5)._learning_rate  # the schedule itself, by step
    values = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert values[0] == 0.0 and values[1] == pytest.approx(5e-4) and values[2] == pytest.approx(1e-3)
    assert values[2] > values[3] > values[4] == pytest.approx(1e-5)
    adamw = make_optimizer(TrainConfig(shards="x", weight_decay=0.05), steps_per_epoch=5)
    assert type(adamw).__name__ == "AdamW" and adamw.weight_decay == 0.05
