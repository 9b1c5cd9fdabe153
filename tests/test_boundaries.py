"""The framework-free boundary: the decision tree, vote checks, predictions, coverage, metrics,
acquisition and the campaign's bookkeeping import neither TensorFlow, Keras nor MLflow, so their tests
run in a second and they can be used without either installed. One test for all of it: every module
of `zoobot.core` (found by walking the package, so a new one is covered too) and the named
framework-free modules elsewhere, imported in a process where those frameworks cannot be imported."""

import subprocess
import sys

FRAMEWORK_FREE_ELSEWHERE = ["zoobot.data.catalog", "zoobot.data.manifest", "zoobot.data.images",
                            "zoobot.data.simulate", "zoobot.active.loop", "zoobot.active.pool",
                            "zoobot.active.oracle", "zoobot.workflows.pipeline"]

IMPORT_WITHOUT_FRAMEWORKS = """
import importlib, pkgutil, sys

class NoFrameworks:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "mlflow", "tf_keras"):
            raise ImportError(f"{name} is made unimportable by this test")
        return None

sys.meta_path.insert(0, NoFrameworks())
import zoobot.core
modules = [m.name for m in pkgutil.walk_packages(zoobot.core.__path__, "zoobot.core.")] + sys.argv[1:]
for name in modules:
    importlib.import_module(name)
print(len(modules))
"""


def test_core_and_the_bookkeeping_import_without_tensorflow_keras_or_mlflow():
    result = subprocess.run([sys.executable, "-c", IMPORT_WITHOUT_FRAMEWORKS, *FRAMEWORK_FREE_ELSEWHERE],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.strip()) >= 8 + len(FRAMEWORK_FREE_ELSEWHERE)
