"""The registered model as its users call it: logged as code (MLflow's models-from-code, nothing
pickled), raw MC samples by default, a table of named vote fractions on request, and a warning for
images scaled to [0, 1] instead of the 0..255 the model was trained on."""

import logging
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import yaml

from zoobot import tracking
from zoobot.core.schema import load_schema
from zoobot.model.network import ModelConfig, build_model
from zoobot.tracking.pyfunc import fractions_table, scale_warning

SHAPE = (16, 16, 3)


def log_tiny_model(output="dirichlet"):
    schema = load_schema("decals")
    config = ModelConfig(filters="4", dense_units=8, output=output)
    model = build_model(config, schema, SHAPE)
    with mlflow.start_run():
        return tracking.log_model(model, SimpleNamespace(schema=schema.to_dict()),
                                  SimpleNamespace(registered_model_name="", champion_alias=""), config, 1.0)["model_uri"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One tiny model logged to its own store, and loaded back as users load it."""
    root = tmp_path_factory.mktemp("served")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    try:  # in the store's Default experiment: mlflow.set_experiment would pin it for the whole test process
        uri = log_tiny_model()
        local = mlflow.artifacts.download_artifacts(uri, dst_path=str(root / "model"))
        yield SimpleNamespace(model=mlflow.pyfunc.load_model(uri), local=local)
    finally:
        mlflow.set_tracking_uri(previous)


def test_the_model_is_logged_as_code_with_its_input_contract(served):
    from pathlib import Path

    mlmodel = yaml.safe_load((Path(served.local) / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert flavor["model_code_path"].endswith("served_model.py") and "python_model" not in flavor
    assert not list(Path(served.local).rglob("python_model.pkl"))
    assert mlmodel["metadata"]["input"]["pixel_values"] == "0..255"
    params = {p["name"]: p for p in yaml.safe_load(mlmodel["signature"]["params"])}
    assert params["output"]["default"] == "samples" and params["interval"]["default"] == 0.9


def test_samples_stay_the_default_and_fractions_are_named_after_the_answers(served):
    images = np.random.default_rng(0).uniform(0, 255, (3, *SHAPE)).astype("float32")
    samples = served.model.predict(images, params={"n_samples": 4})
    assert samples.shape == (3, 34, 4)

    table = served.model.predict(images, params={"n_samples": 6, "output": "fractions"})
    schema = load_schema("decals")
    answers = [c for q in schema.question_names for c in schema.question(q).columns]
    assert list(table.columns) == [f"{a}_{part}" for a in answers for part in ("mean", "low", "high")] + ["warning"]
    assert len(table) == 3 and (table["warning"] == "").all()
    for question in schema.question_names:
        means = table[[f"{a}_mean" for a in schema.question(question).columns]].sum(axis=1)
        np.testing.assert_allclose(means, 1.0, atol=1e-5)
    lows, highs = table.filter(like="_low").to_numpy(), table.filter(like="_high").to_numpy()
    assert (lows <= highs).all() and (lows >= 0).all() and (highs <= 1).all()


def test_images_scaled_to_one_draw_a_warning_in_the_answer_and_the_log(served, caplog):
    images = np.random.default_rng(1).uniform(0, 1, (2, *SHAPE)).astype("float32")
    with caplog.at_level(logging.WARNING, logger="zoobot.served"):
        table = served.model.predict(images, params={"output": "fractions"})
        served.model.predict(images)  # the samples too: in the log
    assert table["warning"].str.contains("multiply by 255").all()
    assert [r.getMessage() for r in caplog.records if r.name == "zoobot.served"][0].startswith("every pixel")
    assert len([r for r in caplog.records if r.name == "zoobot.served"]) == 2


@pytest.mark.parametrize("params, message", [
    ({"output": "probabilities"}, r"output must be one of \['samples', 'fractions'\]; found 'probabilities'"),
    ({"output": "fractions", "interval": 1.5}, "interval must be between 0 and 1"),
])
def test_a_bad_request_says_what_it_takes(served, params, message):
    with pytest.raises(Exception, match=message):
        served.model.predict(np.full((1, *SHAPE), 100.0, dtype="float32"), params=params)


def test_scale_warning_only_for_images_wholly_in_the_unit_range():
    assert scale_warning(np.zeros((1, 2, 2, 3))) != ""
    assert scale_warning(np.full((1, 2, 2, 3), 0.5)) != ""
    assert scale_warning(np.array([[[[0.0, 1.0, 2.0]]]])) == ""
    assert scale_warning(np.array([[[[-0.5, 0.5, 0.2]]]])) == ""  # standardised, not [0, 1]: another problem
    assert scale_warning(np.zeros((0, 2, 2, 3))) == ""


def test_a_binomial_model_speaks_only_about_its_first_answer():
    from zoobot.core.model_meta import ModelMeta

    schema = load_schema("decals")
    meta = ModelMeta(schema.to_dict(), "binomial", "bar")
    samples = np.random.default_rng(2).uniform(0.1, 0.9, (4, 1, 5)).astype("float32")
    table = fractions_table(meta, samples, 0.9)
    assert list(table.columns) == ["bar_strong_mean", "bar_strong_low", "bar_strong_high", "warning"]
    np.testing.assert_allclose(table["bar_strong_mean"], samples[:, 0, :].mean(axis=1), rtol=1e-6)
