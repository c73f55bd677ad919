"""Prometheus text exposition of each run's latest values and open alerts.

Lets a team put ratiowatch beside their other dashboards and route alerts through Alertmanager.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ratiowatch_server.schemas import RunOut


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return "NaN" if math.isnan(value) else repr(float(value))


def exposition(runs: Iterable[RunOut], latest: Iterable[tuple[str, str, float | None]]) -> str:
    """The ``/metrics`` page: one gauge family per metric key, labelled by project and run."""
    runs_by_id = {run.id: run for run in runs}
    lines = [
        "# HELP ratiowatch_run_last_step Last step stored for the run.",
        "# TYPE ratiowatch_run_last_step gauge",
    ]
    for run in runs_by_id.values():
        labels = f'project="{_label(run.project)}",run="{_label(run.id)}",name="{_label(run.name)}"'
        lines.append(f"ratiowatch_run_last_step{{{labels}}} {run.last_step or 0}")
    lines += [
        "# HELP ratiowatch_open_alerts Alerts currently firing for the run.",
        "# TYPE ratiowatch_open_alerts gauge",
    ]
    for run in runs_by_id.values():
        labels = f'project="{_label(run.project)}",run="{_label(run.id)}"'
        lines.append(f"ratiowatch_open_alerts{{{labels}}} {run.open_alerts}")
    lines += [
        "# HELP ratiowatch_metric Latest value of each metric key (family/stat) of the run.",
        "# TYPE ratiowatch_metric gauge",
    ]
    for run_id, key, value in latest:
        run = runs_by_id.get(run_id)
        if run is None or value is None:
            continue
        labels = f'project="{_label(run.project)}",run="{_label(run_id)}",key="{_label(key)}"'
        lines.append(f"ratiowatch_metric{{{labels}}} {_number(value)}")
    return "\n".join(lines) + "\n"
