"""Logging a trained model as the served pyfunc, registering it, and crowning the best version.

The champion alias moves only to a version with a lower validation loss than the one holding it,
so `models:/NAME@champion` is always the best model trained so far.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
from mlflow.tracking import MlflowClient

from zoobot.core import tags as tag_names
from zoobot.tracking import model_card
from zoobot.core.model_meta import ModelMeta
from zoobot.tracking.artifacts import MODEL_ARTIFACT
from zoobot.tracking.pyfunc import (DEFAULT_INTERVAL, FRACTIONS, INPUT_EXAMPLE_ADVICE, MODEL_CODE, SAMPLES,
                                   without_warnings)

# Pinned from this environment: inferring them makes MLflow import every package (~6.5 s a model).
REQUIREMENTS = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas", "astropy", "pillow", "scipy", "pyyaml",
                "mlflow")
DEFAULT_SAMPLES = 5  # MC samples a call draws when it does not say


def log_model(model, manifest, train_config, model_config, val_loss: float, description: str = "",
              version_tags: dict[str, str] | None = None, training: str = "") -> dict:
    """Log the model as a pyfunc that returns MC-dropout samples, register it with its model card
    (`zoobot.tracking.model_card`; `description`, e.g. the base model of a finetune, and `training`, how
    it was trained, go into it) and `version_tags`, maybe crown it."""
    import tempfile

    import zoobot
    from zoobot.model.network import save_bundle

    height, width, channels = model.input_shape[1:]
    meta = ModelMeta(manifest.schema, model_config.output, model_config.question or None,
                     image_shape=(height, width, channels), val_loss=val_loss)
    with tempfile.TemporaryDirectory() as tmp, without_warnings(INPUT_EXAMPLE_ADVICE):
        bundle = save_bundle(model, Path(tmp) / "bundle", meta)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(MODEL_CODE),
            artifacts={"bundle": str(bundle)},
            code_paths=[str(Path(zoobot.__file__).parent)],
            signature=_signature(model),
            pip_requirements=_pip_requirements(),
            metadata={**meta.to_dict(), "input": input_contract(height, width, channels)},
            registered_model_name=train_config.registered_model_name or None,
        )
    out = {"model_uri": info.model_uri, "registered_version": None, "champion": False}
    mlflow.set_tag(tag_names.MODEL_URI, info.model_uri)
    if train_config.registered_model_name:
        version = str(info.registered_model_version)
        out["registered_version"] = version
        client = MlflowClient()
        from zoobot.model.precision import model_precision

        run = mlflow.active_run().info
        card = model_card.training_card(manifest, model_config, val_loss, run.run_id, model_precision(model),
                                        training or model_card.training_text(train_config), based_on=description,
                                        experiment_id=run.experiment_id)
        client.update_model_version(train_config.registered_model_name, version, description=card)
        tags = {**model_card.training_tags(manifest, model_config, val_loss), **(version_tags or {})}
        for key, value in tags.items():
            client.set_model_version_tag(train_config.registered_model_name, version, key, value)
        out["champion"] = crown_if_better(train_config.registered_model_name, version, val_loss,
                                          train_config.champion_alias)
    return out


def crown_if_better(name: str, version: str, val_loss: float, alias: str) -> bool:
    """The first version takes the alias; a later one only when its validation loss is lower."""
    client = MlflowClient()
    client.set_model_version_tag(name, version, tag_names.VAL_LOSS, f"{val_loss:.6f}")
    if not alias:
        return False
    try:
        holder = client.get_model_version_by_alias(name, alias)
        holder_loss = float(holder.tags.get(tag_names.VAL_LOSS, "inf"))
    except mlflow.exceptions.MlflowException:
        holder, holder_loss = None, float("inf")
    if holder is None or val_loss < holder_loss:
        client.set_registered_model_alias(name, alias, version)
        mlflow.set_tag(tag_names.CHAMPION, f"{name}@{alias} = v{version}")
        return True
    mlflow.set_tag(tag_names.CHAMPION, f"not crowned: v{holder.version} holds {alias} with val_loss {holder_loss:.4f}")
    return False


def register_iteration_model(model, manifest, model_config, name: str, val_loss: float, training: str = "") -> dict:
    """Each iteration's model becomes a version of `name` (no alias: the campaign decides); `training`
    says what it learned from, for its card."""
    logged = log_model(model, manifest, SimpleNamespace(registered_model_name=name, champion_alias=""),
                       model_config, val_loss, training=training or "An active-learning iteration's model")
    return {"registered_model": name, "registered_version": logged["registered_version"],
            "model_uri": logged["model_uri"]}


def _signature(model):
    """Images in, MC samples out (sample axis last); how many samples, which output and the credible
    interval as call parameters."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    height, width, channels = model.input_shape[1:]
    n_outputs = model.output_shape[-1]
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, height, width, channels), "images")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, n_outputs, -1), "samples")]),
        params=ParamSchema([ParamSpec("n_samples", "long", DEFAULT_SAMPLES), ParamSpec("output", "string", SAMPLES),
                            ParamSpec("interval", "double", DEFAULT_INTERVAL)]),
    )


def input_contract(height: int, width: int, channels: int) -> dict:
    """What the model takes, in the logged model's metadata beside the signature (which has no room
    for the pixel scale)."""
    return {"images": f"float32 array (galaxies, {height}, {width}, {channels})", "pixel_values": "0..255",
            "note": ("images as convert stores them: 8-bit PNG/JPEG values, or FITS bands scaled by convert; "
                     "values all in [0, 1] draw a warning"),
            "outputs": {SAMPLES: "(galaxies, n_outputs, n_samples) MC-dropout samples (default)",
                        FRACTIONS: "one row per galaxy: <answer>_mean, _low, _high vote fractions, and warning"}}


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for name in REQUIREMENTS:
        try:
            requirements.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return requirements
