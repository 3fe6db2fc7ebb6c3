"""Example Airflow DAG for the lfm4ads daily job (not imported by the project; its tests
read it as text: tests/pipelines/test_airflow_dag.py).

One task per step of the chain (``pipelines.steps.STEPS``, rollover included), so a failed
step is retried alone and the Airflow grid shows where a day stopped. Each task is
``lfm4ads stage <step> --ds {{ ds }} --wait``: the run ledger makes a finished step a
no-op, so retries and re-runs are safe, and the root lock keeps two runs of one root from
writing at once (``--wait`` queues instead of exiting 4).

Exit codes that mean "stopped on purpose" fail the task WITHOUT a retry: 3 (a quality gate
stopped the day before publishing), 6 (the rollover gate refused an alignment), 7 (a new
index version was kept but not promoted). A retry would only repeat the same verdict; a
person looks at the day's report. Other failures (1, 5 a bad input file that may be
re-delivered, 4 a held lock, 130/143 an interrupted run) are retried.

Set ``LFM4ADS_CONFIG`` (and ``LFM4ADS_BIN`` if ``lfm4ads`` is not on the worker's PATH) in
the worker's environment; without it the DAG uses this repository's configs/demo.yaml.
"""

import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

from airflow import DAG
from airflow.exceptions import AirflowException, AirflowFailException

try:  # Airflow 3 (apache-airflow-providers-standard)
    from airflow.providers.standard.operators.python import PythonOperator
except ImportError:  # Airflow 2
    from airflow.operators.python import PythonOperator

CONFIG = os.environ.get("LFM4ADS_CONFIG", str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"))
LFM4ADS = os.environ.get("LFM4ADS_BIN", "lfm4ads")
STEPS = ["ingest", "pretrain", "extract", "rollover", "downstream", "retrieval", "report"]
NO_RETRY_EXIT_CODES = {3: "a quality gate stopped the day", 6: "the rollover gate refused",
                       7: "the new index version was not promoted"}


def run_step(step: str, ds: str) -> None:
    """``lfm4ads stage <step>``; an exit code in NO_RETRY_EXIT_CODES fails the task for good."""
    cmd = [LFM4ADS, "stage", step, "--config", CONFIG, "--ds", ds, "--wait", "--log-format", "json"]
    rc = subprocess.run(cmd, check=False).returncode
    if rc in NO_RETRY_EXIT_CODES:
        raise AirflowFailException(f"{' '.join(cmd)} exited {rc}: {NO_RETRY_EXIT_CODES[rc]} (not retried; see the report)")
    if rc != 0:
        raise AirflowException(f"{' '.join(cmd)} exited {rc}")


with DAG(
    dag_id="lfm4ads_daily",
    start_date=datetime(2026, 1, 1),
    schedule="0 3 * * *",  # after the day's logs land
    catchup=True,  # backfills run days in order (max_active_runs=1)
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
) as dag:
    previous = None
    for step in STEPS:
        task = PythonOperator(task_id=step, python_callable=run_step, op_kwargs={"step": step, "ds": "{{ ds }}"})
        if previous is not None:
            previous >> task
        previous = task
