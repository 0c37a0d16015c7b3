"""What the scheduler pays to parse Loopline's DAG files, again and again.

1. Each DAG file imported in a fresh interpreter on top of a warm ``import airflow``, the Task SDK and the
   DagBag module (with the ORM models it imports: what a dag-processor has loaded before it parses a
   file): the file's own cost, median of --repeats processes (target < 0.25 s each).
2. The whole ``dags/`` folder through a DagBag in a fresh interpreter (target < 2 s), beside the baseline of
   an empty DagBag (Airflow's own fixed cost) in the same kind of process.

    .venv/bin/python benchmarks/bench_dag_parse.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from record import recording

DAGS = Path(__file__).resolve().parents[1] / "dags"

ONE_FILE = """
import json, sys, time, runpy
import airflow, airflow.sdk  # warm: what every parse process has already paid,
import airflow.dag_processing.dagbag  # including the DagBag and the ORM models it imports
started = time.perf_counter()
runpy.run_path(sys.argv[1], run_name="dag_file")
print(json.dumps({"seconds": time.perf_counter() - started}))
"""

BAG = """
import json, sys, time
started = time.perf_counter()
import airflow, airflow.sdk
from airflow.dag_processing.dagbag import DagBag
airflow_s = time.perf_counter() - started
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "airflow": airflow_s, "dags": len(bag.dags), "errors": len(bag.import_errors)}))
"""


def run(script: str, arg: str, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", script, arg], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="loopline-bench-parse-")
    env = {**os.environ, "AIRFLOW_HOME": home, "LOOPLINE_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    for path in sorted(DAGS.glob("*.py")):
        times = [run(ONE_FILE, str(path), env)["seconds"] for _ in range(args.repeats)]
        print(
            f"[file] {path.name:>22}: median {statistics.median(times):.3f} s over {args.repeats} processes "
            f"(max {max(times):.3f} s; target < 0.25 s on a warm `import airflow`)"
        )
    bags = [run(BAG, str(DAGS), env) for _ in range(args.repeats)]
    baseline = statistics.median(bag["airflow"] for bag in bags)
    seconds = statistics.median(bag["seconds"] for bag in bags)
    print(
        f"[dagbag] {bags[0]['dags']} DAGs, {bags[0]['errors']} import errors: median {seconds:.3f} s "
        f"(target < 2 s); baseline: importing Airflow and the DagBag in the same processes {baseline:.3f} s; "
        f"ratio {seconds / baseline:.2f}"
    )


if __name__ == "__main__":
    with recording(
        "dag_parse", note="each DAG file on top of a warm import airflow, and the whole folder through a DagBag"
    ):
        main()
