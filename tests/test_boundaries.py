"""The framework-free boundary: the decision tree, vote checks, predictions, coverage, metrics,
acquisition and the campaign's bookkeeping import neither TensorFlow, Keras nor MLflow, so their tests
run in a second and they can be used without either installed. One test for all of it: every module
of `zoobot.core` (found by walking the package, so a new one is covered too) and the named
framework-free modules elsewhere, imported in a process where those frameworks cannot be imported."""

import ast
import subprocess
import sys
from pathlib import Path

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


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """zoobot modules `module` imports anywhere in its file (lazy imports too), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("zoobot")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zoobot"):
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names}
    return {m for m in found if m in known and m != module}


def test_the_package_import_graph_has_no_cycle():
    """Packages' own __init__ re-exports (a face over their modules) are left out: a module importing
    its sibling through the face is still a one-way arrow."""
    root = Path(__file__).resolve().parents[1]
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (root / "zoobot").rglob("*.py")}
    graph = {m: _imports(p, m, set(files)) for m, p in files.items() if not p.name == "__init__.py"}
    graph = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert len(graph) > 60 and cycles == []
