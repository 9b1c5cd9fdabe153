"""The active-learning loop driven by fake steps (no TensorFlow, no MLflow): stage order, resume
after a crash at each stage, acquisition choosing what the fake model is unsure of, label saving."""

import numpy as np
import pandas as pd
import pytest

from zoobot.active.loop import ALConfig, Steps, run_iteration
from zoobot.core.learning_curves import labels_needed
from zoobot.workflows.campaign import CampaignConfig
from zoobot.active.pool import PoolState
from zoobot.core.predictions import Predictions
from zoobot.core.schema import GZ_DECALS

N_INITIAL, N_POOL = 6, 30


def make_state(path) -> PoolState:
    rng = np.random.default_rng(0)
    ids = [f"g{i:03d}" for i in range(N_INITIAL + N_POOL)]
    galaxies = pd.DataFrame({"id_str": ids, "split": ["train"] * N_INITIAL + ["pool"] * N_POOL})
    labelled = pd.DataFrame(rng.integers(0, 10, (N_INITIAL, GZ_DECALS.n_answers)), columns=list(GZ_DECALS.label_cols))
    labelled.insert(0, "id_str", ids[:N_INITIAL])
    return PoolState.create(path, GZ_DECALS, galaxies, labelled)


def uncertain(id_str: str) -> bool:
    return int(id_str[1:]) % 3 == 0  # the fake model disagrees with itself about every third galaxy


def embedding(ids) -> np.ndarray:
    """The fake model's view: the unsure galaxies in four groups by id (g0xx, g1xx, g2xx, g3xx at
    2-d positions 10 apart), the sure ones together far away."""
    number = np.array([int(i[1:]) for i in ids])
    x = np.where(number % 3 == 0, 10.0 * (number // 10) + 0.01 * number, 100.0)
    return np.stack([x, np.zeros_like(x)], axis=1)


class FakeWorld:
    """A fake model whose MC samples disagree on chosen galaxies, and an oracle that knows everything."""

    def __init__(self, fail_at: str | None = None):
        self.fail_at, self.calls = fail_at, []

    def steps(self) -> Steps:
        return Steps(train=self.train, predict=self.predict, request=self.request, labels=self.labels)

    def _maybe_fail(self, stage):
        self.calls.append(stage)
        if stage == self.fail_at:
            self.fail_at = None
            raise KeyboardInterrupt(f"killed during {stage}")

    def train(self, iteration, state):
        self._maybe_fail("train")
        return {"n_labelled": state.n_labelled(), "test_loss": 10.0 / state.n_labelled()}

    def predict(self, iteration, ids, info):
        self._maybe_fail("predict")
        rng = np.random.default_rng(iteration)
        for start in range(0, len(ids), 7):  # chunks, as a real pool would come
            chunk = np.array(ids[start:start + 7])
            samples = np.full((len(chunk), GZ_DECALS.n_answers, 8), 10.0)
            for i, id_str in enumerate(chunk):
                if uncertain(id_str):
                    samples[i, 0, :] = rng.choice([1.0, 90.0], size=8)
            yield Predictions(chunk, samples, "dirichlet", GZ_DECALS, features=embedding(chunk))

    def request(self, iteration, ids):
        self._maybe_fail("request")
        return {"n_requested": len(ids)}

    def labels(self, iteration, ids):
        self._maybe_fail("ingest")
        frame = pd.DataFrame(np.ones((len(ids), GZ_DECALS.n_answers), dtype=int), columns=list(GZ_DECALS.label_cols))
        frame.insert(0, "id_str", ids)
        return frame


def config(**kw):
    return ALConfig(state="unused", n_acquire=4, **kw)


def test_one_iteration_runs_every_stage_and_acquires_the_uncertain(tmp_path):
    world = FakeWorld()
    with make_state(tmp_path / "s.db") as state:
        outcome = run_iteration(state, world.steps(), config())
        assert outcome.stages_run == ("train", "predict", "acquire", "request", "ingest")
        assert all(uncertain(i) for i in outcome.acquired) and len(outcome.acquired) == 4
        assert outcome.n_labelled == N_INITIAL + 4
        assert len(outcome.scores) == N_POOL
        assert state.current_iteration() == 2
        state.check_invariants()


def test_a_diverse_batch_takes_the_unsure_galaxies_from_every_group_the_model_sees(tmp_path):
    with make_state(tmp_path / "s.db") as state:
        outcome = run_iteration(state, FakeWorld().steps(), config(selection="diverse"))
        assert all(uncertain(i) for i in outcome.acquired) and len(outcome.acquired) == 4
        assert sorted(int(i[1:]) // 10 for i in outcome.acquired) == [0, 1, 2, 3]
        with np.load(tmp_path / "iteration_001" / "candidates.npz") as kept:  # what the acquire stage reads
            assert len(kept["id_str"]) == N_POOL and kept["features"].shape == (N_POOL, 2)
        state.check_invariants()


@pytest.mark.parametrize("selection", ["top", "diverse"])
@pytest.mark.parametrize("stage", ["train", "predict", "request", "ingest"])
def test_a_crash_in_any_stage_resumes_to_the_same_labelled_set(tmp_path, stage, selection):
    with make_state(tmp_path / "clean.db") as state:
        for _ in range(2):
            run_iteration(state, FakeWorld().steps(), config(selection=selection))
        expected = sorted(state.labelled_ids())

    world = FakeWorld(fail_at=stage)
    (tmp_path / "crash").mkdir()
    with make_state(tmp_path / "crash" / "crash.db") as state:
        with pytest.raises(KeyboardInterrupt):
            run_iteration(state, world.steps(), config(selection=selection))
        state.check_invariants()
    with PoolState.open(tmp_path / "crash" / "crash.db") as state:  # a new process, as after SIGKILL
        outcome = run_iteration(state, world.steps(), config(selection=selection))
        assert outcome.stages_run[0] == stage  # finished stages are not run again
        run_iteration(state, world.steps(), config(selection=selection))
        assert sorted(state.labelled_ids()) == expected
        state.check_invariants()


def test_random_arm_is_reproducible_and_differs_from_bald(tmp_path):
    picks = []
    for name, arm, how in (("a", "random", "top"), ("b", "random", "top"), ("c", "bald", "top"),
                           ("d", "random", "diverse"), ("e", "random", "power")):
        (tmp_path / name).mkdir()
        with make_state(tmp_path / name / "s.db") as state:
            picks.append(run_iteration(state, FakeWorld().steps(), config(acquisition=arm, selection=how)).acquired)
    assert picks[0] == picks[1] and set(picks[0]) != set(picks[2])
    assert picks[3] == picks[4] == picks[0]  # the baseline draws uniformly whatever the selection


def test_zooniverse_oracle_waits_for_labels(tmp_path):
    world = FakeWorld()
    steps = Steps(train=world.train, predict=world.predict, request=world.request, labels=lambda i, ids: None)
    with make_state(tmp_path / "s.db") as state:
        outcome = run_iteration(state, steps, config(oracle="zooniverse"))
        assert outcome.waiting_for_labels and "ingest" not in outcome.stages_run
        again = run_iteration(state, world.steps(), config(oracle="zooniverse"))
        assert again.stages_run == ("ingest",) and again.n_labelled == N_INITIAL + 4


def curve(points):
    return pd.DataFrame(points, columns=["n_labelled", "test_loss"])


def test_label_saving_interpolates_where_the_best_arm_reaches_random():
    curves = {"random": curve([(100, 5.0), (200, 4.0), (300, 3.0)]),
              "bald": curve([(100, 5.0), (200, 3.5), (300, 2.5)])}
    saving, reason = labels_needed(curves)
    # bald reaches 3.0 halfway between 200 (3.5) and 300 (2.5): 250 labels against random's 300
    assert saving == pytest.approx(1 - 250 / 300) and reason == ""


@pytest.mark.parametrize("curves, why", [
    ({"bald": curve([(1, 1.0), (2, 0.5)])}, "no 'random' arm"),
    ({"random": curve([(1, 1.0)]), "bald": curve([(1, 1.0)])}, "at least two iterations"),
    ({"random": curve([(1, 2.0), (2, 1.0)]), "bald": curve([(1, 3.0), (2, 2.0)])}, "no arm reached"),
])
def test_label_saving_is_nan_with_a_reason(curves, why):
    saving, reason = labels_needed(curves)
    assert np.isnan(saving) and why in reason


def test_campaign_config_gives_each_arm_its_own_state():
    campaign = CampaignConfig(shards="s", arms="bald, random", work_dir="w")
    assert campaign.arm_list == ["bald", "random"]
    assert campaign.arm_config("bald").state.endswith("w/bald/state.db")
    with pytest.raises(ValueError, match="oracle must be"):
        ALConfig(state="x", oracle="email")


def test_iterations_ahead_counts_where_an_arm_beats_random_after_the_shared_start():
    from zoobot.core.learning_curves import iterations_ahead

    curves = {"bald": pd.DataFrame({"iteration": [1, 2, 3, 4], "n_labelled": [10, 20, 30, 40],
                                    "test_loss": [5.0, 4.0, 3.5, 3.4]}),
              "random": pd.DataFrame({"iteration": [1, 2, 3, 4], "n_labelled": [10, 20, 30, 40],
                                      "test_loss": [5.0, 4.5, 3.4, 3.6]})}
    assert iterations_ahead(curves) == {"bald": (2, 3)}
    assert iterations_ahead({"bald": curves["bald"]}) == {}


def test_campaigns_over_seeds_average_the_curves_and_read_the_saving_per_seed_and_from_the_means():
    from zoobot.core.learning_curves import compare_over_seeds

    campaigns = {
        1: {"random": curve([(100, 8.0), (150, 7.0), (200, 6.0)]), "bald": curve([(100, 8.0), (150, 6.0), (200, 5.0)])},
        2: {"random": curve([(100, 9.0), (150, 7.0), (200, 7.0)]), "bald": curve([(100, 9.0), (150, 8.0), (200, 7.5)])},
        3: {"bald": curve([(100, 7.0), (150, 6.5)])},  # no random arm on this seed, and stopped early
    }
    random, bald = compare_over_seeds(campaigns)
    assert random.arm == "random" and random.seeds == (1, 2) and random.mean_curve.to_dict() == {
        100: 8.5, 150: 7.0, 200: 6.5}
    assert bald.seeds == (1, 2, 3) and bald.mean_curve[150] == pytest.approx(6.833, abs=1e-3)
    assert bald.seeds_at.to_dict() == {100: 3, 150: 3, 200: 2}
    # after the shared first iteration: seed 1 below at 150 and 200, seed 2 at neither
    assert (bald.below, bald.compared) == (2, 4)
    # seed 1: bald reaches random's final 6.0 at 150 labels, random at 200; seed 2: bald never reaches 7.0
    assert bald.savings[1] == pytest.approx(1 - 150 / 200) and np.isnan(bald.savings[2]) and 3 not in bald.savings
    # the seed-mean curves of the seeds with both arms: random 8.5, 7.0, 6.5; bald 8.5, 7.0, 6.25, which
    # reaches 6.5 two thirds of the way from 150 to 200
    assert bald.mean_saving == pytest.approx(1 - (150 + 50 * 2 / 3) / 200) and bald.mean_note == ""
    lonely = compare_over_seeds({3: campaigns[3]})
    assert len(lonely) == 1 and np.isnan(lonely[0].mean_saving) and "no 'random' arm" in lonely[0].mean_note


def test_an_iterations_labelled_galaxies_are_read_once_into_memory_with_the_states_labels(tiny_shards, monkeypatch):
    from zoobot.active.iteration import labelled_arrays
    from zoobot.data import shards
    from zoobot.data.manifest import Manifest
    from zoobot.data.shards import read_split

    manifest = Manifest.read(tiny_shards)
    ids = list(read_split(manifest, "train")["id_str"][::3])
    labels = np.arange(len(ids) * len(manifest.label_cols)).reshape(len(ids), -1)  # not the shards' votes
    arrays = labelled_arrays(manifest, ids, labels)
    got = [i.decode() for i in arrays["id_str"]]
    assert sorted(got) == sorted(ids) and arrays["image"].shape == (len(ids), 32, 32, 3)
    for galaxy, row in zip(got, arrays["labels"]):
        np.testing.assert_array_equal(row, labels[ids.index(galaxy)])
    monkeypatch.setattr(shards, "IN_MEMORY_BYTES", 32 * 32 * 3 * (len(ids) - 1))
    assert labelled_arrays(manifest, ids, labels) is None  # too large: the iteration streams them each epoch
    assert labelled_arrays(manifest, [], labels[:0]) is None  # none labelled: left to the streamed path's error
