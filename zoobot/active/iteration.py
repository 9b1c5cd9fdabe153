"""One real active-learning iteration: the labelled set as a tf.data pipeline, training the
iteration's model, scoring the pool in chunks, evaluating on the fixed test split, and the MLflow run
that records it.

`real_steps` assembles these into the `Steps` that the framework-free loop (`zoobot.active.loop`)
runs; `run_logged_iteration` runs the next unfinished iteration of a campaign as an MLflow run,
registering its model through the `on_trained` hook.

(Just over the ~400-line guide on purpose: the data, training, scoring and logging of one iteration
are one sequence a reader follows top to bottom; the batch selection already lives in
`zoobot.core.selection` and the training inputs in `zoobot.model.inputs`.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import tensorflow as tf

from zoobot.active.loop import ALConfig, IterationOutcome, Steps, default_model_name, iteration_dir
from zoobot.active.oracle import SimulatedOracle, export_subjects, read_column_map, read_vote_table
from zoobot.active.pool import PoolState
from zoobot.core import tags as tag_names
from zoobot.core.model_meta import ModelMeta
from zoobot.core.predictions import Predictions
from zoobot.data.manifest import FEATURE_ID, FEATURE_IMAGE, Manifest
from zoobot.data.shards import fits_in_memory, read_split, split_in_memory
from zoobot.model.network import ModelConfig, save_bundle
from zoobot.model.sampling import mc_predict, reseed, split_trunk_head
from zoobot.model.precision import config_precision
from zoobot.model.inputs import EpochsInMemory, epoch_seed, keras_batches, training_data
from zoobot.model.train import Checkpoint, TrainConfig, train

LABELLED_SPLITS = ("train", "pool")  # where labelled galaxies' records live
TEST_EPOCH = 20_000  # the "epoch" whose seed draws the test evaluation's dropout masks: none trains that long


def create_state(path: Path, manifest: Manifest, meta: dict) -> PoolState:
    """A new campaign from converted shards: 'train' is the initial labelled set, 'pool' the rest."""
    if "pool" not in manifest.splits:
        raise ValueError(f"Shards in '{manifest.root}' have no 'pool' split; convert with --labelled-size N to keep "
                         "N galaxies labelled and put the rest in the pool.")
    records = read_split(manifest, "train")
    labelled = pd.DataFrame(records["labels"], columns=list(manifest.label_cols))
    labelled.insert(0, "id_str", records[FEATURE_ID])
    path.parent.mkdir(parents=True, exist_ok=True)
    return PoolState.from_manifest(path, manifest, labelled, meta={**meta, "shards": str(manifest.root)})


def _records(manifest: Manifest, splits: tuple[str, ...]) -> tf.data.Dataset:
    """Single records {'id_str', 'image'} of several splits, labels (if any) ignored."""
    height, width, channels = manifest.image_shape
    files = [str(f) for s in splits if s in manifest.splits for f in manifest.files(s)]
    spec = {FEATURE_ID: tf.io.FixedLenFeature([], tf.string), FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string)}

    def parse(record):
        parsed = tf.io.parse_single_example(record, spec)
        if manifest.image_encoding == "png":
            image = tf.io.decode_png(parsed[FEATURE_IMAGE], channels=channels)
        else:
            image = tf.io.decode_raw(parsed[FEATURE_IMAGE], tf.uint8)
        return {FEATURE_ID: parsed[FEATURE_ID], FEATURE_IMAGE: tf.reshape(image, (height, width, channels))}

    return tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).map(
        parse, num_parallel_calls=tf.data.AUTOTUNE)


def _lookup(ids: list[str]) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(ids, tf.string), tf.range(len(ids), dtype=tf.int64)), -1)


def labelled_dataset(manifest: Manifest, ids: list[str], labels: np.ndarray, batch_size: int, shuffle: bool,
                     seed: int) -> tf.data.Dataset:
    """Batches {'id_str', 'image', 'labels'} of the galaxies in `ids`, labels taken from the state."""
    table = _lookup(ids)
    label_tensor = tf.constant(labels, tf.int64)
    dataset = _records(manifest, LABELLED_SPLITS).filter(lambda r: table.lookup(r[FEATURE_ID]) >= 0)
    dataset = dataset.map(lambda r: {**r, "labels": tf.gather(label_tensor, table.lookup(r[FEATURE_ID]))})
    if shuffle:
        dataset = dataset.shuffle(min(len(ids), 4096), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size)


def labelled_arrays(manifest: Manifest, ids: list[str], labels: np.ndarray) -> dict[str, np.ndarray] | None:
    """The labelled galaxies `ids` (images from the shards, labels from the state) in memory, in file
    order, as `read_split` gives a split; None when there are none (the streamed path then says why it
    cannot train) or they would not fit (`fits_in_memory`)."""
    if not ids or not fits_in_memory(manifest, len(ids)):
        return None
    batches = list(labelled_dataset(manifest, ids, labels, 256, shuffle=False, seed=0).as_numpy_iterator())
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def pool_predictions(model, meta: dict, manifest: Manifest, ids: list[str], n_samples: int,
                     batch_size: int = 256, seed: int = 0) -> Iterator[Predictions]:
    """MC-dropout predictions of the pool galaxies `ids`, a batch at a time, in file order, with
    dropout masks drawn from `seed`: a prediction repeated after a crash gives the same samples.
    Each carries the galaxies' embeddings (`features`: the trunk's output), for diverse selection."""
    from zoobot.data import augment

    if not ids:
        return
    table = _lookup(ids)
    dataset = _records(manifest, ("pool",)).filter(lambda r: table.lookup(r[FEATURE_ID]) >= 0).batch(batch_size)
    if manifest.image_shape[-1] != model.input_shape[-1]:
        dataset = augment.prepare(dataset, model.input_shape[-1], augment=False)
    # else uint8 as stored: the model casts on its first layer, cheaper than a float32 copy here
    trunk_head = split_trunk_head(model)
    reseed(model, seed)
    for batch in dataset.as_numpy_iterator():
        batch_ids = np.array([v.decode("utf-8") for v in batch[FEATURE_ID]])
        samples, features = mc_predict(model, batch[FEATURE_IMAGE], n_samples, trunk_head=trunk_head,
                                       batch_size=batch_size, with_features=True)
        yield meta.predictions(batch_ids, samples, features)


def train_iteration(iteration: int, state: PoolState, manifest: Manifest, config: ALConfig,
                    model_config: ModelConfig, callbacks=(), base: Path | None = None) -> tuple[dict, object]:
    """Train on everything labelled so far (config.members models, each from its own seed); evaluate
    on the fixed test split; save the models. The test metrics are the members' means; the first
    member is the one registered. `base`: the local file of `config.initial_model`, resolved once by
    the caller (resolved here when not given)."""
    if config.initial_model and base is None:
        from zoobot.tracking.references import resolve_model
        base = resolve_model(config.initial_model)
    folder = iteration_dir(state, iteration)
    infos, results = [], []
    for member in range(config.members):
        name = "" if member == 0 else f"_member{member}"
        info, result = _train_member(iteration, state, manifest, config, model_config, folder, name,
                                     seed=config.seed + 7919 * member, callbacks=callbacks if member == 0 else (),
                                     base=base)
        infos.append(info)
        results.append(result)
    info = {**infos[0], "member_dirs": [i["model_dir"] for i in infos]}
    for key in infos[0]:
        if key.startswith("test_") or key == "best_val_loss":
            info[key] = float(np.mean([i[key] for i in infos]))
    return info, results[0]


def _train_member(iteration: int, state: PoolState, manifest: Manifest, config: ALConfig, model_config: ModelConfig,
                  folder: Path, name: str, seed: int, callbacks=(), base: Path | None = None) -> tuple[dict, object]:
    previous = iteration_dir(state, iteration - 1) / f"checkpoint{name}" / "best.weights.h5"
    warm = previous if config.warm_start and previous.is_file() else None
    # a warm start continues a trained model: its own (smaller) peak, so the first epochs do not undo it
    rate = config.warm_learning_rate if warm is not None and config.warm_learning_rate else config.learning_rate
    train_config = TrainConfig(shards=str(manifest.root), epochs=config.epochs, batch_size=config.batch_size,
                               learning_rate=rate, schedule=config.schedule,
                               weight_decay=config.weight_decay, min_epochs=config.min_epochs,
                               patience=config.patience, seed=seed)
    ids = state.labelled_ids()
    labels = state.labels(ids)
    channels = manifest.image_shape[-1]
    val_split = "validation" if manifest.counts.get("validation") else "test"
    val_batches = training_data(manifest, val_split, train_config, channels, False,
                                arrays=split_in_memory(manifest, val_split))
    in_memory = labelled_arrays(manifest, ids, labels)  # read once per iteration when small
    epochs = EpochsInMemory(in_memory, train_config, channels) if in_memory is not None else None

    def data(epoch: int):  # each epoch shuffled and augmented from its own seed: replayable after a crash
        epoch_of = epoch_seed(seed * 1000 + iteration, epoch)
        if epochs is not None:
            return epochs(epoch_of), val_batches
        batches = labelled_dataset(manifest, ids, labels, config.batch_size, True, epoch_of)
        return keras_batches(batches, len(ids), train_config, channels, training=True, seed=epoch_of), val_batches

    # the validation split calibrates the Dirichlet model; never the test split the arms are judged on
    held_out = val_batches if val_split == "validation" else None
    with warnings.catch_warnings():
        # the previous model's weights file also holds its optimizer's moments; a warm start takes
        # only the weights, and Keras says so
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        checkpoint = Checkpoint(folder / f"checkpoint{name}")
        if base is not None:
            result = _finetune_member(config, base, train_config, model_config, manifest, checkpoint, callbacks, data,
                                      warm, held_out)
        else:
            result = train(train_config, model_config, manifest, checkpoint, callbacks=list(callbacks), data=data,
                           initial_weights=warm, calibration_data=held_out)

    test_batches = training_data(manifest, "test", train_config, channels, False)
    # the test loss is taken with dropout on (one mask per galaxy): masks from the seed, so the same model
    # always scores the same (every arm's first, shared model too), whatever ran in the process before
    reseed(result.model, epoch_seed(seed, TEST_EPOCH))
    test = result.model.evaluate(test_batches, return_dict=True, verbose=0)
    meta = ModelMeta(manifest.schema, model_config.output, model_config.question or None,
                     image_shape=tuple(result.model.input_shape[1:]), val_loss=result.best_val_loss)
    save_bundle(result.model, folder / f"model{name}", meta)
    info = {
        "model_dir": str(folder / f"model{name}"), "n_labelled": len(ids), "warm_start": warm is not None,
        "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "peak_learning_rate": rate,
        **{f"test_{k}": float(v) for k, v in test.items()},
        **(result.calibration.metrics() if result.calibration else {}),
    }
    return info, result


def _finetune_member(config: ALConfig, base: Path, train_config: TrainConfig, model_config: ModelConfig,
                     manifest: Manifest, checkpoint: Checkpoint, callbacks, data, warm: Path | None, held_out=None):
    """A campaign started from a trained model: its trunk under a new head for the campaign's question
    (zoobot.model.finetune with its default phases); from the previous iteration's weights when warm."""
    import dataclasses

    from zoobot.model.finetune import FinetuneConfig, finetune

    finetune_config = FinetuneConfig(**dataclasses.asdict(train_config), base_model=config.initial_model,
                                     output=model_config.output, question=model_config.question,
                                     dropout_rate=model_config.dropout_rate)
    return finetune(finetune_config, base, manifest, checkpoint,
                    callbacks=list(callbacks), data=data, initial_weights=warm, calibration_data=held_out)


def ensemble_predictions(members: list, manifest: Manifest, ids: list[str], n_samples: int,
                         seed: int) -> Iterator[Predictions]:
    """The pool's predictions from every member: each batch's MC samples of all members side by side
    on the sample axis (n_samples per member), so BALD sees the ensemble's spread; their embeddings
    side by side on the feature axis."""
    streams = [pool_predictions(model, meta, manifest, ids, n_samples, seed=seed + k)
               for k, (model, meta) in enumerate(members)]
    for batches in zip(*streams):
        first = batches[0]
        if any(not np.array_equal(b.id_str, first.id_str) for b in batches[1:]):
            raise RuntimeError("The members' pool predictions came in different orders; cannot combine them.")
        yield replace(first, samples=np.concatenate([b.samples for b in batches], axis=-1),
                      features=np.concatenate([b.features for b in batches], axis=-1))


def real_steps(state: PoolState, manifest: Manifest, config: ALConfig, model_config: ModelConfig,
               on_trained: Callable[[int, dict, object], dict] = lambda i, info, result: {},
               callbacks=()) -> Steps:
    """The loop's steps for a real campaign. `on_trained` adds to the train info (e.g. the
    registered model version) once a model exists."""
    from zoobot.model.network import BUNDLE_KERAS, load_bundle
    from zoobot.tracking.references import resolve_model

    base = resolve_model(config.initial_model) if config.initial_model else None  # once: an alias may move

    def train_step(iteration, state_):
        info, result = train_iteration(iteration, state_, manifest, config, model_config, callbacks, base=base)
        return {**info, **on_trained(iteration, info, result)}

    def predict_step(iteration, pool_ids, train_info):
        seed = epoch_seed(config.seed * 1000 + iteration, 10_000)
        folders = train_info.get("member_dirs") or [train_info["model_dir"]]
        members = [load_bundle(Path(folder) / BUNDLE_KERAS) for folder in folders]
        if len(members) == 1:
            return pool_predictions(*members[0], manifest, pool_ids, config.n_samples, seed=seed)
        return ensemble_predictions(members, manifest, pool_ids, config.n_samples, seed)

    def request_step(iteration, acquired):
        if config.oracle == "zooniverse":
            path = export_subjects(state, acquired, iteration_dir(state, iteration) / "subjects", iteration)
            return {"subject_manifest": str(path), "n_requested": len(acquired)}
        return {"n_requested": len(acquired)}

    oracle = SimulatedOracle.from_manifest(manifest) if config.oracle == "simulated" else None
    columns = read_column_map(config.labels_map)  # a bad map fails before any training

    def labels_step(iteration, awaiting):
        if oracle is not None:
            return oracle.reveal(awaiting)
        if not config.labels_file:
            return None
        # every row: the ingest judges and reports each
        return read_vote_table(config.labels_file, state.schema, columns)

    return Steps(train=train_step, predict=predict_step, request=request_step, labels=labels_step)


def with_iteration_defaults(config: ALConfig, arm: str) -> ALConfig:
    return replace(config, registered_model_name=config.registered_model_name or default_model_name(config.state, arm))


# -- one logged iteration, and a whole simulated campaign -----------------------------------------


def open_or_create(config: ALConfig, arm: str) -> tuple[PoolState, Manifest]:
    from zoobot import tracking

    path = Path(config.state)
    if path.exists():
        state = PoolState.open(path)
    else:
        if not config.shards:
            raise ValueError(f"No campaign at '{path}' yet: give --shards (converted with --pool-catalog or --labelled-size) to start one.")
        manifest = Manifest.read(tracking.resolve_local(config.shards, "shards"))
        state = create_state(path, manifest, {"arm": arm, "acquisition": config.acquisition, "seed": config.seed})
    return state, Manifest.read(state.meta["shards"])


def run_logged_iteration(config: ALConfig, model_config: ModelConfig, arm: str, nested: bool = False):
    """The next unfinished iteration of the campaign at config.state, as an MLflow run."""
    from zoobot import tracking
    from zoobot.active.loop import run_iteration

    config = with_iteration_defaults(config, arm)
    state, manifest = open_or_create(config, arm)
    iteration = state.current_iteration()
    runs_file = Path(config.state).with_suffix(".runs.json")
    tags = {tag_names.ARM: arm, tag_names.ITERATION: str(iteration), tag_names.ACQUISITION: config.acquisition,
            tag_names.SCHEMA: manifest.schema["name"], tag_names.ARCHITECTURE: model_config.architecture,
            tag_names.PRECISION: config_precision(model_config)}

    def register(i, info, result):
        tracking.backfill_history(result.history)  # epochs this run did not see: a restart's, or a shared start's
        training = (f"Campaign '{Path(config.state).parent.name}', arm {arm}, iteration {i}: {info['n_labelled']:,} "
                    f"labelled galaxies, up to {config.epochs} epochs"
                    + (f", from {config.initial_model}" if config.initial_model else ""))
        return tracking.register_iteration_model(result.model, manifest, model_config,
                                                 config.registered_model_name, info["best_val_loss"], training)

    params = {**{k: v for k, v in vars(config).items()}, **vars(model_config)}
    try:
        finish_interrupted_runs(runs_file, state, manifest, nested)
        with tracking.iteration_run(runs_file, iteration_key(arm, iteration), params, tags, nested):
            steps = real_steps(state, manifest, config, model_config, on_trained=register,
                               callbacks=[tracking.metrics_logger()])
            outcome = run_iteration(state, steps, config)
            fault_point("iteration-logging")
            tracking.log_iteration(outcome, state, manifest)
        state.check_invariants()
    except BaseException:
        state.close()
        raise
    return outcome, state  # the caller closes the state


@dataclass(frozen=True)
class IterationReport:
    outcome: IterationOutcome
    ingest: dict  # the ingest stage's record, when this call ingested labels
    request: dict  # the request stage's record (a volunteers' campaign: where the subject manifest went)


def run_logged_iterations(config: ALConfig, model_config: ModelConfig, arm: str) -> list[IterationReport]:
    """The next unfinished iteration, each as its own MLflow run; with volunteers (oracle 'zooniverse')
    whose labels this call brought in, the next iteration too, up to its subjects' export: one week of
    a campaign in one command (unless config.next_iteration is false)."""
    outcome, state = run_logged_iteration(config, model_config, arm)
    reports = [_report(outcome, state)]
    if config.oracle == "zooniverse" and config.next_iteration and "ingest" in outcome.stages_run:
        with _own_run():  # the next iteration's labels are next week's
            outcome, state = run_logged_iteration(replace(config, labels_file=""), model_config, arm)
        reports.append(_report(outcome, state))
    return reports


def _report(outcome: IterationOutcome, state: PoolState) -> IterationReport:
    with state:
        done = state.is_done(outcome.iteration, "request")
        return IterationReport(
            outcome, state.stage_info(outcome.iteration, "ingest") if "ingest" in outcome.stages_run else {},
            state.stage_info(outcome.iteration, "request") if done else {})


@contextlib.contextmanager
def _own_run():
    """Under `mlflow run` the step's run (MLFLOW_RUN_ID) is the first iteration's; a second iteration
    in the same command opens a run of its own."""
    wrapper = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        yield
    finally:
        if wrapper is not None:
            os.environ["MLFLOW_RUN_ID"] = wrapper


def iteration_key(arm: str, iteration: int) -> str:
    return f"{arm}-iteration-{iteration:03d}"


def finish_interrupted_runs(runs_file: Path, state: PoolState, manifest: Manifest, nested: bool) -> None:
    """Complete the MLflow runs of iterations whose work is all in the state but whose logging a
    kill cut short: the state moved on, so nothing else would ever come back to them."""
    from zoobot import tracking
    from zoobot.active.loop import finished_outcome
    from zoobot.active.pool import LAST_STAGE

    for key, run_id in tracking.unfinished_runs(runs_file).items():
        iteration = int(key.rsplit("-", 1)[1])
        if state.is_done(iteration, LAST_STAGE):
            with tracking.reopened_run(run_id, nested):
                tracking.log_iteration(finished_outcome(state, iteration), state, manifest, only_missing=True)


def fault_point(name: str) -> None:
    """Kill this process here, as a power cut would, when ZOOBOT_KILL_AT names this point: lets
    tests interrupt a campaign at a moment a timed kill could not hit reliably."""
    if os.environ.get("ZOOBOT_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def learning_curve(state: PoolState) -> pd.DataFrame:
    """(n_labelled, test metrics) per finished training of a campaign, from the state's records."""
    rows = []
    for iteration in range(1, state.current_iteration() + 1):
        if state.is_done(iteration, "train"):
            info = state.stage_info(iteration, "train")
            rows.append({"iteration": iteration, **{k: v for k, v in info.items()
                                                    if k == "n_labelled" or k.startswith("test_")}})
    return pd.DataFrame(rows)
