"""The active-learning loop: one iteration = train -> predict the pool -> acquire -> request -> ingest.

The loop knows nothing of TensorFlow or MLflow: it is given the steps that touch them (`Steps`), so
it runs the same with a real model and with a fake predict function in tests. Every stage is
recorded in the pool state when it finishes, in the same transaction as its results; a restarted
iteration skips what is done and redoes only the stage that was interrupted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.core import acquisition, selection
from zoobot.core.learning_curves import iterations_ahead, labels_needed  # noqa: F401  (their old home)
from zoobot.active.pool import PoolState
from zoobot.core.predictions import Predictions
from zoobot.core.staging import atomic_write_text


@dataclass(frozen=True)
class ALConfig:
    state: str = field(metadata={
        "help": "The campaign's state database (SQLite); created from --shards on the first iteration."})
    shards: str = field(default="", metadata={
        "help": "Shards converted with a labelled 'train' split and an unlabelled 'pool': unclassified galaxies "
                "(convert --pool-catalog, for volunteers) or labelled ones held back (convert --labelled-size, "
                "simulated); needed when the campaign is created."})
    acquisition: str = field(default="bald", metadata={
        "help": f"Acquisition function: {', '.join(sorted(acquisition.ACQUISITIONS))} (or one you registered)."})
    n_acquire: int = field(default=128, metadata={"help": "Galaxies sent to volunteers per iteration."})
    selection: str = field(default="diverse", metadata={
        "help": "How the batch is taken from the scores: 'diverse' (the diverse_candidates x n_acquire best, "
                "clustered by the model's embedding, weighted by the score; the most typical of each cluster; "
                "Zhdanov 2019), 'top' (the n_acquire best: the 2020 paper's way, near-copies of one kind of galaxy) "
                "or 'power' (drawn in proportion to the score; Kirsch et al. 2023). The random arm always draws "
                "uniformly."})
    diverse_candidates: int = field(default=40, metadata={
        "help": "selection=diverse: the best-scored galaxies clustered, per galaxy acquired (Zhdanov's beta): 1 is "
                "top-k; pool size / n_acquire clusters the whole pool, weighted by the score."})
    n_samples: int = field(default=15, metadata={"help": "MC-dropout samples per pool galaxy (per member)."})
    members: int = field(default=1, metadata={
        "help": "Models trained per iteration, each from its own seed: the pool is scored with all their MC samples "
                "(a deep ensemble of MC-dropout models); test metrics are the members' means."})
    n_volunteers: float = field(default=40.0, metadata={
        "help": "Volunteers expected to classify each galaxy (sets N in the vote likelihoods)."})
    oracle: str = field(default="simulated", metadata={
        "help": "simulated: labels revealed from the conversion's oracle file; zooniverse: export a subject "
                "manifest and ingest reduced votes from --labels-file."})
    labels_file: str = field(default="", metadata={
        "help": "zooniverse: CSV of reduced vote counts for the galaxies requested last iteration (an id column, "
                "'#id_str' as the subject manifest has it, and the schema's answer columns, or --labels-map)."})
    labels_map: str = field(default="", metadata={
        "help": "zooniverse: how the reducer's column names map to the schema's, as 'reducer=schema,...' or a YAML "
                "or JSON file of {reducer column: schema column} (the id column may be mapped to id_str too)."})
    next_iteration: bool = field(default=True, metadata={
        "help": "zooniverse: once --labels-file has brought the labels in, go on to the next iteration (train, "
                "acquire, export its subjects) in the same command; false: stop after the ingest."})
    warm_start: bool = field(default=True, metadata={
        "help": "Start training from the previous iteration's model instead of from scratch."})
    initial_model: str = field(default="", metadata={
        "help": "Start from a trained model (models:/NAME@ALIAS, runs:/<id> or a path): iteration 1 finetunes it to "
                "the campaign's question (a new head; the trunk frozen, then its top blocks unfrozen, as `zoobot "
                "finetune` with its defaults), later iterations continue from the previous iteration's model (or "
                "finetune the base again without warm_start). '' = every model from scratch (filters, ...)."})
    epochs: int = field(default=30, metadata={"help": "Maximum epochs per iteration (the schedule's length)."})
    batch_size: int = field(default=32, metadata={"help": "Galaxies per batch."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate (the peak, with a schedule)."})
    warm_learning_rate: float = field(default=0.0, metadata={
        "help": "Peak learning rate of an iteration that starts from the previous iteration's model (warm_start): "
                "a smaller step keeps what that model learned instead of shaking it loose; 0 = learning_rate."})
    schedule: str = field(default="cosine", metadata={
        "help": "Learning rate over each iteration's training: 'constant' or 'cosine' (warm-up, then decay)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay; 0 = plain Adam."})
    min_epochs: int = field(default=20, metadata={
        "help": "Early stopping never stops before this epoch. A campaign's first model trains on a few dozen "
                "steps per epoch and can sit on its chance plateau for 15-20 epochs before it learns "
                "(benchmarks/results/al-warm-start-2026-12-07.md)."})
    patience: int = field(default=10, metadata={"help": "Early-stopping patience (epochs)."})
    seed: int = field(default=0, metadata={"help": "Seed of training and of random acquisition."})
    registered_model_name: str = field(default="", metadata={
        "help": "Register each iteration's model under this name ('' = zoobot-al-<campaign>-<acquisition>, "
                "<campaign> being the folder of the state database, so campaigns never share one)."})

    def __post_init__(self):
        problems = []
        if self.oracle not in ("simulated", "zooniverse"):
            problems.append(f"oracle must be 'simulated' or 'zooniverse', got {self.oracle!r}")
        if self.selection not in selection.SELECTIONS:
            problems.append(f"selection must be one of {list(selection.SELECTIONS)}, got {self.selection!r}")
        if self.diverse_candidates < 1:
            problems.append(f"diverse_candidates must be >= 1, got {self.diverse_candidates}")
        if self.n_acquire < 1:
            problems.append(f"n_acquire must be >= 1, got {self.n_acquire}")
        if self.n_samples < 1:
            problems.append(f"n_samples must be >= 1, got {self.n_samples}")
        if self.members < 1:
            problems.append(f"members must be >= 1, got {self.members}")
        if self.warm_learning_rate < 0:
            problems.append(f"warm_learning_rate must be >= 0 (0 = learning_rate), got {self.warm_learning_rate}")
        if self.labels_map and self.oracle != "zooniverse":
            problems.append("labels_map applies to volunteers' reduced votes: use it with oracle='zooniverse'")
        if problems:
            raise ValueError("Invalid al_iteration settings: " + "; ".join(problems) + ".")
        acquisition.get_acquisition(self.acquisition)  # says which names exist


@dataclass(frozen=True)
class Steps:
    """What an iteration does to the world; the loop decides when."""
    # (iteration, state) -> info to record (model path, metrics, registered version, ...)
    train: Callable[[int, PoolState], dict]
    # (iteration, pool ids, train info) -> predictions of the pool, in chunks
    predict: Callable[[int, list[str], dict], Iterable[Predictions]]
    # (iteration, acquired ids) -> info (e.g. where the subject manifest went)
    request: Callable[[int, list[str]], dict]
    # (iteration, ids awaiting labels) -> their votes (id_str + label columns), or None: not there yet
    labels: Callable[[int, list[str]], pd.DataFrame | None]


@dataclass(frozen=True)
class IterationOutcome:
    iteration: int
    stages_run: tuple[str, ...]  # what this call did (a resumed iteration skips finished stages)
    train_info: dict
    scores: pd.DataFrame  # id_str, score, rank for the pool at this iteration
    acquired: list[str]
    n_labelled: int  # after ingestion
    waiting_for_labels: bool  # zooniverse: the labels have not come back yet


def default_model_name(state_path: str | Path, arm: str) -> str:
    """zoobot-al-<campaign>-<arm>: the campaign is the folder of its state database (for an arm of
    `active_learning`, the work_dir holding the arm's folder)."""
    folder = Path(state_path).resolve().parent
    if folder.name == arm:
        folder = folder.parent
    campaign = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.name).strip("-") or "campaign"
    return f"zoobot-al-{campaign}-{arm}"


def iteration_dir(state: PoolState, iteration: int) -> Path:
    """Where an iteration's files go: beside the campaign's state file."""
    return iteration_folder(state.path, iteration)


def iteration_folder(state_path: str | Path, iteration: int) -> Path:
    return Path(state_path).parent / f"iteration_{iteration:03d}"


def rejects_path(state: PoolState, iteration: int) -> Path:
    """The vote rows an iteration's ingest set aside, each with its reason."""
    return iteration_dir(state, iteration) / "rejected_labels.csv"


def _write_rejects(rejected: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, rejected.to_csv(index=False))
    return path


def candidates_path(state: PoolState, iteration: int) -> Path:
    """The embeddings of an iteration's best-scored galaxies, kept for a diverse selection."""
    return iteration_dir(state, iteration) / "candidates.npz"


def score_pool(chunks: Iterable[Predictions], name: str, n_volunteers: float, seed: int,
               keep: int = 0) -> tuple[list[str], np.ndarray, dict | None]:
    """Acquisition scores chunk by chunk, so the pool's samples never need to be in memory at once;
    with `keep` > 0, also the embeddings of the `keep` best-scored galaxies ({"id_str", "score",
    "features"}), held to that many as the chunks go by."""
    ids, scores, kept = [], [], None
    for i, chunk in enumerate(chunks):
        ids.extend(chunk.id_str.tolist())
        scores.append(acquisition.score(name, chunk, n_volunteers=n_volunteers, seed=seed + i))
        if keep:
            kept = _best_of(kept, chunk, scores[-1], keep)
    return ids, np.concatenate(scores) if scores else np.zeros(0), kept


def _best_of(kept: dict | None, chunk: Predictions, scores: np.ndarray, keep: int) -> dict:
    if chunk.features is None:
        raise ValueError("selection='diverse' clusters the pool galaxies' embeddings, and the predict step gave "
                         "none. Fix: predict with features (Predictions.features), or use selection='top'.")
    new = {"id_str": np.asarray(chunk.id_str).astype(str), "score": scores,
           "features": np.asarray(chunk.features, np.float32)}
    if kept is not None:
        new = {key: np.concatenate([kept[key], new[key]]) for key in new}
    best = np.lexsort((new["id_str"], -new["score"]))[:keep]
    return {key: value[best] for key, value in new.items()}


def _save_candidates(path: Path, kept: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        np.savez(f, **kept)
    partial.replace(path)  # all or nothing: a crash leaves the old file or none


def arm_selection(config: ALConfig) -> str:
    """How this arm takes its batch: the configured selection, except that the random arm always takes
    its k random scores as they are, a uniform draw: the baseline stays the baseline."""
    return "top" if config.acquisition == "random" else config.selection


def _select(state: PoolState, iteration: int, table: pd.DataFrame, config: ALConfig) -> np.ndarray:
    """The iteration's batch (see `arm_selection`)."""
    k, seed = min(config.n_acquire, len(table)), config.seed + 1000 * iteration + 7
    how = arm_selection(config)
    if how != "diverse":
        return selection.select(table["score"].to_numpy(), table["id_str"].to_numpy(), k, how, seed=seed)
    path = candidates_path(state, iteration)
    if not path.exists():
        raise RuntimeError(f"Iteration {iteration} was scored without keeping the embeddings a diverse selection "
                           f"needs ({path} is missing): it was predicted with another selection. Fix: finish this "
                           "iteration with that selection and switch from the next one.")
    with np.load(path) as kept:
        return selection.diverse_k(kept["score"], kept["id_str"], kept["features"], min(k, len(kept["score"])),
                                   seed=seed, candidates=config.diverse_candidates)


def run_iteration(state: PoolState, steps: Steps, config: ALConfig) -> IterationOutcome:
    iteration = state.current_iteration()
    ran = []

    if not state.is_done(iteration, "train"):
        state.mark_done(iteration, "train", steps.train(iteration, state))
        ran.append("train")
    train_info = state.stage_info(iteration, "train")

    if not state.is_done(iteration, "predict"):
        pool = state.pool_ids()
        keep = selection.candidates_needed(arm_selection(config), min(config.n_acquire, len(pool)),
                                           config.diverse_candidates)
        ids, scores, kept = score_pool(steps.predict(iteration, pool, train_info), config.acquisition,
                                       config.n_volunteers, config.seed + 1000 * iteration, keep=keep)
        if sorted(ids) != sorted(pool):
            raise RuntimeError(f"predict returned {len(ids)} galaxies for a pool of {len(pool)}; every pool "
                               "galaxy needs a score.")
        if kept is not None:
            _save_candidates(candidates_path(state, iteration), kept)
        with state.stage(iteration, "predict") as info:
            state.record_scores(iteration, ids, scores)
            info.update(n_scored=len(ids), score_mean=float(np.mean(scores)) if len(scores) else None)
        ran.append("predict")

    if not state.is_done(iteration, "acquire"):
        table = state.scores(iteration)
        chosen = _select(state, iteration, table, config)
        with state.stage(iteration, "acquire") as info:
            state.acquire(iteration, list(chosen))
            info["n_acquired"] = len(chosen)
        ran.append("acquire")
    acquired = state.acquired_ids(iteration)

    if not state.is_done(iteration, "request"):
        state.mark_done(iteration, "request", steps.request(iteration, acquired))
        ran.append("request")

    waiting = False
    if not state.is_done(iteration, "ingest"):
        awaiting = state.awaiting_ids()
        votes = steps.labels(iteration, awaiting)
        if votes is None:
            waiting = True
        else:
            with state.stage(iteration, "ingest") as info:
                report = state.ingest_labels(iteration, votes)
                info.update(n_ingested=report.n_ingested, n_rejected=report.n_rejected)
                if report.n_rejected:  # written before the stage commits: a kill here just repeats the ingest
                    info["rejected_file"] = str(_write_rejects(report.rejected, rejects_path(state, iteration)))
            ran.append("ingest")
    return IterationOutcome(iteration, tuple(ran), train_info, state.scores(iteration), acquired,
                            state.n_labelled(), waiting)


def finished_outcome(state: PoolState, iteration: int) -> IterationOutcome:
    """The outcome of an iteration that finished earlier, rebuilt from the state (for a run whose
    logging a kill interrupted)."""
    history = state.history().set_index("iteration")
    return IterationOutcome(iteration, (), state.stage_info(iteration, "train"), state.scores(iteration),
                            state.acquired_ids(iteration), int(history.at[iteration, "n_labelled"]), False)
