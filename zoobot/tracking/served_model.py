"""The registered model's code, logged with MLflow's models-from-code: `log_model` passes this file's
path as `python_model`, MLflow copies it into the model and runs it when the model loads, and
`set_model` says which object serves. Nothing is pickled, so nothing needs unpickling trust.

Only MLflow runs this file; importing it elsewhere would only re-declare the served model."""

from mlflow.models import set_model

from zoobot.tracking.pyfunc import ZoobotPyfunc

set_model(ZoobotPyfunc())
