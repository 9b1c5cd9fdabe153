"""A simulated active-learning campaign: several acquisition arms, each from the same labelled start,
iteration after iteration, then every arm's learning curve and the label saving of the best arm over
random. What `zoobot active_learning`, its entry point, the `main` pipeline and the benchmark run.

The campaign is one MLflow run (its id kept in WORK_DIR/campaign_run.json, so a restarted campaign
logs into it) with one nested run per (arm, iteration). Each arm's state is its own SQLite file, so
a campaign killed at any moment continues where it stopped. Every arm's first model would be the
same model (same labelled galaxies, settings and seed), so it is trained once, by the first arm, and
the others start from a copy of its checkpoint (`share_start`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from zoobot.active.loop import ALConfig
from zoobot.core import acquisition
from zoobot.model.network import ModelConfig


@dataclass(frozen=True)
class CampaignConfig:
    shards: str = field(metadata={
        "help": "Shards converted with --labelled-size (a labelled 'train' split, an unlabelled 'pool', a 'test' split)."})
    iterations: int = field(default=2, metadata={"help": "Iterations per arm."})
    arms: str = field(default="bald,random", metadata={
        "help": "Comma-separated acquisition functions to compare, each from the same starting labelled set."})
    work_dir: str = field(default="data/active_learning", metadata={
        "help": "Folder for each arm's state database, models and predictions."})
    n_acquire: int = field(default=128, metadata={"help": "Galaxies acquired per iteration."})
    selection: str = field(default="diverse", metadata={
        "help": "'diverse' (the diverse_candidates x n_acquire best, clustered by the model's embedding; the most "
                "typical of each cluster), 'top' (the n_acquire best scores) or 'power' (drawn in proportion to the "
                "score)."})
    diverse_candidates: int = field(default=40, metadata={
        "help": "selection=diverse: the best-scored galaxies clustered, per galaxy acquired (1 = top-k)."})
    n_samples: int = field(default=15, metadata={"help": "MC-dropout samples per pool galaxy (per member)."})
    members: int = field(default=1, metadata={
        "help": "Models per iteration (a deep ensemble of MC-dropout models scores the pool)."})
    n_volunteers: float = field(default=40.0, metadata={"help": "Volunteers expected per galaxy."})
    warm_start: bool = field(default=True, metadata={"help": "Start each iteration from the previous model."})
    initial_model: str = field(default="", metadata={
        "help": "Start every arm from a trained model (models:/NAME@ALIAS, runs:/<id> or a path), finetuned to the "
                "campaign's question in iteration 1; '' = from scratch."})
    epochs: int = field(default=30, metadata={"help": "Maximum epochs per iteration (the schedule's length)."})
    batch_size: int = field(default=32, metadata={"help": "Galaxies per batch."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate (the peak, with a schedule)."})
    warm_learning_rate: float = field(default=0.0, metadata={
        "help": "Peak learning rate of a warm-started iteration (from the previous model); 0 = learning_rate."})
    schedule: str = field(default="cosine", metadata={
        "help": "Learning rate over each iteration's training: 'constant' or 'cosine' (warm-up, then decay)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay; 0 = plain Adam."})
    min_epochs: int = field(default=20, metadata={
        "help": "Early stopping never stops before this epoch. A campaign's first model trains on a few dozen "
                "steps per epoch and can sit on its chance plateau for 15-20 epochs before it learns "
                "(benchmarks/results/al-warm-start-2026-12-07.md)."})
    patience: int = field(default=10, metadata={"help": "Early-stopping patience (epochs)."})
    seed: int = field(default=0, metadata={"help": "Seed shared by every arm."})

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}.")
        for arm in self.arm_list:
            acquisition.get_acquisition(arm)

    @property
    def arm_list(self) -> list[str]:
        return [a.strip() for a in self.arms.split(",") if a.strip()]

    def arm_config(self, arm: str) -> ALConfig:
        return ALConfig(
            state=str(Path(self.work_dir) / arm / "state.db"), shards=self.shards, acquisition=arm,
            n_acquire=self.n_acquire, selection=self.selection, diverse_candidates=self.diverse_candidates,
            n_samples=self.n_samples,
            members=self.members, n_volunteers=self.n_volunteers,
            warm_start=self.warm_start, initial_model=self.initial_model, epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate, warm_learning_rate=self.warm_learning_rate, schedule=self.schedule,
            weight_decay=self.weight_decay,
            min_epochs=self.min_epochs, patience=self.patience, seed=self.seed)


@dataclass(frozen=True)
class CampaignOutcome:
    curves: dict[str, pd.DataFrame]  # arm -> n_labelled and test metrics per iteration
    label_saving: float  # 1 - labels the best arm needs / labels random needs; NaN when not computable
    reason: str  # why label_saving is NaN ('' when it is not)
    run_id: str


def run_campaign(config: CampaignConfig, model_config: ModelConfig,
                 say: Callable[[str], None] = print) -> CampaignOutcome:
    from zoobot import tracking
    from zoobot.core.learning_curves import iterations_ahead, labels_needed

    parent_file = Path(config.work_dir) / "campaign_run.json"
    resume = json.loads(parent_file.read_text())["run_id"] if parent_file.is_file() else None
    params = dataclasses.asdict(config) | dataclasses.asdict(model_config)
    with tracking.resume_or_start("active_learning", params, resume) as parent:
        parent_file.parent.mkdir(parents=True, exist_ok=True)
        parent_file.write_text(json.dumps({"run_id": parent.info.run_id}))
        curves = {arm: run_arm(config, model_config, arm, say) for arm in config.arm_list}
        saving, reason = labels_needed(curves)
        tracking.log_learning_curves(curves, saving, reason, iterations_ahead(curves))
    return CampaignOutcome(curves, saving, reason, parent.info.run_id)


def run_arm(config: CampaignConfig, model_config: ModelConfig, arm: str, say: Callable[[str], None]) -> pd.DataFrame:
    """Every iteration of one arm that is not done yet, each a nested run; its learning curve."""
    from zoobot.active.iteration import learning_curve, run_logged_iteration
    from zoobot.active.pool import PoolState

    arm_config = config.arm_config(arm)
    if share_start(config, arm):
        say(f"{arm}: iteration 1 starts from the {config.arm_list[0]} arm's model (the same labelled galaxies)")
    while True:
        if Path(arm_config.state).exists():
            with PoolState.open(arm_config.state) as state:
                if state.current_iteration() > config.iterations:
                    return learning_curve(state)
        outcome, state = run_logged_iteration(arm_config, model_config, arm=arm, nested=True)
        state.close()
        say(f"{arm}: iteration {outcome.iteration} done, {outcome.n_labelled} labelled")


def share_start(config: CampaignConfig, arm: str) -> bool:
    """Give an arm that has not started the first arm's finished iteration-1 checkpoints. The first
    iteration of every arm trains on the same labelled galaxies with the same settings and seed, so
    training it again would give the same weights (training is a function of its seed:
    tests/test_train.py) at the cost of a whole training. From the copy, the arm's iteration 1 only
    loads the best epoch, evaluates and registers it, and logs the copied epochs' metrics into its
    own run. True when it copied."""
    from zoobot.active.loop import iteration_folder
    from zoobot.model.checkpoint import Checkpoint

    first = config.arm_list[0]
    state = Path(config.arm_config(arm).state)
    if arm == first or state.exists():
        return False
    source = iteration_folder(config.arm_config(first).state, 1)
    checkpoints = sorted(source.glob("checkpoint*"))
    if not checkpoints or not all(Checkpoint(c).state.get("finished") for c in checkpoints):
        return False
    for checkpoint in checkpoints:  # a copy killed halfway is made again: the arm has no state yet
        shutil.copytree(checkpoint, iteration_folder(state, 1) / checkpoint.name, dirs_exist_ok=True)
    return True
