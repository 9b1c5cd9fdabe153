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
from zoobot.cli.options import EXPERIMENT_KEY

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
    # --experiment is the command line's; under `mlflow run` the experiment is mlflow run's --experiment-name
    return {p.name: p for p in commands[0].params if p.name in shared and p.name != EXPERIMENT_KEY}


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


def test_every_command_that_logs_runs_takes_an_experiment_by_name():
    for name in cli.main.list_commands(None):
        command = cli.main.get_command(None, name)
        commands = list(command.commands.values()) if isinstance(command, click.Group) else [command]
        for c in commands:
            names = {opt for p in c.params for opt in p.opts}
            assert "--experiment" in names, f"zoobot {name} {c.name} has no --experiment"


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
        options = {p.name: p for p in command.params if isinstance(p, click.Option) and p.name != EXPERIMENT_KEY}
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


# -- the docs name options that exist -------------------------------------------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _shell_commands(path: Path):
    """Every command line of the ```bash blocks of a Markdown file, continuation lines joined, as words."""
    text = path.read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            if words:
                yield words


def _option_names(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in p.opts}


def test_every_option_the_docs_use_exists():
    """`mlflow run . -e NAME -P key=...` names a parameter of that entry point, `zoobot NAME --key` an
    option of that command: an example in the docs never names a renamed or removed option."""
    seen = 0
    for path in DOCS:
        for words in _shell_commands(path):
            for start in [i for i, w in enumerate(words) if w == "run" and i and words[i - 1].endswith("mlflow")]:
                rest = words[start + 1:]
                entry = rest[rest.index("-e") + 1] if "-e" in rest else "main"
                declared = MLPROJECT["entry_points"][entry]["parameters"]
                for i, w in enumerate(rest):
                    if w == "-P":
                        key = rest[i + 1].split("=", 1)[0]
                        assert key in declared, f"{path.name}: `mlflow run -e {entry}` has no parameter {key!r}"
                        seen += 1
            for start in [i for i, w in enumerate(words) if w.endswith("zoobot") and not w.startswith("-")]:
                if start + 1 >= len(words) or words[start + 1] not in cli.main.list_commands(None):
                    continue
                command = cli.main.get_command(None, words[start + 1])
                end = start + 2
                if isinstance(command, click.Group):
                    command, end = command.commands[words[start + 2]], start + 3
                names = _option_names(command)
                for w in words[end:]:
                    if w in ("|", "&&", ";"):
                        break
                    if w.startswith("--"):
                        assert w.split("=", 1)[0] in names, f"{path.name}: `zoobot {command.name}` has no option {w}"
                        seen += 1
    assert seen > 50


def test_the_docs_name_every_acquisition_function_and_the_defaults_they_state():
    from zoobot.core.acquisition import ACQUISITIONS
    from zoobot.workflows.pipeline import PipelineConfig

    entry_points = (ROOT / "docs" / "entry-points.md").read_text()
    glossary = (ROOT / "docs" / "glossary.md").read_text()
    for name in ACQUISITIONS:
        assert f"`{name}`" in entry_points and f"`{name}`" in glossary, name
    # the `main` pipeline's defaults as its section states them in words
    main = " ".join(entry_points[entry_points.index("## `main`"):entry_points.index("## `download`")].split())
    config = PipelineConfig()
    for words in (f"{config.n_galaxies:,} galaxies of {config.image_size}x{config.image_size}",
                  f"trained for {config.epochs} epochs", f"from {config.labelled_size} labelled galaxies",
                  f"{config.al_iterations} iterations of {config.n_acquire} acquired",
                  f"{config.al_epochs} epochs each", f"`filters={config.filters}`"):
        assert words in main, f"docs/entry-points.md's `main` section should say {words!r}"
