"""The registered model: what `mlflow.pyfunc.load_model`, `mlflow models serve` and Spark call.

MLflow pickles the python_model by reference, as "<its __module__>.ZoobotPyfunc", and every
registered model keeps that name for as long as it lives in a registry. So the class says it
belongs to `zoobot.tracking`, the package's public face, rather than to this file: modules inside
the package can move again without breaking a model already registered. Models logged before
this split name `zoobot.tracking.ZoobotPyfunc` (the flat package) or
`zoobot.tracking.mlflow_io.ZoobotPyfunc`; both must keep importing.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path

import mlflow

PUBLIC_MODULE = "zoobot.tracking"
# MLflow's advice that does not apply here. Its messages start with an ANSI colour code, hence ".*".
TYPE_HINT_ADVICE = ".*Add type hints to the `predict` method"  # the signature is given explicitly instead
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


# MLflow checks predict for type hints when a PythonModel subclass is defined: here, and again wherever
# a logged model is unpickled. Type hints would make MLflow infer a signature of its own.
with without_warnings(TYPE_HINT_ADVICE):

    class ZoobotPyfunc(mlflow.pyfunc.PythonModel):
        """The registered model: images (B, H, W, C), values 0..255 -> MC-dropout samples
        (B, n_outputs, n_samples); `params={"n_samples": T}` sets T (default 5)."""

        __module__ = PUBLIC_MODULE

        def load_context(self, context):
            from zoobot.model.network import BUNDLE_KERAS, load_bundle
            from zoobot.model.sampling import split_trunk_head

            self.model, self.meta = load_bundle(Path(context.artifacts["bundle"]) / BUNDLE_KERAS)
            self.trunk_head = split_trunk_head(self.model)

        def predict(self, context, model_input, params=None):
            import numpy as np

            from zoobot.model.sampling import mc_predict

            if isinstance(model_input, dict):  # a named tensor input arrives as {"images": array}
                model_input = model_input["images"]
            images = np.asarray(model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input,
                                dtype=np.float32)
            n_samples = int((params or {}).get("n_samples", 5))
            return mc_predict(self.model, images, n_samples, trunk_head=self.trunk_head).astype(np.float32)
