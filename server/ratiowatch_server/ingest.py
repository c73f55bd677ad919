"""The write path: store a batch of steps exactly once and run the alert rules over what is new."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy.orm import Session

from ratiowatch_server.alerts.engine import StepMetrics, evaluate
from ratiowatch_server.alerts.rules import Rule
from ratiowatch_server.schemas import StepBatchIn, StepBatchOut
from ratiowatch_server.store import alerts as alert_store
from ratiowatch_server.store import runs as run_store
from ratiowatch_server.store import steps as step_store


def ingest_steps(
    session: Session, run_id: str, batch: StepBatchIn, rules: Sequence[Rule]
) -> StepBatchOut:
    """Store the batch's new steps, update the run, and return the alerts this batch opened."""
    now = time.time()
    run = run_store.get_run(session, run_id)
    new_steps = step_store.insert_new_steps(session, run_id, batch.steps)
    if batch.client_losses:
        run.client_losses = {**run.client_losses, **batch.client_losses}
    opened = []
    if new_steps:
        run.step_count += len(new_steps)
        run.last_step = max(run.last_step or 0, new_steps[-1].step)
        run.updated_at = now
        history = step_store.recent_values(
            session,
            run_id,
            {rule.metric for rule in rules},
            before_step=new_steps[0].step,
            limit=max(rule.history_needed for rule in rules) if rules else 0,
        )
        open_alerts = alert_store.open_alerts(session, run_id)
        evaluation = evaluate(
            rules,
            history,
            [StepMetrics(s.step, s.metrics) for s in new_steps],
            {rule: alert.last_step for rule, alert in open_alerts.items()},
            alert_store.detector_states(session, run_id),
        )
        alert_store.save_detector_states(session, run_id, evaluation.states)
        opened = alert_store.apply_events(session, run_id, run.project, evaluation.events, now)
    session.flush()
    return StepBatchOut(
        accepted=len(new_steps),
        duplicate=len(batch.steps) - len(new_steps),
        alerts=[alert_store.to_out(alert) for alert in opened],
    )
