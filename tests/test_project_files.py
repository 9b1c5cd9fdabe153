"""The project's declarations agree with each other: MLproject with the click commands and their
config dataclasses (MLflow's own examples ship with such drift), conda.yaml with pyproject.toml."""

import dataclasses
import importlib.util
import re
import shlex
import tomllib
from pathlib import Path

import click
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from zoobot import cli

ROOT = Path(__file__).resolve().parents[1]
MLPROJECT = yaml.safe_load((ROOT / "MLproject").read_text())
ENTRY_POINTS = list(MLPROJECT["entry_points"])


def _click_command(entry_point: str) -> click.Command:
    words = MLPROJECT["entry_points"][entry_point]["command"].split()
    if words[1] == "entrypoints/step.py":
        return cli.main.get_command(None, words[2])
    spec = importlib.util.spec_from_file_location(f"entrypoint_{entry_point}", ROOT / words[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


SUBCOMMAND = "what"  # the parameter of a group's entry point (download) that names its subcommand


def _options(entry_point: str) -> dict[str, click.Option]:
    """The command's options; for a group (download catalog|images), those all its subcommands share."""
    command = _click_command(entry_point)
    commands = list(command.commands.values()) if isinstance(command, click.Group) else [command]
    shared = set.intersection(*({p.name for p in c.params if isinstance(p, click.Option)} for c in commands))
    return {p.name: p for p in commands[0].params if p.name in shared}


def _declared(entry_point: str) -> dict:
    parameters = dict(MLPROJECT["entry_points"][entry_point]["parameters"])
    if isinstance(_click_command(entry_point), click.Group):
        parameters.pop(SUBCOMMAND)
    return parameters


def test_every_step_of_the_cli_has_an_entry_point():
    steps = [e for e in ENTRY_POINTS if "entrypoints/step.py" in MLPROJECT["entry_points"][e]["command"]]
    assert set(steps) == set(cli.main.list_commands(None))
    for name in steps:
        assert _click_command(name).name == name


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_entry_point_parameters_and_defaults_match_the_click_options(entry_point):
    options, declared = _options(entry_point), _declared(entry_point)
    assert set(declared) == set(options), "MLproject and the click command declare different parameters"
    for name, parameter in declared.items():
        option = options[name]
        if option.required:
            assert "default" not in parameter, f"{name} is required by the CLI but has an MLproject default"
            continue
        # MLflow passes every value as a string; the CLI must read the MLproject default as its own.
        assert option.type.convert(str(parameter["default"]), option, None) == option.default, name


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_entry_point_command_passes_every_parameter_once(entry_point):
    words = shlex.split(MLPROJECT["entry_points"][entry_point]["command"])
    passed = {w[2:]: words[i + 1] for i, w in enumerate(words) if w.startswith("--")}
    assert passed == {name: "{" + name + "}" for name in _declared(entry_point)}
    if isinstance(_click_command(entry_point), click.Group):
        assert words[3] == "{" + SUBCOMMAND + "}"


def test_click_defaults_come_from_the_config_dataclasses():
    from zoobot.active.loop import ALConfig
    from zoobot.workflows.campaign import CampaignConfig
    from zoobot.data.convert import ConvertConfig
    from zoobot.data.download import DownloadCatalogConfig, DownloadImagesConfig
    from zoobot.model.embed import EmbedConfig
    from zoobot.model.evaluate import EvaluateConfig
    from zoobot.model.network import ModelConfig
    from zoobot.workflows.pipeline import PipelineConfig
    from zoobot.model.predict import PredictConfig
    from zoobot.tracking.report import ReportConfig
    from zoobot.bench.benchmark import BenchmarkConfig
    from zoobot.data.simulate import SimulateConfig
    from zoobot.model.train import TrainConfig
    from zoobot.model.finetune import FinetuneConfig

    configs = {"simulate": (SimulateConfig,), "convert": (ConvertConfig,), "train": (TrainConfig, ModelConfig), "finetune": (FinetuneConfig,),
               "predict": (PredictConfig,), "evaluate": (EvaluateConfig,), "embed": (EmbedConfig,),
               "main": (PipelineConfig,),
               "al_iteration": (ALConfig, ModelConfig), "active_learning": (CampaignConfig, ModelConfig),
               "report": (ReportConfig,), "benchmark": (BenchmarkConfig,), "download catalog": (DownloadCatalogConfig,), "download images": (DownloadImagesConfig,)}
    assert {name.split()[0] for name in configs} == set(ENTRY_POINTS)
    for name, classes in configs.items():
        entry_point, _, subcommand = name.partition(" ")
        command = _click_command(entry_point)
        command = command.commands[subcommand] if subcommand else command
        options = {p.name: p for p in command.params if isinstance(p, click.Option)}
        fields = [f for cls in classes for f in dataclasses.fields(cls) if f.init]
        assert set(options) == {f.name for f in fields}, name
        for f in fields:
            if f.default is not dataclasses.MISSING:
                assert options[f.name].default == f.default, f.name
            assert options[f.name].help, f"{f.name} has no help text"


def _requirement_names(requirements):
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower(): r.replace(" ", "") for r in requirements}


def test_conda_env_and_pyproject_agree():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _requirement_names(pyproject["dependencies"] + pyproject["optional-dependencies"]["test"])
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_block = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    conda_pip = _requirement_names([r for r in pip_block if not r.startswith("-e")])
    assert conda_pip == declared
    python = next(d for d in conda["dependencies"] if isinstance(d, str) and d.startswith("python"))
    # as versions, not strings: "3.9" >= "3.11" is true as text
    assert Version(python.split("=")[1]) in SpecifierSet(pyproject["requires-python"])


def test_mlflow_is_pinned_below_the_uninstallable_318():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _requirement_names(pyproject["dependencies"])["mlflow"] == "mlflow>=3.17,<3.18"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/run_default.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
