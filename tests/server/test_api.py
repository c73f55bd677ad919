"""The HTTP API over a real uvicorn server and a real SQLite file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import numpy as np

from ratiowatch.sketch import RatioSketch
from tests.support import LiveServer


def _steps(start: int, stop: int, **extra: float) -> list[dict[str, object]]:
    return [
        {
            "step": s,
            "time": 1000.0 + s,
            "metrics": {"ppo/p50": 1.0, "grad/norm": 1.0 + s % 3, **extra},
        }
        for s in range(start, stop)
    ]


def _create(api: httpx.Client, run_id: str = "run-1", project: str = "proj") -> None:
    answer = api.put(
        f"/runs/{run_id}", json={"project": project, "name": "first", "config": {"lr": 1e-6}}
    )
    assert answer.status_code == 200, answer.text


def test_run_upsert_is_idempotent_and_listed(api: httpx.Client) -> None:
    _create(api)
    _create(api)
    run = api.get("/runs/run-1").json()
    assert (run["project"], run["name"], run["config"]) == ("proj", "first", {"lr": 1e-6})
    assert [r["id"] for r in api.get("/runs", params={"project": "proj"}).json()] == ["run-1"]
    assert api.get("/runs", params={"project": "other"}).json() == []
    assert api.get("/projects").json()[0]["name"] == "proj"


def test_resent_steps_are_stored_once(api: httpx.Client) -> None:
    _create(api)
    first = api.post("/runs/run-1/steps", json={"steps": _steps(0, 10)}).json()
    again = api.post("/runs/run-1/steps", json={"steps": _steps(5, 15)}).json()
    assert (first["accepted"], first["duplicate"]) == (10, 0)
    assert (again["accepted"], again["duplicate"]) == (5, 5)
    run = api.get("/runs/run-1").json()
    assert (run["step_count"], run["last_step"]) == (15, 14)
    series = api.get("/runs/run-1/series", params={"keys": "grad/norm"}).json()["series"][0]
    assert series["steps"] == list(range(15))
    assert api.get("/runs/run-1/metrics").json() == ["grad/norm", "ppo/p50"]


def test_gzip_body_is_decoded(api: httpx.Client) -> None:
    _create(api)
    body = gzip.compress(json.dumps({"steps": _steps(0, 3)}).encode())
    answer = api.post(
        "/runs/run-1/steps",
        content=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert answer.json()["accepted"] == 3


def test_nonfinite_metrics_are_stored_as_null(api: httpx.Client) -> None:
    _create(api)
    body = '{"steps": [{"step": 0, "time": 1.0, "metrics": {"grad/norm": NaN, "x/y": Infinity}}]}'
    answer = api.post(
        "/runs/run-1/steps", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["alerts"][0]["rule"] == "grad_nonfinite"


def test_series_downsampling_keeps_a_one_step_spike(api: httpx.Client) -> None:
    _create(api)
    rng = np.random.default_rng(0)
    values = 1.0 + 0.1 * rng.random(20_000)
    values[12_345] = 500.0
    steps = [
        {"step": i, "time": float(i), "metrics": {"grad/norm": float(v)}}
        for i, v in enumerate(values)
    ]
    for chunk in range(0, len(steps), 5000):
        assert (
            api.post("/runs/run-1/steps", json={"steps": steps[chunk : chunk + 5000]}).status_code
            == 200
        )
    series = api.get("/runs/run-1/series", params={"keys": "grad/norm", "points": 500}).json()[
        "series"
    ][0]
    assert series["total_points"] == 20_000
    assert len(series["steps"]) <= 500
    assert max(series["values"]) == 500.0 and 12_345 in series["steps"]
    window = api.get(
        "/runs/run-1/series", params={"keys": "grad/norm", "start": 100, "end": 199}
    ).json()["series"][0]
    assert window["steps"] == list(range(100, 200))


def test_distribution_merges_step_sketches(api: httpx.Client) -> None:
    _create(api)
    rng = np.random.default_rng(1)
    chunks = [rng.normal(0, 0.3, 1000) for _ in range(4)]
    steps = []
    for i, x in enumerate(chunks):
        sketch = RatioSketch()
        sketch.add_logratios(x)
        steps.append({"step": i, "time": 0.0, "metrics": {}, "sketches": {"ppo": sketch.to_wire()}})
    api.post("/runs/run-1/steps", json={"steps": steps}).raise_for_status()
    answer = api.get(
        "/runs/run-1/distribution", params={"family": "ppo", "start": 1, "end": 3}
    ).json()
    assert (answer["steps"], answer["count"]) == (3, 3000)
    exact = float(np.quantile(np.exp(np.concatenate(chunks[1:])), 0.5))
    assert abs(answer["quantiles"]["p50"] / exact - 1) <= 0.011


def test_unknown_run_is_404_with_a_message(api: httpx.Client) -> None:
    for answer in (
        api.get("/runs/nope"),
        api.get("/runs/nope/series", params={"keys": "a"}),
        api.post("/runs/nope/steps", json={"steps": _steps(0, 1)}),
    ):
        assert answer.status_code == 404
        assert "nope" in answer.json()["detail"]


def test_bad_requests_are_4xx_naming_the_problem(api: httpx.Client) -> None:
    _create(api)
    cases = [
        api.post(
            "/runs/run-1/steps", content=b"{not json", headers={"Content-Type": "application/json"}
        ),
        api.post("/runs/run-1/steps", json={"steps": [{"step": "abc", "time": 0, "metrics": {}}]}),
        api.post("/runs/run-1/steps", json={"steps": [{"step": -1, "time": 0, "metrics": {}}]}),
        api.post(
            "/runs/run-1/steps", json={"steps": [{"step": 1, "time": 0, "metrics": {"a": "x"}}]}
        ),
        api.post("/runs/run-1/steps", json={"steps": []}),
        api.post("/runs/run-1/steps", json={"steps": _steps(0, 1), "surprise": 1}),
        api.post(
            "/runs/run-1/steps",
            json={
                "steps": [{"step": 1, "time": 0, "metrics": {}, "sketches": {"ppo": {"keys": "x"}}}]
            },
        ),
        api.put("/runs/bad id!", json={"project": "p"}),
        api.put("/runs/run-2", json={"name": "no project"}),
        api.get("/runs/run-1/series", params={"keys": ""}),
        api.get("/runs/run-1/series", params={"keys": "a", "start": 9, "end": 3}),
        api.get("/runs/run-1/distribution", params={"family": "nope"}),
        api.post("/alerts/999/ack"),
        api.post(
            "/runs/run-1/steps",
            content=b"not gzip",
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        ),
    ]
    for answer in cases:
        assert 400 <= answer.status_code < 500, (
            answer.request.url,
            answer.status_code,
            answer.text,
        )
        assert answer.json()["detail"], answer.text
    field_errors = cases[1].json()["detail"]
    assert field_errors[0]["loc"][-1] == "step"


def test_oversized_body_is_413(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from ratiowatch_server.app import create_app
    from ratiowatch_server.settings import ServerSettings

    settings = ServerSettings(
        home=tmp_path, database_url=f"sqlite:///{tmp_path}/db", max_body_bytes=1000
    )
    with TestClient(create_app(settings, dashboard=False)) as client:
        answer = client.post("/api/v1/runs/r/steps", content=b"x" * 5000)
        assert answer.status_code == 413
        bomb = gzip.compress(b" " * 100_000)
        answer = client.post(
            "/api/v1/runs/r/steps", content=bomb, headers={"Content-Encoding": "gzip"}
        )
        assert answer.status_code == 413 and "decoded" in answer.json()["detail"]


def test_unknown_api_path_is_404_not_the_dashboard(live_server: LiveServer) -> None:
    answer = httpx.get(live_server.url + "/api/v1/no/such/thing")
    assert answer.status_code == 404
    dialect = live_server.database_url.split(":")[0]
    assert httpx.get(live_server.url + "/healthz").json() == {"status": "ok", "database": dialect}


def test_prometheus_exposition_has_latest_values_and_alerts(
    api: httpx.Client, live_server: LiveServer
) -> None:
    _create(api, project='team "a"')
    steps = _steps(0, 3, **{"ppo/p99": 1.5})
    steps[-1]["metrics"] = {"ppo/p99": 7.25, "grad/norm": None}
    api.post("/runs/run-1/steps", json={"steps": steps}).raise_for_status()
    text = httpx.get(live_server.url + "/metrics").text
    assert 'ratiowatch_metric{project="team \\"a\\"",run="run-1",key="ppo/p99"} 7.25' in text
    assert 'ratiowatch_run_last_step{project="team \\"a\\"",run="run-1",name="first"} 2' in text
    assert 'ratiowatch_open_alerts{project="team \\"a\\"",run="run-1"} 1' in text
    assert "ratiowatch_metric" in text and 'key="grad/norm"' not in text
