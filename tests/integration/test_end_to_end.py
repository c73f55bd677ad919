"""The whole path: a real training loop -> client -> real server -> SQLite -> query -> alert."""

from __future__ import annotations

from pathlib import Path

import httpx

import ratiowatch
from ratiowatch_server.demo import DemoConfig, train
from tests.support import LiveServer


def test_demo_training_loop_streams_and_alerts_where_it_goes_unstable(
    live_server: LiveServer, tmp_path: Path
) -> None:
    config = DemoConfig(steps=160, unstable_at=100, delay=0.0)
    run = ratiowatch.init(project="e2e", name="demo-loop", url=live_server.url, home=tmp_path)
    received: list[dict[str, object]] = []
    run.on_alert(received.append)
    train(run, config)
    run.close()

    api = httpx.Client(base_url=live_server.url + "/api/v1", timeout=10)
    stored = api.get(f"/runs/{run.id}").json()
    assert (stored["step_count"], stored["last_step"]) == (config.steps, config.steps - 1)
    keys = set(api.get(f"/runs/{run.id}/metrics").json())
    assert {"ppo/p99", "ppo/ess", "mismatch/kl_k3", "grad/norm", "train/reward"} <= keys

    full = api.get(f"/runs/{run.id}/series", params={"keys": "mismatch/p99"}).json()["series"][0]
    assert full["steps"] == list(range(config.steps))
    small = api.get(f"/runs/{run.id}/series", params={"keys": "mismatch/p99", "points": 20}).json()[
        "series"
    ][0]
    assert len(small["steps"]) <= 20 and max(small["values"]) == max(full["values"])

    pairs = zip(full["steps"], full["values"], strict=True)
    healthy = [value for step, value in pairs if step < config.unstable_at]
    assert max(healthy) < 1.2, "the mismatch ratio stays near 1 while the engine is fresh"

    alerts = api.get("/alerts", params={"run_id": run.id}).json()
    assert alerts, "the stale behaviour policy must raise an alert"
    assert all(a["step"] >= config.unstable_at for a in alerts), alerts
    first = min(alerts, key=lambda a: a["step"])
    assert first["rule"] == "kl_drift_cusum:mismatch"
    assert first["step"] <= config.unstable_at + 5, "the drift is caught where it begins"
    assert {"ratio_blowup:mismatch", "kl_drift:mismatch"} <= {a["rule"] for a in alerts}
    assert {a["id"] for a in received} == {a["id"] for a in alerts}
