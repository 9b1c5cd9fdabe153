"""The workflows' own logic, fast: which steps the `main` pipeline runs and what each is fed (with a
fake step runner), and the one description of what a model's outputs mean."""

import json
from types import SimpleNamespace

import pytest

from zoobot.core.model_meta import ModelMeta
from zoobot.core.schema import GZ_DECALS
from zoobot.workflows.pipeline import PipelineConfig, needed_steps, run_pipeline


def fake_runner(log):
    def run_step(step):
        log.append(step)
        tags = {"model_uri": "models:/m-123"} if step.entry_point in ("train", "finetune") else {}
        return SimpleNamespace(info=SimpleNamespace(run_id=f"{step.entry_point}-run"), data=SimpleNamespace(tags=tags))

    return run_step


def test_the_whole_pipeline_feeds_each_step_the_output_uri_of_the_one_before():
    log = []
    runs = run_pipeline(PipelineConfig(), fake_runner(log))
    assert [s.entry_point for s in log] == ["simulate", "convert", "train", "evaluate", "convert", "active_learning"]
    assert list(runs) == ["simulate", "convert", "train", "evaluate", "convert_campaign", "active_learning"]
    by_name = {s.entry_point: s.parameters for s in log}
    everything, campaign = log[1].parameters, log[4].parameters
    assert everything["catalog"] == campaign["catalog"] == "runs:/simulate-run/survey/catalog.csv"
    # the model learns from every labelled galaxy; the campaign starts from labelled_size of them
    assert everything["labelled_size"] == 0 and campaign["labelled_size"] == PipelineConfig().labelled_size > 0
    assert everything["output_dir"] != campaign["output_dir"]
    assert by_name["train"]["shards"] == by_name["evaluate"]["shards"] == "runs:/convert-run/shards"
    assert by_name["evaluate"]["model"] == "models:/m-123"  # the logged model, not a guess at its path
    assert by_name["active_learning"]["shards"] == "runs:/convert-run/shards"
    assert by_name["active_learning"]["output"] == "binomial"  # the paper's campaign model
    config = PipelineConfig()
    assert (by_name["active_learning"]["selection"], by_name["active_learning"]["diverse_candidates"]) == (
        config.al_selection, config.al_diverse_candidates)


def test_a_bad_campaign_selection_stops_the_pipeline_before_anything_runs():
    with pytest.raises(ValueError, match=r"al_selection must be one of \['top', 'power', 'diverse'\]; found 'best'"):
        PipelineConfig(al_selection="best")
    with pytest.raises(ValueError, match="al_diverse_candidates must be >= 1"):
        PipelineConfig(al_diverse_candidates=0)


def test_a_chosen_step_brings_what_it_needs_and_a_users_catalog_skips_the_simulation():
    assert needed_steps(PipelineConfig(steps="evaluate")) == {"evaluate", "train", "convert"}
    assert needed_steps(PipelineConfig(steps="active_learning")) == {"active_learning", "convert"}
    log = []
    run_pipeline(PipelineConfig(steps="train", catalog="my.csv"), fake_runner(log))
    assert [s.entry_point for s in log] == ["convert", "train"]
    assert log[0].parameters["catalog"] == "my.csv"


def test_a_users_catalog_trains_on_every_labelled_galaxy_and_replays_a_campaign_only_when_asked():
    log = []
    config = PipelineConfig(catalog="/surveys/mine.fits", id_column="objid", image_root="/surveys/cutouts", channels=1)
    runs = run_pipeline(config, fake_runner(log))
    assert [s.entry_point for s in log] == ["convert", "train", "evaluate"] and list(runs) == [
        "convert", "train", "evaluate"]
    convert = log[0].parameters
    assert convert["labelled_size"] == 0  # every labelled galaxy in train/validation/test
    assert (convert["id_column"], convert["image_root"], convert["channels"]) == ("objid", "/surveys/cutouts", 1)
    asked = []
    run_pipeline(PipelineConfig(catalog="/surveys/mine.fits", steps="convert,train,evaluate,active_learning"),
                 fake_runner(asked))
    assert [s.entry_point for s in asked] == ["convert", "train", "evaluate", "convert", "active_learning"]
    assert "id_column" not in asked[0].parameters  # MLflow keeps no empty parameter: it would never match


def test_with_a_base_model_the_train_step_is_a_finetune_and_the_campaign_starts_from_it():
    log = []
    runs = run_pipeline(PipelineConfig(base_model="models:/survey@champion"), fake_runner(log))
    assert [s.entry_point for s in log] == ["simulate", "convert", "finetune", "evaluate", "convert", "active_learning"]
    assert log[2].step_name == "train" and "train" in runs
    assert log[2].parameters["base_model"] == "models:/survey@champion"
    assert log[2].parameters["output"] == "dirichlet"  # the catalog's whole tree, as the train step models it
    assert log[3].parameters["model"] == "models:/m-123"
    assert log[5].parameters["initial_model"] == "models:/survey@champion"
    plain = []
    run_pipeline(PipelineConfig(), fake_runner(plain))
    assert "initial_model" not in plain[5].parameters  # an empty parameter would never match a finished run


def test_a_model_without_a_logged_uri_is_evaluated_from_its_run():
    def run_step(step):
        return SimpleNamespace(info=SimpleNamespace(run_id=f"{step.entry_point}-run"), data=SimpleNamespace(tags={}))

    log = []
    run_pipeline(PipelineConfig(steps="evaluate"), lambda step: (log.append(step), run_step(step))[1])
    assert log[-1].parameters["model"] == "runs:/train-run/model"


def test_model_meta_round_trips_and_reads_older_bundles():
    meta = ModelMeta(GZ_DECALS.to_dict(), "binomial", "bar", image_shape=(64, 64, 3), val_loss=0.5)
    assert ModelMeta.from_dict(json.loads(json.dumps(meta.to_dict()))) == meta
    older = ModelMeta.from_dict({"schema": GZ_DECALS.to_dict(), "output": "dirichlet", "question": None})
    assert older.image_shape is None and older.schema_obj.name == "decals"
    newer = ModelMeta.from_dict({**meta.to_dict(), "base_model": "models:/x@champion"})
    assert newer.to_dict()["base_model"] == "models:/x@champion"  # keys a newer Zoobot wrote are kept
    with pytest.raises(ValueError, match="one of"):
        ModelMeta(GZ_DECALS.to_dict(), "softmax")
