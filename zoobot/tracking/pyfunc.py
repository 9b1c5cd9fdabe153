"""The registered model: what `mlflow.pyfunc.load_model`, `mlflow models serve` and Spark call.

Models logged now carry `served_model.py` as their code (MLflow's models-from-code), which makes a
ZoobotPyfunc; nothing is pickled. Models logged before that hold a pickled ZoobotPyfunc, named by
reference as "<its __module__>.ZoobotPyfunc" for as long as they live in a registry. So the class
says it belongs to `zoobot.tracking`, the package's public face, rather than to this file: modules
inside the package can move again without breaking them. Older still are models naming
`zoobot.tracking.mlflow_io.ZoobotPyfunc`; both names must keep importing.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

PUBLIC_MODULE = "zoobot.tracking"
SAMPLES, FRACTIONS = "samples", "fractions"
OUTPUTS = (SAMPLES, FRACTIONS)  # what a call can ask for with params={"output": ...}
DEFAULT_INTERVAL = 0.9
MODEL_CODE = Path(__file__).with_name("served_model.py")  # logged as the model's code (models-from-code)
logger = logging.getLogger("zoobot.served")
# MLflow's advice that does not apply here. Its messages start with an ANSI colour code, hence ".*".
INPUT_EXAMPLE_ADVICE = ".*An input example was not provided"  # one would make MLflow run the model to log it


@contextlib.contextmanager
def without_warnings(*patterns: str):
    """The block's warnings are shown as usual, less those whose message matches one of `patterns`.

    A plain warnings.filterwarnings does not do for the type-hint advice: MLflow raises it inside
    its own catch_warnings with a "once" filter put in front of the caller's. So warnings are
    caught as they are shown, and only the others are passed on.
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        for warning in caught:
            if not any(re.match(pattern, str(warning.message)) for pattern in patterns):
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno,
                                     warning.file, warning.line)


class ZoobotPyfunc(mlflow.pyfunc.PythonModel):
    """The registered model: images (B, H, W, C), pixel values 0..255 -> MC-dropout samples.

    Call parameters (`params=`, or "params" in a served request):
    - n_samples: MC-dropout samples T (default 5);
    - output: "samples" (default) gives the Dirichlet concentrations, or the binomial p, as an
      array (B, n_outputs, T); "fractions" gives a table, one row per galaxy in input order, with
      each answer's posterior-mean vote fraction and credible interval (`<answer>_mean`, `_low`,
      `_high`, as `zoobot predict`'s summary.csv) and a `warning` column;
    - interval: the credible interval's mass for "fractions" (default 0.9).
    Images whose values all lie in [0, 1] were almost certainly scaled for another network: the
    model says so in the log and, for "fractions", in each row's `warning`.
    """

    __module__ = PUBLIC_MODULE

    def load_context(self, context):
        from zoobot.model.network import BUNDLE_KERAS, load_bundle
        from zoobot.model.sampling import split_trunk_head

        self.model, self.meta = load_bundle(Path(context.artifacts["bundle"]) / BUNDLE_KERAS)
        self.trunk_head = split_trunk_head(self.model)

    # np.ndarray is a hint MLflow accepts without inferring a signature: log_model gives the signature.
    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> Any:
        from zoobot.model.sampling import mc_predict

        params = params or {}
        output = str(params.get("output", SAMPLES))
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {list(OUTPUTS)}; found {output!r}. Ask for "
                             f'params={{"output": "fractions"}} for a table of vote fractions.')
        interval = check_interval(float(params.get("interval", DEFAULT_INTERVAL)))  # before any sampling
        if isinstance(model_input, dict):  # a named tensor input arrives as {"images": array}
            model_input = model_input["images"]
        images = np.asarray(model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input,
                            dtype=np.float32)
        warning = scale_warning(images)
        if warning:
            logger.warning(warning)
        samples = mc_predict(self.model, images, int(params.get("n_samples", 5)),
                             trunk_head=self.trunk_head).astype(np.float32)
        if output == SAMPLES:
            return samples
        return fractions_table(self.meta, samples, interval, warning)


def scale_warning(images: np.ndarray) -> str:
    """A warning when every pixel lies in [0, 1] (the model was trained on 0..255), else ""."""
    if images.size == 0 or images.min() < 0 or images.max() > 1:
        return ""
    return (f"every pixel of these {len(images)} images lies in [0, 1], but the model takes values 0..255 "
            "(as convert stores them): multiply by 255 before scoring, or the predictions are meaningless")


def check_interval(interval: float) -> float:
    if not 0 < interval < 1:
        raise ValueError(f"interval must be between 0 and 1 (the credible interval's mass); found {interval}.")
    return interval


def fractions_table(meta, samples: np.ndarray, interval: float, warning: str = ""):
    """One row per galaxy: each answer's posterior-mean vote fraction and credible interval, named
    after the schema's answer columns, and the input warning."""
    import pandas as pd

    from zoobot.model.predict import summarise

    check_interval(interval)
    columns = summarise(meta.predictions(np.arange(len(samples)), samples), interval)
    del columns["id_str"]  # a served request has no ids: rows follow the input's order
    table = pd.DataFrame(columns)
    table["warning"] = warning
    return table
