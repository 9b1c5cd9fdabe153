"""The `main` pipeline: which steps run, with which parameters, in which order.

Plain data and functions; entrypoints/main.py runs the plan as child MLflow runs, handing each
step the artifact URI of the step before it, as MLflow's multistep example does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class PipelineConfig:
    n_galaxies: int = field(default=500, metadata={"help": "Galaxies in the simulated survey."})
    image_size: int = field(default=64, metadata={"help": "Image size in pixels, simulated and converted."})
    seed: int = field(default=1, metadata={"help": "Seed of the simulation and the splits."})
    work_dir: str = field(default="data/default", metadata={
        "help": "Folder for the pipeline's outputs (survey/, shards/)."})


@dataclass(frozen=True)
class Step:
    entry_point: str
    parameters: dict


def simulate_step(config: PipelineConfig) -> Step:
    return Step("simulate", {
        "output_dir": str(Path(config.work_dir) / "survey"),
        "n_galaxies": config.n_galaxies,
        "image_size": config.image_size,
        "seed": config.seed,
        "overwrite": "true",
    })


def convert_step(config: PipelineConfig, catalog_uri: str) -> Step:
    return Step("convert", {
        "catalog": catalog_uri,
        "output_dir": str(Path(config.work_dir) / "shards"),
        "image_size": config.image_size,
        "seed": config.seed,
        "overwrite": "true",
    })
