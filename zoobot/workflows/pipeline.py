"""The `main` pipeline: which steps run, with which parameters, in which order.

Plain data and functions: `run_pipeline` decides which steps run and hands each the artifact URI of
the step before it, as MLflow's multistep example does; entrypoints/main.py gives it the function
that runs (or reuses) one step as a child MLflow run:

    simulate -> convert (every labelled galaxy) -> train -> evaluate
             \\-> convert (labelled_size labelled, the rest a pool) -> active_learning (BALD against random)

The train step models the whole labelled catalog, as a user with a labelled catalog would; the
campaign replays, on the same galaxies, how many of those labels active learning would have needed.

A step is identified by its entry point and its parameters, which include the URIs of its inputs
(`runs:/<upstream run>/...`) and the code version. A finished run with the same identity is reused;
when an upstream step runs again its new run id changes every downstream identity, so everything
after it runs again too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zoobot.core import tags as tag_names

STEPS = ("simulate", "convert", "train", "evaluate", "active_learning")


@dataclass(frozen=True)
class PipelineConfig:
    steps: str = field(default="all", metadata={
        "help": "Comma-separated steps to run, in pipeline order: simulate, convert, train, evaluate, "
                "active_learning (or 'all': every step on a simulated survey; convert, train, evaluate on your "
                "catalog). A step left out but needed by a later one is reused from an earlier finished run."})
    catalog: str = field(default="", metadata={
        "help": "Your own catalog (CSV, Parquet, FITS) of vote counts and image paths: the model trains on every "
                "labelled galaxy of it (a replayed campaign only if steps names active_learning); '' simulates "
                "a survey."})
    schema: str = field(default="decals", metadata={"help": "Decision tree of the catalog: decals, gz2 or a file."})
    id_column: str = field(default="", metadata={
        "help": "Id column of your catalog (default: the schema's, e.g. iauname for decals, dr7objid for gz2)."})
    image_column: str = field(default="file_loc", metadata={"help": "Catalog column with each galaxy's image path."})
    image_root: str = field(default="", metadata={
        "help": "Folder that relative image paths of your catalog start from (default: the catalog's folder)."})
    channels: int = field(default=3, metadata={"help": "3 for colour, 1 for greyscale (converted images)."})
    n_galaxies: int = field(default=3000, metadata={"help": "Galaxies in the simulated survey."})
    image_size: int = field(default=64, metadata={"help": "Image size in pixels, simulated and converted."})
    labelled_size: int = field(default=100, metadata={
        "help": "Galaxies labelled at the start of the replayed active-learning campaign; the rest of its training "
                "galaxies form the pool (the train step uses every labelled galaxy). 0: no campaign."})
    epochs: int = field(default=20, metadata={"help": "Epochs of the train step."})
    base_model: str = field(default="", metadata={
        "help": "Start from a trained model (models:/NAME@ALIAS, runs:/<id> or a path): the train step finetunes it "
                "to the catalog's schema (`zoobot finetune`) and the campaign starts from it (initial_model). "
                "'' = from scratch."})
    filters: str = field(default="32,64,128,128", metadata={"help": "Convolution filters per block of the CNN."})
    dense_units: int = field(default=512, metadata={"help": "Units of the dense layer before the dropout head."})
    al_iterations: int = field(default=4, metadata={"help": "Active-learning iterations per arm."})
    al_epochs: int = field(default=40, metadata={
        "help": "Epochs of each active-learning iteration's training (a few hundred labelled galaxies: many short "
                "epochs)."})
    al_dense_units: int = field(default=512, metadata={
        "help": "Units of the campaign model's dense layer (the train step's is dense_units). 512 with dropout 0.25, "
                "`zoobot active_learning`'s defaults: over seeds 1, 4, 5 of the default campaign BALD was below random "
                "at 6 of 9 iterations against 5 of 9 with 128 and dropout 0.5 "
                "(benchmarks/results/default-campaign-features-2026-12-08.md)."})
    al_dropout_rate: float = field(default=0.25, metadata={"help": "MC dropout rate of the campaign model's head."})
    al_output: str = field(default="binomial", metadata={
        "help": "The campaign's model: 'binomial' (the first question, smooth-or-featured: the paper's setting) or "
                "'dirichlet' (the whole tree, as the train step's)."})
    arms: str = field(default="bald,random", metadata={"help": "Acquisition functions the campaign compares."})
    n_acquire: int = field(default=50, metadata={"help": "Galaxies acquired per AL iteration."})
    al_selection: str = field(default="diverse", metadata={
        "help": "How the campaign takes each batch from the scores: 'top', 'power' or 'diverse' (see "
                "`zoobot active_learning --help`); the random arm always draws uniformly. diverse over the "
                "whole pool was below random at 10 of 12 iterations over four seeds, top-k at 5 "
                "(benchmarks/results/al-selection-2026-12-07.md)."})
    al_diverse_candidates: int = field(default=40, metadata={
        "help": "al_selection=diverse: the best-scored galaxies clustered, per galaxy acquired (40 x 50: the "
                "default campaign's whole pool)."})
    registered_model_name: str = field(default="zoobot-default", metadata={
        "help": "Registry name of the trained model (the first version, and any better one, becomes @champion)."})
    seed: int = field(default=1, metadata={"help": "Seed of the simulation, the splits and training."})
    work_dir: str = field(default="data/default", metadata={
        "help": "Folder for the pipeline's outputs (survey/, shards/, active_learning/)."})

    def __post_init__(self):
        chosen = self.step_list
        unknown = [s for s in chosen if s not in STEPS]
        if unknown:
            raise ValueError(f"Unknown pipeline step(s) {unknown}; choose from {list(STEPS)} or 'all'.")
        if not chosen:
            raise ValueError("steps is empty; give e.g. 'all' or 'convert,train'.")
        if self.catalog and "simulate" in chosen and self.steps != "all":
            raise ValueError("steps includes 'simulate' but a catalog was given; drop one of them.")
        from zoobot.core.selection import SELECTIONS

        if self.al_selection not in SELECTIONS:  # before the survey is made and the model trained, not after
            raise ValueError(f"al_selection must be one of {list(SELECTIONS)}; found {self.al_selection!r}.")
        if self.al_diverse_candidates < 1:
            raise ValueError(f"al_diverse_candidates must be >= 1; found {self.al_diverse_candidates}.")
        if self.al_output not in ("binomial", "dirichlet"):
            raise ValueError(f"al_output must be 'binomial' or 'dirichlet'; found {self.al_output!r}.")
        if "active_learning" in chosen and self.labelled_size <= 0:
            raise ValueError("active_learning needs a pool: set labelled_size > 0 (the galaxies labelled at the "
                             "start), or leave active_learning out of steps.")

    @property
    def step_list(self) -> list[str]:
        if self.steps.strip() == "all":
            return self.all_steps
        return [s.strip() for s in self.steps.split(",") if s.strip()]

    @property
    def all_steps(self) -> list[str]:
        """'all': the demo on a simulated survey; on a user's catalog, its model (a campaign replayed on
        galaxies the user has labelled already is an experiment to ask for, not a default)."""
        if self.catalog:
            return ["convert", "train", "evaluate"]
        return list(STEPS)


@dataclass(frozen=True)
class Step:
    entry_point: str
    parameters: dict
    name: str = ""  # the pipeline's step when another entry point does it (train done by finetune)

    @property
    def step_name(self) -> str:
        return self.name or self.entry_point

    @property
    def identity(self) -> dict[str, str]:
        """What makes two runs of the step the same: its parameters, as MLflow stores them."""
        return {k: str(v) for k, v in self.parameters.items()}


def simulate_step(config: PipelineConfig) -> Step:
    return Step("simulate", {
        "output_dir": str(Path(config.work_dir) / "survey"),
        "n_galaxies": config.n_galaxies,
        "image_size": config.image_size,
        "seed": config.seed,
        "schema": config.schema,
        "overwrite": "true",
    })


def convert_step(config: PipelineConfig, catalog_uri: str, campaign: bool = False) -> Step:
    """The catalog as shards: every labelled galaxy in train/validation/test, or (`campaign`) with
    only labelled_size of the training galaxies labelled and the rest an unlabelled pool."""
    return Step("convert", {
        "catalog": catalog_uri,
        "schema": config.schema,
        "image_column": config.image_column,
        **({"id_column": config.id_column} if config.id_column else {}),  # MLflow keeps no empty parameter
        **({"image_root": config.image_root} if config.image_root else {}),
        "channels": config.channels,
        "output_dir": str(Path(config.work_dir) / ("campaign_shards" if campaign else "shards")),
        "image_size": config.image_size,
        "labelled_size": config.labelled_size if campaign else 0,
        "seed": config.seed,
        "overwrite": "true",
    })


def train_step(config: PipelineConfig, shards_uri: str) -> Step:
    if config.base_model:  # the whole tree of the catalog's schema on the base model's trunk
        return Step("finetune", {
            "shards": shards_uri,
            "base_model": config.base_model,
            "output": "dirichlet",
            "epochs": config.epochs,
            "seed": config.seed,
            "registered_model_name": config.registered_model_name,
        }, name="train")
    return Step("train", {
        "shards": shards_uri,
        "epochs": config.epochs,
        "filters": config.filters,
        "dense_units": config.dense_units,
        "seed": config.seed,
        "registered_model_name": config.registered_model_name,
    })


def evaluate_step(config: PipelineConfig, model_uri: str, shards_uri: str) -> Step:
    return Step("evaluate", {"model": model_uri, "shards": shards_uri})


def active_learning_step(config: PipelineConfig, shards_uri: str) -> Step:
    # The campaign's folder is named after its input, so a new conversion starts a new campaign
    # instead of resuming one made from other galaxies.
    key = hashlib.sha256(shards_uri.encode()).hexdigest()[:10]
    # initial_model only when given: MLflow does not keep an empty parameter, so an empty one in the
    # step's identity would never match its finished run and the campaign would never be reused
    start = {"initial_model": config.base_model} if config.base_model else {}
    return Step("active_learning", {
        "shards": shards_uri,
        "iterations": config.al_iterations,
        "arms": config.arms,
        "n_acquire": config.n_acquire,
        "selection": config.al_selection,
        "diverse_candidates": config.al_diverse_candidates,
        "epochs": config.al_epochs,
        "filters": config.filters,
        "dense_units": config.al_dense_units,
        "dropout_rate": config.al_dropout_rate,
        "output": config.al_output,
        **start,
        "seed": config.seed,
        "work_dir": str(Path(config.work_dir) / "active_learning" / key),
    })


def matches(step: Step, params: dict[str, str], tags: dict[str, str], code_version: str) -> bool:
    """Whether a finished run (its params and tags) did this step with this code."""
    return (tags.get(tag_names.STEP) == step.entry_point and tags.get(tag_names.CODE_VERSION) == code_version
            and all(params.get(k) == v for k, v in step.identity.items()))


def needed_steps(config: PipelineConfig) -> set[str]:
    """The chosen steps and those they need (run when chosen, else reused from a finished run)."""
    wanted = set(config.step_list)
    if "evaluate" in wanted:
        wanted.add("train")
    if wanted & {"train", "active_learning"}:
        wanted.add("convert")
    return wanted


def run_pipeline(config: PipelineConfig, run_step: Callable[[Step], object]) -> dict[str, object]:
    """Every needed step in order, each fed the previous step's output URI; `run_step` runs or reuses
    one step and returns its finished run (an mlflow Run: `.info.run_id`, `.data.tags`)."""
    wanted, runs = needed_steps(config), {}
    catalog_uri = config.catalog
    if not config.catalog:
        runs["simulate"] = run_step(simulate_step(config))
        catalog_uri = f"runs:/{runs['simulate'].info.run_id}/survey/catalog.csv"
    chosen = set(config.step_list)
    if "train" in wanted or "convert" in chosen:
        runs["convert"] = run_step(convert_step(config, catalog_uri))
        shards_uri = f"runs:/{runs['convert'].info.run_id}/shards"
    if "train" in wanted:
        runs["train"] = run_step(train_step(config, shards_uri))
    if "evaluate" in wanted:
        train_run = runs["train"]
        model_uri = train_run.data.tags.get(tag_names.MODEL_URI) or f"runs:/{train_run.info.run_id}/model"
        runs["evaluate"] = run_step(evaluate_step(config, model_uri, shards_uri))
    campaign_planned = "active_learning" in config.all_steps and config.labelled_size > 0
    if "active_learning" in wanted or ("convert" in chosen and campaign_planned):
        runs["convert_campaign"] = run_step(convert_step(config, catalog_uri, campaign=True))
    if "active_learning" in wanted:
        campaign_uri = f"runs:/{runs['convert_campaign'].info.run_id}/shards"
        runs["active_learning"] = run_step(active_learning_step(config, campaign_uri))
    return runs
