"""Example Airflow DAG for the lfm4ads daily job (not imported by the project or its tests).

One task per step, so a failed step is retried alone and the Airflow grid shows where
a day stopped. Each task is `lfm4ads stage <step> --ds {{ ds }}`: the run ledger makes a
finished step a no-op, so retries and re-runs are safe, and the root lock keeps two
runs of one root from writing at once (exit code 4; `--wait` queues instead).
Exit code 3 means a quality gate stopped the day before publishing.
"""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

CONFIG = "/opt/lfm4ads/configs/prod.yaml"
STEPS = ["ingest", "pretrain", "extract", "downstream", "retrieval", "report"]

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
        task = BashOperator(
            task_id=step,
            bash_command=f"lfm4ads stage {step} --config {CONFIG} --ds {{{{ ds }}}} --wait",
        )
        if previous is not None:
            previous >> task
        previous = task
