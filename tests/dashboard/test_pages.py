"""The dashboard's reads and page rendering against a real database, without a browser.

The service (without its dashboard, so no Dash app is created here) is fed over HTTP in-process;
the dashboard's data layer then reads the same database through the server's query layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dash import html, no_update
from dash.exceptions import PreventUpdate
from fastapi.testclient import TestClient

from ratiowatch_dashboard import components
from ratiowatch_dashboard.app import page_for
from ratiowatch_dashboard.data import DashboardData, clip_range, families
from ratiowatch_dashboard.pages import run as run_page
from ratiowatch_dashboard.pages import runs as runs_page
from ratiowatch_server.app import create_app
from ratiowatch_server.db import make_engine, make_session_factory
from ratiowatch_server.query import Query
from ratiowatch_server.settings import ServerSettings

RUN_ID = "r-pages"
#: ``pages.run.render``'s outputs, in the callback's order.
OUTPUT_NAMES = ("title", "stats", "options", "family", "fan", "ess", "clip", "kl", "grad")
OUTPUT_NAMES += ("alerts", "seen")


@pytest.fixture
def fed(tmp_path: Path, make_step: Callable[..., dict[str, Any]]) -> Iterator[DashboardData]:
    """A database holding one run: 30 calm steps and a gradient spike (one open alert)."""
    url = f"sqlite:///{tmp_path / 'rw.db'}"
    app = create_app(ServerSettings(home=tmp_path, database_url=url), dashboard=False)
    with TestClient(app) as client:
        body = {"project": "proj", "name": "pages-run", "config": {"clip": [0.1, 0.3]}}
        client.put(f"/api/v1/runs/{RUN_ID}", json=body).raise_for_status()
        steps = [make_step(i) for i in range(30)] + [make_step(30, grad_norm=300.0)]
        client.post(f"/api/v1/runs/{RUN_ID}/steps", json={"steps": steps}).raise_for_status()
        client.put("/api/v1/runs/r-empty", json={"project": "proj"}).raise_for_status()
    engine = make_engine(url)
    yield DashboardData(Query(make_session_factory(engine)))
    engine.dispose()


def find(component: Any, element_id: str) -> Any:
    """The component with ``element_id`` anywhere under ``component``, or ``None``."""
    if getattr(component, "id", None) == element_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str):
            found = find(child, element_id)
            if found is not None:
                return found
    return None


def test_families_are_found_in_known_order_and_grad_is_not_one():
    keys = ["grad/norm", "train/loss", "offpolicy/p50", "ppo/ess", "mismatch/p99", "custom/mean"]
    assert families(keys) == ["ppo", "mismatch", "offpolicy", "custom"]
    assert families(["grad/norm", "train/reward"]) == []


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"clip": [0.1, 0.28]}, (0.1, 0.28)),
        ({"clip": 0.3}, (0.3, 0.3)),
        ({}, (0.2, 0.2)),
        ({"clip": "wide"}, (0.2, 0.2)),
        ({"clip": [0.2, None]}, (0.2, 0.2)),
        ({"clip": [True, 0.2]}, (0.2, 0.2)),
    ],
)
def test_clip_range_reads_the_config_and_falls_back_on_nonsense(config, expected):
    assert clip_range(config) == expected


def test_run_view_reads_series_alerts_and_clip(fed: DashboardData):
    run = fed.run(RUN_ID)
    assert run is not None and run.open_alerts == 1
    view = fed.run_view(run, None)
    assert view.families == ["ppo"] and view.family == "ppo"
    assert view.clip == (0.1, 0.3)
    assert len(view.series["ppo/p50"].steps) == 31
    assert max(view.series["grad/norm"].values) == 300.0
    assert [mark.rule for mark in view.marks] == ["grad_spike"]
    assert view.marks[0].step == 30


def test_run_view_for_an_unlogged_family_falls_back(fed: DashboardData):
    run = fed.run(RUN_ID)
    assert run is not None
    assert fed.run_view(run, "mismatch").family == "ppo"


def test_unknown_run_is_none_and_its_page_says_not_found(fed: DashboardData):
    assert fed.run("nope") is None
    page = page_for(fed, "/runs/nope", 1000)
    assert page.id == "run-not-found"
    assert "Run not found" in str(page.children[0].children)


def test_router_maps_paths_to_pages(fed: DashboardData):
    assert find(page_for(fed, "/", 1000), "runs-table") is not None
    assert find(page_for(fed, "/alerts", 1000), "alerts-table") is not None
    run = page_for(fed, f"/runs/{RUN_ID}/", 1000)
    assert find(run, "run-title").children == "pages-run"
    assert find(run, "chart-fan") is not None and find(run, "alert-list") is not None
    assert "Page not found" in str(page_for(fed, "/elsewhere", 1000).children[0].children)


def test_render_draws_everything_then_skips_work_until_the_run_changes(fed: DashboardData):
    first = run_page.render(fed, RUN_ID, None, None)
    outputs = dict(zip(OUTPUT_NAMES, first, strict=True))
    assert outputs["title"] == "pages-run"
    assert outputs["family"] == "ppo"
    assert all(outputs[chart].data for chart in ("fan", "ess", "clip", "kl", "grad"))
    clip = next(t for t in outputs["fan"].data if t.name.startswith("clip bounds"))
    assert sorted({y for y in clip.y if y is not None}) == pytest.approx([0.9, 1.3])

    again = run_page.render(fed, RUN_ID, "ppo", outputs["seen"])
    assert again[0] is no_update and again[4] is no_update
    assert isinstance(again[1], list), "header stats still refresh"


def test_a_run_without_steps_renders_no_data_charts(fed: DashboardData):
    outputs = dict(zip(OUTPUT_NAMES, run_page.render(fed, "r-empty", None, None), strict=True))
    assert outputs["family"] is None and outputs["options"] == []
    for chart in ("fan", "ess", "clip", "kl", "grad"):
        annotations = [a.text for a in outputs[chart].layout.annotations]
        assert not outputs[chart].data and annotations == ["no data yet"]
    assert "No alerts" in outputs["alerts"].children


def test_render_of_a_vanished_run_changes_nothing(fed: DashboardData):
    with pytest.raises(PreventUpdate):
        run_page.render(fed, "gone", None, None)


def test_runs_rows_highlight_open_alerts(fed: DashboardData):
    rows = {row.children[1].children.href: row.children for row in runs_page.rows(fed.runs())}
    assert set(rows) == {f"/runs/{RUN_ID}", "/runs/r-empty"}
    alerting, quiet = rows[f"/runs/{RUN_ID}"], rows["/runs/r-empty"]
    assert alerting[4].children == "1" and "rw-danger" in alerting[4].className
    assert quiet[4].children == "0" and "rw-danger" not in quiet[4].className
    assert quiet[2].children == "-"
    assert fed.runs("other-project") == []


def test_alerts_filter_by_state_and_project(fed: DashboardData):
    assert [alert.rule for alert in fed.alerts(state="firing")] == ["grad_spike"]
    assert fed.alerts(state="resolved") == []
    assert fed.alerts(project="other-project") == []
    assert isinstance(components.alert_list([]), html.Div)


def test_header_shows_records_the_client_lost_by_reason():
    from ratiowatch_dashboard.pages.run import header_stats
    from ratiowatch_server.schemas import RunOut

    run = RunOut(
        id="r",
        project="p",
        name="n",
        config={},
        tags=[],
        created_at=0.0,
        updated_at=0.0,
        last_step=3,
        step_count=4,
        client_losses={"spool_cap": 5, "rejected_by_server": 2},
    )
    text = str(header_stats(run))
    assert "Lost steps (2 rejected_by_server, 5 spool_cap)" in text and "'7'" in text
    assert "Lost" not in str(header_stats(run.model_copy(update={"client_losses": {}})))


def test_the_run_page_opens_on_the_family_of_the_newest_firing_alert():
    from ratiowatch_dashboard.data import default_family
    from ratiowatch_server.schemas import AlertOut

    def alert(metric: str, state: str) -> AlertOut:
        return AlertOut(
            id=1,
            run_id="r",
            project="p",
            rule="x",
            metric=metric,
            severity="warning",
            message="m",
            step=1,
            last_step=1,
            value=None,
            created_at=0.0,
            state=state,
            resolved_at=None,
            resolved_step=None,
            acknowledged=False,
        )

    present = ["ppo", "mismatch"]
    firing = [alert("grad/norm", "firing"), alert("mismatch/kl_k3", "firing")]
    assert default_family(present, firing) == "mismatch"
    assert default_family(present, [alert("mismatch/ess", "resolved")]) == "ppo"
    assert default_family([], firing) is None
