"""Precision as a setting: what "auto" resolves to, and a bfloat16 model that keeps its outputs,
loss and MC dropout in float32 through predict, save/load and training, without touching Keras'
global dtype policy. Tiny models; the speed itself is measured by benchmarks/precision_speed.py."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.conftest import TINY_MODEL
from zoobot.core.model_meta import ModelMeta
from zoobot.core.schema import GZ_DECALS
from zoobot.model import precision
from zoobot.model.network import BUNDLE_KERAS, ModelConfig, build_model, load_bundle, save_bundle
from zoobot.model.sampling import deterministic_head_predict, mc_predict, split_trunk_head
from zoobot.model.precision import cpu_flags, model_precision, resolve_precision

AMX_CPU = frozenset({"avx512f", "amx_tile", "amx_bf16", "avx512_bf16"})
OLD_CPU = frozenset({"sse4_2", "avx2", "avx512f"})


def images(n: int, size: int = 32, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels)).astype(np.float32)


@pytest.fixture(scope="module")
def bf16_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model(ModelConfig(precision="bfloat16", **TINY_MODEL), GZ_DECALS, (32, 32, 1))


# -- what "auto" means --------------------------------------------------------------------------


@pytest.mark.parametrize("precision,architecture,flags,gpus,expected", [
    ("auto", "vgg", AMX_CPU, (), "bfloat16"),
    ("auto", "vgg", {"avx512_bf16"}, (), "bfloat16"),
    ("auto", "vgg", {"amx_bf16"}, (), "bfloat16"),
    ("auto", "vgg", OLD_CPU, (), "float32"),
    ("auto", "vgg", frozenset(), (), "float32"),  # no /proc/cpuinfo (not Linux)
    ("auto", "efficientnetb0", AMX_CPU, (), "float32"),  # measured slower to predict in bfloat16
    ("auto", "vgg", OLD_CPU, ((8, 0),), "bfloat16"),  # the GPU runs it: an Ampere does bf16
    ("auto", "vgg", AMX_CPU, ((7, 5),), "float32"),  # a Turing GPU runs it, emulating bf16
    ("auto", "vgg", OLD_CPU, ((8, 6), (7, 0)), "float32"),  # one replica would be emulated
    ("float32", "vgg", AMX_CPU, ((9, 0),), "float32"),  # explicit choices are kept
    ("bfloat16", "efficientnetb0", OLD_CPU, (), "bfloat16"),
])
def test_auto_resolves_by_hardware_and_architecture(precision, architecture, flags, gpus, expected):
    assert resolve_precision(precision, architecture, flags, gpus) == expected


def test_cpu_flags_are_read_from_cpuinfo_text():
    cpuinfo = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n"
               "bugs\t\t: spectre_v1\n\nprocessor\t: 1\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse", "avx512f", "amx_bf16", "amx_tile"}
    assert cpu_flags("") == frozenset()


def test_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"precision must be one of \['auto', 'float32', 'bfloat16'\]; found 'fp16'"):
        ModelConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half", "vgg")


def test_auto_on_hardware_without_bf16_builds_float32_and_explicit_bfloat16_warns(monkeypatch):
    monkeypatch.setattr(precision, "detect_hardware", lambda: (OLD_CPU, ()))
    auto = build_model(ModelConfig(precision="auto", **TINY_MODEL), GZ_DECALS, (16, 16, 1))
    assert model_precision(auto) == "float32"
    with pytest.warns(UserWarning, match="without native bfloat16"):
        forced = build_model(ModelConfig(precision="bfloat16", **TINY_MODEL), GZ_DECALS, (16, 16, 1))
    assert model_precision(forced) == "bfloat16"
    monkeypatch.setattr(precision, "detect_hardware", lambda: (AMX_CPU, ()))
    assert model_precision(build_model(ModelConfig(precision="auto", **TINY_MODEL), GZ_DECALS, (16, 16, 1))) \
        == "bfloat16"


# -- a bfloat16 model ---------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["dirichlet", "binomial"])
def test_bfloat16_trunk_float32_head_and_outputs(output):
    model = build_model(ModelConfig(output=output, precision="bfloat16", **TINY_MODEL), GZ_DECALS, (32, 32, 3))
    assert model_precision(model) == "bfloat16"
    assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
    assert model.get_layer("block1_conv1").variable_dtype == "float32"  # weights stay float32
    for name in ("mc_dropout", "output_sigmoid", "concentrations" if output == "dirichlet" else "probability"):
        assert model.get_layer(name).compute_dtype == "float32", name
    prediction = model.predict(images(5, channels=3), verbose=0)
    assert prediction.dtype == np.float32 and np.all(np.isfinite(prediction))
    if output == "dirichlet":
        assert prediction.shape == (5, GZ_DECALS.n_answers) and prediction.min() >= 1 and prediction.max() <= 100
    else:
        assert prediction.shape == (5, 1) and 0 < prediction.min() and prediction.max() < 1


def test_bfloat16_mc_dropout_is_stochastic_on_every_call_path(bf16_model):
    x = images(4)
    assert not np.allclose(bf16_model.predict(x, verbose=0), bf16_model.predict(x, verbose=0))
    assert not np.allclose(bf16_model(x, training=False), bf16_model(x, training=False))
    assert not np.allclose(bf16_model(x), bf16_model(x))
    assert not np.allclose(bf16_model.predict_on_batch(x), bf16_model.predict_on_batch(x))


def test_bfloat16_mc_predict_and_deterministic_head_return_float32(bf16_model):
    x = images(6)
    trunk, head = split_trunk_head(bf16_model)
    samples = mc_predict(bf16_model, x, 5, trunk_head=(trunk, head), batch_size=4)
    assert samples.dtype == np.float32 and samples.shape == (6, GZ_DECALS.n_answers, 5)
    assert np.all(np.isfinite(samples)) and samples.std(axis=-1).mean() > 1e-3
    single = deterministic_head_predict(head, trunk.predict_on_batch(x))
    assert single.dtype == np.float32 and single.shape == (6, GZ_DECALS.n_answers)
    # dropout off is the deterministic network the MC samples average around
    np.testing.assert_allclose(single, deterministic_head_predict(head, trunk.predict_on_batch(x)))


def test_bfloat16_bundle_round_trip_keeps_precision_dtype_and_stochasticity(bf16_model, tmp_path):
    meta = ModelMeta(GZ_DECALS.to_dict(), "dirichlet", image_shape=(32, 32, 1))
    save_bundle(bf16_model, tmp_path / "bundle", meta)
    model, loaded_meta = load_bundle(tmp_path / "bundle" / BUNDLE_KERAS)
    assert loaded_meta == meta and model_precision(model) == "bfloat16"
    x = images(4)
    a, b = model.predict(x, verbose=0), model.predict(x, verbose=0)
    assert a.dtype == np.float32 and not np.allclose(a, b)
    # the same weights: without dropout, reloaded and original agree
    original = deterministic_head_predict(split_trunk_head(bf16_model)[1], split_trunk_head(bf16_model)[0](x))
    trunk, head = split_trunk_head(model)
    reloaded = deterministic_head_predict(head, trunk.predict_on_batch(x))
    np.testing.assert_allclose(reloaded, original, rtol=1e-5)
    samples = mc_predict(model, x, 3)
    assert samples.dtype == np.float32 and not np.allclose(samples[..., 0], samples[..., 1])


def test_building_never_changes_keras_global_policy():
    before = keras.config.dtype_policy().name
    build_model(ModelConfig(precision="bfloat16", **TINY_MODEL), GZ_DECALS, (32, 32, 1))
    efficientnet = build_model(ModelConfig(architecture="efficientnetb0", dense_units=16, precision="bfloat16"),
                               GZ_DECALS, (32, 32, 3))
    assert keras.config.dtype_policy().name == before
    assert efficientnet.get_layer("efficientnetb0").get_layer("block1a_dwconv").compute_dtype == "bfloat16"
    assert efficientnet.predict(images(2, channels=3), verbose=0).dtype == np.float32
    # and a float32 model is float32 whatever the global policy the caller set
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(ModelConfig(precision="float32", **TINY_MODEL), GZ_DECALS, (32, 32, 1))
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.config.set_dtype_policy(before)
    assert model_precision(model) == "float32"
    assert {layer.compute_dtype for layer in model.layers[1:]} == {"float32"}


def test_one_bfloat16_epoch_trains_to_a_finite_loss(tiny_shards, tmp_path):
    from zoobot.data.manifest import Manifest
    from zoobot.model.checkpoint import Checkpoint
    from zoobot.model.train import TrainConfig, train

    manifest = Manifest.read(tiny_shards)
    result = train(TrainConfig(shards=str(tiny_shards), batch_size=8, epochs=1),
                   ModelConfig(precision="bfloat16", **TINY_MODEL), manifest, Checkpoint(tmp_path / "ckpt"))
    assert result.epochs_run == 1
    assert np.isfinite(result.history["loss"][0]) and np.isfinite(result.history["val_loss"][0])
    assert np.isfinite(result.history["val_fraction_rmse"][0])
    assert model_precision(result.model) == "bfloat16"
    assert result.model.predict(images(2, channels=manifest.image_shape[-1]), verbose=0).dtype == np.float32


def test_a_binomial_model_saved_without_a_question_means_the_schemas_first():
    """`zoobot train --output binomial` leaves question '' (= the first question); a model saved so,
    and older ones saved with question None, must still be read as modelling that question."""
    meta = ModelMeta(GZ_DECALS.to_dict(), "binomial", None)
    assert meta.question == GZ_DECALS.question_names[0] == "smooth-or-featured"
    assert ModelMeta.from_dict({**meta.to_dict(), "question": None}).question == "smooth-or-featured"
    samples = np.full((2, 1, 3), 0.5, dtype=np.float32)
    assert meta.predictions(["a", "b"], samples).question == "smooth-or-featured"
