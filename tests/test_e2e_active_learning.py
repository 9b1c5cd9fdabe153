"""End to end: `mlflow run . -e active_learning` (two arms, two iterations) against a real
`mlflow server`; every iteration's run has its metrics and figures and agrees with the state
database; then the same campaign killed with SIGKILL mid-iteration and restarted finishes with no
duplicate or missing acquisitions, and with the galaxies the uninterrupted campaign acquired."""

import json
import os
import signal
import sqlite3
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, TINY_MODEL, VENV_BIN
from zoobot.data.convert import ConvertConfig, convert
from zoobot.active.pool import PoolState
from zoobot.data.simulate import SimulateConfig, simulate_survey

pytestmark = pytest.mark.slow
SETTINGS = {"iterations": 2, "arms": "bald,random", "n_acquire": 4, "n_samples": 5, "epochs": 2, "batch_size": 8,
            **TINY_MODEL}


@pytest.fixture(scope="module")
def al_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("al")
    survey = simulate_survey(SimulateConfig(output_dir=str(root / "survey"), n_galaxies=60, image_size=32, workers=1))
    convert(ConvertConfig(catalog=str(survey.catalog_path), output_dir=str(root / "shards"), image_size=32,
                          labelled_size=10, workers=1))
    return root / "shards"


def campaign_command(shards, work_dir, experiment):
    command = [str(VENV_BIN / "mlflow"), "run", str(ROOT), "-e", "active_learning", "--env-manager", "local",
               "--experiment-name", experiment, "-P", f"shards={shards}", "-P", f"work_dir={work_dir}"]
    for key, value in SETTINGS.items():
        command += ["-P", f"{key}={value}"]
    return command


def environment(tracking_uri):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{VENV_BIN}{os.pathsep}{env['PATH']}"}


def acquired_by_iteration(state_path):
    with sqlite3.connect(state_path) as db:
        return pd.read_sql("SELECT id_str, acquired_iteration, labelled_iteration FROM galaxies", db)


def test_campaign_through_a_server_then_killed_and_resumed(mlflow_server, al_shards, tmp_path):
    env = environment(mlflow_server)
    result = subprocess.run(campaign_command(al_shards, tmp_path / "clean", "e2e-al"), env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("e2e-al")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.step = 'active_learning'")
    assert "label_saving" in parent.data.metrics and parent.data.tags["label_saving_note"]
    assert parent.data.metrics["bald_iterations_compared"] == 1  # iteration 2, after the shared start
    history = client.get_metric_history(parent.info.run_id, "bald_test_loss")
    assert len(history) == 2 and history[0].step < history[1].step  # step = labelled galaxies
    assert "learning_curves.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs([experiment.experiment_id], filter_string="tags.step = 'al_iteration'")
    assert sorted((r.data.tags["arm"], r.data.tags["iteration"]) for r in children) == [
        ("bald", "1"), ("bald", "2"), ("random", "1"), ("random", "2")]
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for key in ("n_labelled", "test_loss", "test_fraction_rmse", "n_acquired",
                    # a simulated survey: what the acquisition favoured, against the pool
                    "acquired_true_smooth-or-featured_smooth", "pool_true_smooth-or-featured_smooth"):
            assert key in run.data.metrics, (key, run.data.tags)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"acquisition_scores.png", "acquired_vs_random.png", "acquired.csv", "acquired.json"} <= artifacts
        # named after the campaign (its work_dir), so unrelated campaigns never share a registered model
        assert run.data.tags["registered_model"].startswith(f"zoobot-al-clean-{run.data.tags['arm']} v")
        # the run's record of what it acquired is the state database's
        logged = pd.read_csv(client.download_artifacts(run.info.run_id, "acquired.csv", str(tmp_path)))
        state = acquired_by_iteration(tmp_path / "clean" / run.data.tags["arm"] / "state.db")
        in_state = state[state["acquired_iteration"] == int(run.data.tags["iteration"])]["id_str"]
        assert sorted(logged["id_str"]) == sorted(in_state)
    for arm in ("bald", "random"):
        with PoolState.open(tmp_path / "clean" / arm / "state.db") as state:
            counts = state.check_invariants()
            assert state.n_labelled() == 10 + 2 * 4 and counts.awaiting == 0
    # the shared start: iteration 1 trained once (by the first arm); the random arm's run still has its epochs
    first = [json.loads((tmp_path / "clean" / arm / "iteration_001" / "checkpoint" / "state.json").read_text())
             for arm in ("bald", "random")]
    assert first[0]["history"] == first[1]["history"] and "random: iteration 1 starts from the bald" in result.stdout
    # the same model scores the same on the test split in both arms (its dropout masks come from the seed)
    first_loss = {r.data.tags["arm"]: r.data.metrics["test_loss"] for r in children if r.data.tags["iteration"] == "1"}
    assert first_loss["bald"] == first_loss["random"]
    (random_1,) = [r for r in children if (r.data.tags["arm"], r.data.tags["iteration"]) == ("random", "1")]
    assert len(client.get_metric_history(random_1.info.run_id, "val_loss")) == len(first[0]["history"]["val_loss"])

    # The same campaign, killed in the middle of an iteration, then started again.
    work = tmp_path / "killed"
    command = campaign_command(al_shards, work, "e2e-al-killed")
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    state_path = work / "bald" / "state.db"
    # kill while iteration 2 of the bald arm is training: after its first epoch's checkpoint
    checkpoint_state = work / "bald" / "iteration_002" / "checkpoint" / "state.json"
    deadline = time.time() + 600
    while time.time() < deadline:
        if checkpoint_state.is_file() and '"epoch": 1' in checkpoint_state.read_text():
            break
        assert process.poll() is None, "the campaign finished before it could be killed"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    with PoolState.open(state_path) as state:
        assert state.current_iteration() == 2 and not state.is_done(2, "acquire")  # killed inside iteration 2
        state.check_invariants()

    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-5000:]
    for arm in ("bald", "random"):
        table = acquired_by_iteration(work / arm / "state.db")
        acquired = table[table["acquired_iteration"].notna()]
        assert len(acquired) == 2 * 4 and acquired["id_str"].is_unique  # none missing, none twice
        assert (acquired.groupby("acquired_iteration").size() == 4).all()
        with PoolState.open(work / arm / "state.db") as state:
            state.check_invariants()
    # Same seed, same campaign: the killed one chose exactly what the clean one did, iteration by
    # iteration, in the model-driven arm too (training resumed mid-iteration replays its epochs
    # bit for bit, and pool predictions draw their dropout masks from the seed).
    for arm in ("random", "bald"):
        clean = acquired_by_iteration(tmp_path / "clean" / arm / "state.db")
        killed = acquired_by_iteration(work / arm / "state.db")
        chosen = [sorted(zip(t["acquired_iteration"].dropna(), t["id_str"][t["acquired_iteration"].notna()]))
                  for t in (clean, killed)]
        assert chosen[0] == chosen[1], arm
    # one run per (arm, iteration): the restart logged into the runs it had started
    experiment = client.get_experiment_by_name("e2e-al-killed")
    children = client.search_runs([experiment.experiment_id], filter_string="tags.step = 'al_iteration'")
    assert len(children) == 4
    assert [r.info.status for r in client.search_runs([experiment.experiment_id])
            if r.info.status != "FINISHED"] == []


def test_a_campaign_killed_while_an_iteration_logs_completes_that_run_on_restart(al_shards, tmp_path):
    """The pool state commits an iteration before its run is logged; a kill in between must not leave
    the run RUNNING forever (the restart moves on to the next iteration and would never return)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = environment(uri)
    command = [str(VENV_BIN / "zoobot"), "active_learning", "--shards", str(al_shards), "--work-dir",
               str(tmp_path / "campaign"), "--arms", "bald", "--iterations", "2", "--n-acquire", "4",
               "--n-samples", "3", "--epochs", "1", "--batch-size", "8", "--filters", TINY_MODEL["filters"],
               "--dense-units", str(TINY_MODEL["dense_units"])]
    killed = subprocess.run(command, env={**env, "ZOOBOT_KILL_AT": "iteration-logging"}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs(["0"], filter_string="tags.step = 'al_iteration'")
    assert run.info.status == "RUNNING" and "iteration" not in run.data.metrics  # the defect's starting point
    with PoolState.open(tmp_path / "campaign" / "bald" / "state.db") as state:
        assert state.current_iteration() == 2  # the state has moved on

    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-5000:]
    assert "Next: look at learning_curves.png in run" in again.stdout and "--experiment Default" in again.stdout
    runs = client.search_runs(["0"])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3  # the campaign and its two iterations
    first = client.get_run(run.info.run_id)
    assert first.data.tags["completed_after_restart"] == "true"
    assert {"iteration", "n_labelled", "test_loss", "n_acquired"} <= set(first.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "iteration")] == [1]
    assert {"acquired.csv", "acquisition_scores.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def test_al_iteration_counts_and_keeps_every_rejected_label_row(al_shards, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = environment(uri)
    state_path = tmp_path / "week" / "state.db"
    command = [str(VENV_BIN / "zoobot"), "al_iteration", "--state", str(state_path), "--shards", str(al_shards),
               "--oracle", "zooniverse", "--n-acquire", "4", "--n-samples", "3", "--epochs", "1", "--batch-size", "8",
               "--filters", TINY_MODEL["filters"], "--dense-units", str(TINY_MODEL["dense_units"])]
    first = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0 and "waiting for volunteers' labels" in first.stdout, first.stderr[-3000:]
    with PoolState.open(state_path) as state:
        acquired, pool, initial = state.acquired_ids(1), state.pool_ids(), state.labelled_ids()
        columns = list(state.label_cols)
    ones = ",".join(["1"] * len(columns))
    rows = [f"{acquired[0]},{ones}", f"{acquired[1]},{ones}",
            f"{acquired[2]},{ones}", f"{acquired[2]},{ones}",  # duplicate: both set aside
            f"{acquired[3]},-1{ones[1:]}",  # negative count
            f"nobody,{ones}",  # not a galaxy of the campaign
            f"{pool[0]},{ones}",  # in the pool, never requested
            f"{initial[0]},{ones}",  # labelled before the campaign
            f",{ones}",  # no id
            f"{pool[1]},1e20{ones[1:]}",  # implausible count
            f"{pool[2]},inf{ones[1:]}"]  # not finite
    labels = tmp_path / "reduced.csv"
    labels.write_text("\n".join(["id_str," + ",".join(columns), *rows]) + "\n")

    second = subprocess.run([*command, "--labels-file", str(labels), "--next-iteration", "false"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    assert "9 label rows were set aside" in second.stdout, second.stdout
    rejects_file = tmp_path / "week" / "iteration_001" / "rejected_labels.csv"
    assert str(rejects_file) in second.stdout
    rejects = pd.read_csv(rejects_file, dtype={"id_str": str}, keep_default_na=False)
    assert rejects["row"].tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    reasons = dict(zip(rejects["row"], rejects["reason"]))
    assert reasons[3].startswith("duplicate id") and reasons[4].startswith("duplicate id")
    assert "negative" in reasons[5] and reasons[6].startswith("unknown id")
    assert reasons[7].startswith("not acquired") and reasons[8].startswith("already labelled")
    assert reasons[9].startswith("missing id") and "plausible" in reasons[10] and "not finite" in reasons[11]
    with PoolState.open(state_path) as state:
        assert sorted(state.labelled_ids()) == sorted([*initial, acquired[0], acquired[1]])
        assert state.stage_info(1, "ingest")["n_rejected"] == 9
    client = MlflowClient(uri)
    (run,) = client.search_runs(["0"], filter_string="tags.step = 'al_iteration'")
    assert "rejected_labels.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.data.metrics["n_labels_rejected"] == 9


def test_an_ensemble_campaign_scores_the_pool_with_every_members_samples(al_shards, tmp_path, sqlite_tracking):
    """members=2: two models per iteration from different seeds; the pool's scores come from both
    members' MC samples (2 x n_samples per galaxy), and the test metrics are the members' mean. A
    diverse batch clusters the pool by both members' embeddings, side by side."""
    from zoobot.active.iteration import real_steps, run_logged_iteration
    from zoobot.active.loop import ALConfig
    from zoobot.model.network import ModelConfig

    config = ALConfig(state=str(tmp_path / "ens" / "state.db"), shards=str(al_shards), n_acquire=4, n_samples=3,
                      members=2, epochs=2, batch_size=8, min_epochs=0, selection="diverse")
    model_config = ModelConfig(output="binomial", **TINY_MODEL)
    outcome, state = run_logged_iteration(config, model_config, arm="bald")
    try:
        info = outcome.train_info
        assert len(info["member_dirs"]) == 2 and info["member_dirs"][0] == info["model_dir"]
        assert len(outcome.acquired) == 4
        steps = real_steps(state, state_manifest(state), config, model_config)
        (chunk, *_) = list(steps.predict(1, state.pool_ids(), info))
        assert chunk.samples.shape[-1] == 2 * 3
        first, second = chunk.samples[..., :3], chunk.samples[..., 3:]
        assert abs(first.mean() - second.mean()) > 0  # two different models, not one twice
        width = 2 * model_config.dense_units  # each member's features layer: what its head's dropout acts on
        assert chunk.features.shape == (len(chunk.id_str), width)
        with np.load(tmp_path / "ens" / "iteration_001" / "candidates.npz") as kept:
            scored = len(state.pool_ids()) + 4  # the pool when it was scored
            assert kept["features"].shape == (min(config.diverse_candidates * 4, scored), width)
            assert set(outcome.acquired) <= set(kept["id_str"])
    finally:
        state.close()


def state_manifest(state):
    from zoobot.data.manifest import Manifest

    return Manifest.read(state.meta["shards"])


def test_a_campaign_started_from_a_trained_model_finetunes_it_then_continues_from_its_own(
        al_shards, tmp_path, sqlite_tracking):
    """initial_model: iteration 1 is the base's trunk under a new binomial head, the trunk frozen for
    the first epochs; iteration 2 starts from iteration 1's finetuned model."""
    import numpy as np

    from zoobot.active.iteration import run_logged_iteration
    from zoobot.active.loop import ALConfig
    from zoobot.core.model_meta import ModelMeta
    from zoobot.data.manifest import Manifest
    from zoobot.model.checkpoint import Checkpoint
    from zoobot.model.network import ModelConfig, load_bundle, save_bundle
    from zoobot.model.train import TrainConfig, train

    manifest = Manifest.read(al_shards)
    base = train(TrainConfig(shards=str(al_shards), batch_size=8, epochs=1, min_epochs=0),
                 ModelConfig(**TINY_MODEL), manifest, Checkpoint(tmp_path / "base_ckpt")).model
    bundle = save_bundle(base, tmp_path / "base", ModelMeta(manifest.schema, "dirichlet", image_shape=(32, 32, 3)))
    config = ALConfig(state=str(tmp_path / "ft" / "state.db"), shards=str(al_shards), n_acquire=4, n_samples=3,
                      epochs=3, batch_size=8, min_epochs=0, initial_model=str(bundle / "model.keras"))
    model_config = ModelConfig(output="binomial")  # filters of its own are not used: the trunk is the base's
    for iteration in (1, 2):
        outcome, state = run_logged_iteration(config, model_config, arm="bald")
        state.close()
        assert outcome.iteration == iteration and len(outcome.acquired) == 4
    first, _ = load_bundle(tmp_path / "ft" / "iteration_001" / "model" / "model.keras")
    assert first.output_shape == (None, 1) and first.name.endswith("_finetuned")
    assert [layer.name for layer in first.layers if layer.name.startswith("block")][:2] == ["block1_conv1",
                                                                                           "block1_conv2"]
    # the trunk's lowest block never learned (frozen, then not among the top 2 blocks): it is the base's
    np.testing.assert_array_equal(first.get_layer("block1_conv1").get_weights()[0],
                                  base.get_layer("block1_conv1").get_weights()[0])
    assert outcome.train_info["warm_start"]  # iteration 2 continued from iteration 1's finetuned model


def test_a_warm_started_iteration_trains_at_its_own_peak_learning_rate(al_shards, tmp_path, sqlite_tracking):
    """warm_learning_rate: iteration 1 (from scratch) at learning_rate, iteration 2 (from iteration 1's
    model) at the smaller warm peak, as each al_iteration run records (with the epoch it kept)."""
    from mlflow import MlflowClient

    from zoobot.active.iteration import run_logged_iteration
    from zoobot.active.loop import ALConfig
    from zoobot.model.network import ModelConfig

    config = ALConfig(state=str(tmp_path / "lr" / "state.db"), shards=str(al_shards), n_acquire=4, n_samples=3,
                      epochs=1, batch_size=8, min_epochs=0, learning_rate=1e-3, warm_learning_rate=2e-4,
                      schedule="constant")
    rates = []
    for iteration in (1, 2):
        outcome, state = run_logged_iteration(config, ModelConfig(output="binomial", **TINY_MODEL), arm="bald")
        state.close()
        assert outcome.train_info["warm_start"] == (iteration == 2)
        rates.append(outcome.train_info["peak_learning_rate"])
    assert rates == [1e-3, 2e-4]
    runs = MlflowClient().search_runs(["0"], filter_string="tags.step = 'al_iteration'", order_by=["start_time"])
    assert [r.data.metrics["peak_learning_rate"] for r in runs] == [1e-3, 2e-4]
    assert all("best_epoch" in r.data.metrics for r in runs)
