"""The MLflow UI as a user sees it: after `zoobot train` and `zoobot evaluate` against a fresh
`mlflow server`, headless Chromium shows the experiment's runs, a run's metrics and the datasets it
read, the evaluate run's coverage plot rendered from its artifacts, and the registered version's
model card.

Screenshots are kept as test artifacts in $ZOOBOT_TEST_ARTIFACTS (default <repo>/test-artifacts/ui/).
"""

import os
import re
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, TINY_MODEL, VENV_BIN, start_mlflow_server, stop_process_group

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
                 "--disable-extensions", "--no-first-run"]
EXPERIMENT = "ui-browser"
MODEL_NAME = "ui-galaxies"
TIMEOUT_MS = 60_000  # a loaded CI machine renders the first page slowly
# The assistant side panel opens itself on a first visit and takes a third of the screenshots.
NO_ASSISTANT_PANEL = ("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                      "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');")


def screenshot_dir() -> Path:
    folder = Path(os.environ.get("ZOOBOT_TEST_ARTIFACTS") or ROOT / "test-artifacts" / "ui")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def zoobot(args: list[str], tracking_uri: str, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_EXPERIMENT_NAME=EXPERIMENT)
    result = subprocess.run([str(VENV_BIN / "zoobot"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"zoobot {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def pipeline_server(tiny_shards, tmp_path_factory):
    """A fresh `mlflow server` holding one train run (1 epoch, tiny model, registered as champion)
    and one evaluate run of that champion, with its coverage plots."""
    root = tmp_path_factory.mktemp("ui_server")
    server, uri = start_mlflow_server(root)
    try:
        zoobot(["train", "--shards", str(tiny_shards), "--epochs", "1", "--batch_size", "8",
                "--checkpoint_dir", str(root / "ckpt"), "--registered_model_name", MODEL_NAME,
                "--filters", TINY_MODEL["filters"], "--dense_units", str(TINY_MODEL["dense_units"])], uri, root)
        zoobot(["evaluate", "--model", f"models:/{MODEL_NAME}@champion", "--shards", str(tiny_shards),
                "--n_samples", "5"], uri, root)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        runs = {run.data.tags["step"]: run for run in client.search_runs([experiment.experiment_id])}
        assert set(runs) == {"train", "evaluate"}, set(runs)
        assert "coverage_votes.png" in {a.path for a in client.list_artifacts(runs["evaluate"].info.run_id)}
        yield uri, experiment.experiment_id, runs
    finally:
        stop_process_group(server)


@pytest.fixture
def page():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: run `bash scripts/system_deps.sh` to install Chromium.")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' for Playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        sync_api.expect.set_options(timeout=TIMEOUT_MS)
        context.add_init_script(NO_ASSISTANT_PANEL)
        page = context.new_page()
        try:
            yield page
        finally:
            browser.close()


def shoot(page, name: str, shots: list[Path]) -> None:
    path = screenshot_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    shots.append(path)
    print(f"screenshot: {path}")


def metric_shown(page, key: str) -> float:
    """The value the run page's metrics table shows for `key`, found as a user would: by searching."""
    from playwright.sync_api import expect

    page.get_by_placeholder("Search metrics").fill(key)
    cell = page.get_by_text(key, exact=True).first
    expect(cell).to_be_visible()
    row = page.get_by_role("row").filter(has=page.get_by_text(key, exact=True)).first
    numbers = re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", row.inner_text().replace(key, ""))
    assert numbers, f"no value beside metric {key}: {row.inner_text()!r}"
    return float(numbers[0])


def test_ui_shows_runs_metrics_and_coverage_plot(pipeline_server, page, tmp_path, record_property):
    from playwright.sync_api import expect

    uri, experiment_id, runs = pipeline_server
    train, evaluate = runs["train"], runs["evaluate"]
    shots: list[Path] = []
    try:
        # The UI opens in GenAI mode; runs, metrics and artifacts live under "Model training".
        page.goto(f"{uri}/", wait_until="load")
        toggle = page.get_by_text("Model training", exact=True)
        toggle.wait_for()
        toggle.click()
        shoot(page, "01_home_model_training", shots)

        page.goto(f"{uri}/#/experiments/{experiment_id}", wait_until="load")
        for run in (train, evaluate):
            expect(page.get_by_text(run.info.run_name, exact=True).first).to_be_visible()
        shoot(page, "02_experiment_runs", shots)

        page.goto(f"{uri}/#/experiments/{experiment_id}/runs/{train.info.run_id}", wait_until="load")
        expect(page.get_by_text(train.info.run_name, exact=True).first).to_be_visible()
        assert metric_shown(page, "best_val_loss") == pytest.approx(train.data.metrics["best_val_loss"], rel=1e-6)
        shoot(page, "03_train_run_metrics", shots)
        # the datasets it trained and validated on, by the names and digests convert gave them
        datasets = {d.dataset.name: d.dataset.digest for d in train.inputs.dataset_inputs}
        assert set(datasets) == {"catalog/train", "catalog/validation"}, datasets
        page.get_by_placeholder("Search metrics").fill("")
        expect(page.get_by_role("heading", name="Datasets")).to_be_visible()
        train_set = page.get_by_role("button", name=f"catalog/train ({datasets['catalog/train']})")
        expect(train_set).to_be_visible()
        expect(train_set.get_by_text("training")).to_be_visible()
        shoot(page, "03b_train_run_datasets", shots)
        page.get_by_text("+1", exact=True).click()  # the run's other datasets, behind "+1"
        expect(page.get_by_text(f"catalog/validation ({datasets['catalog/validation']})").first).to_be_visible()
        shoot(page, "03c_train_run_all_datasets", shots)

        page.goto(f"{uri}/#/experiments/{experiment_id}/runs/{evaluate.info.run_id}", wait_until="load")
        expect(page.get_by_text(evaluate.info.run_name, exact=True).first).to_be_visible()
        assert metric_shown(page, "test_rmse") == pytest.approx(evaluate.data.metrics["test_rmse"], rel=1e-6)
        shoot(page, "04_evaluate_run_metrics", shots)

        page.get_by_role("tab", name="Artifacts").click()
        page.get_by_text("coverage_votes.png", exact=True).first.click()
        image = page.locator('img[alt="coverage_votes.png"]').first
        image.wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                               timeout=TIMEOUT_MS)
        width = image.evaluate("img => img.naturalWidth")
        shoot(page, "05_coverage_votes_artifact", shots)

        # the champion's page shows its model card, with the evaluation evaluate added
        version = MlflowClient(uri).get_model_version_by_alias(MODEL_NAME, "champion").version
        page.goto(f"{uri}/#/models/{MODEL_NAME}/versions/{version}", wait_until="load")
        expect(page.get_by_text("Not evaluated yet")).to_have_count(0)
        expect(page.get_by_text("vote-fraction RMSE", exact=False).first).to_be_visible()
        expect(page.get_by_text(evaluate.info.run_id, exact=False).first).to_be_visible()
        expect(page.get_by_text("Dirichlet-multinomial model", exact=False).first).to_be_visible()
        shoot(page, "06_registered_version_card", shots)
        # the card links to the evaluate run (the UI opens Markdown links in a new tab: follow the href here)
        href = page.get_by_role("link", name=evaluate.info.run_id).first.get_attribute("href")
        assert href == f"#/experiments/{experiment_id}/runs/{evaluate.info.run_id}", href
        page.goto(f"{uri}/{href}", wait_until="load")
        assert metric_shown(page, "test_rmse") == pytest.approx(evaluate.data.metrics["test_rmse"], rel=1e-6)
    except Exception:
        shoot(page, "99_failure", shots)
        raise
    finally:
        record_property("screenshots", [str(path) for path in shots])  # in --junitxml reports

    # the browser shows the logged PNG itself, at its own size
    from PIL import Image

    logged = MlflowClient(uri).download_artifacts(evaluate.info.run_id, "coverage_votes.png", str(tmp_path))
    assert width == Image.open(logged).width
    assert all(path.stat().st_size > 10_000 for path in shots)
