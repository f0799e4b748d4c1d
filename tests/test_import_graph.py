"""scripts/import_graph.py: the package's imports follow the data path, with no arrow upward."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "import_graph.py"


def load_script():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_package_imports_point_down():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "no import points to a later stage" in done.stdout
    assert "training.selection [training]" in done.stdout


def test_upward_and_forbidden_imports_are_listed(tmp_path):
    graph = load_script()
    package = tmp_path / "hear_contrastune"
    for folder in ("data", "probes", "training"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("")
    (package / "probes" / "knn.py").write_text("from hear_contrastune.errors import UserError\n")
    (package / "data" / "views.py").write_text(
        "def late():\n    from hear_contrastune.probes.knn import probe_task\n")
    (package / "training" / "loop.py").write_text(
        "from ..probes import knn\nimport eval_tasks\nfrom hear_contrastune.data import views\n")
    (package / "mystery.py").write_text("")
    edges, problems = graph.graph(tmp_path)
    assert edges["hear_contrastune.training.loop"] == {
        "hear_contrastune.probes.knn", "eval_tasks", "hear_contrastune.data.views"}
    assert sorted(problems) == [
        "hear_contrastune.data.views [data] imports hear_contrastune.probes.knn [probes]: "
        "a later stage",
        "hear_contrastune.mystery: no stage (add it to STAGES)",
        "hear_contrastune.training.loop [training] imports hear_contrastune.probes.knn "
        "[probes]: a later stage",
        "hear_contrastune.training.loop imports eval_tasks: the package may not import it",
    ]
