"""Kept only so that models registered before issue 12 still load: their python_model was pickled
by reference as `zoobot.tracking.mlflow_io.ZoobotPyfunc`, a name that stays in a registry for as
long as the model does. The code that lived here is now in the modules beside it; import from
`zoobot.tracking`."""

from zoobot.tracking.pyfunc import ZoobotPyfunc

__all__ = ["ZoobotPyfunc"]
