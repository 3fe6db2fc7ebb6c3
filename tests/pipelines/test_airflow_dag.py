"""docs/scheduling/airflow_dag.py (Airflow is not a dependency: the file is read as source):
one task per step of the chain, the current operator import with a fallback, a config that
exists, and no retry of the exit codes that mean "stopped on purpose"."""

import ast
from pathlib import Path

from contracts.errors import EXIT_GATE, EXIT_PROMOTION_REFUSED, EXIT_ROLLOVER_REFUSED
from pipelines.steps import STEPS

DAG = Path(__file__).resolve().parents[2] / "docs" / "scheduling" / "airflow_dag.py"


def _assigned(tree: ast.Module, name: str):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return node.value
    raise AssertionError(f"{name} is not assigned in {DAG}")


def test_dag_runs_every_step_in_order():
    tree = ast.parse(DAG.read_text())
    assert ast.literal_eval(_assigned(tree, "STEPS")) == list(STEPS)


def test_dag_uses_the_current_operator_import_with_a_fallback():
    text = DAG.read_text()
    assert "from airflow.providers.standard.operators." in text and "except ImportError:" in text
    assert text.index("airflow.providers.standard") < text.index("except ImportError:")


def test_dag_points_at_an_existing_config():
    tree = ast.parse(DAG.read_text())
    default = _assigned(tree, "CONFIG")
    # os.environ.get("LFM4ADS_CONFIG", str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"))
    consts = [n for n in ast.walk(default) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    parts = [n.value for n in sorted(consts, key=lambda n: (n.lineno, n.col_offset))]
    assert parts[0] == "LFM4ADS_CONFIG"
    assert (DAG.parents[2] / Path(*parts[1:])).is_file(), parts


def test_dag_does_not_retry_stopped_on_purpose():
    tree = ast.parse(DAG.read_text())
    codes = ast.literal_eval(_assigned(tree, "NO_RETRY_EXIT_CODES"))
    assert set(codes) == {EXIT_GATE, EXIT_ROLLOVER_REFUSED, EXIT_PROMOTION_REFUSED}
    assert "AirflowFailException" in DAG.read_text()  # fails the task without its retries
