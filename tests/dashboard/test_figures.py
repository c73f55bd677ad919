"""The figure builders, pure: plain series and alerts in, the right traces, axes and markers out."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import pytest

from ratiowatch_dashboard import figures
from ratiowatch_dashboard.figures import AlertMark, Series

STEPS = list(range(40))
#: Quantile of a lognormal-ish ratio around 1: symmetric in log space, widening over time.
Z = {"p0.1": -3.09, "p1": -2.33, "p5": -1.64, "p25": -0.67, "p50": 0.0}
Z.update({"p75": 0.67, "p95": 1.64, "p99": 2.33, "p99.9": 3.09})


def fan_series(family: str = "ppo", steps: list[int] = STEPS) -> dict[str, Series]:
    return {
        f"{family}/{stat}": Series(steps, [math.exp(z * 0.02 * (1 + s / 20)) for s in steps])
        for stat, z in Z.items()
    }


def alert(metric: str, step: int, last_step: int | None = None, **overrides: str) -> AlertMark:
    values = {
        "rule": f"rule:{metric}",
        "severity": "critical",
        "state": "firing",
        "message": f"{metric} misbehaved",
    }
    values.update(overrides)
    return AlertMark(metric=metric, step=step, last_step=last_step or step, **values)


def traces(fig: go.Figure, name: str) -> list[go.Scatter]:
    return [trace for trace in fig.data if trace.name == name]


def alert_marker_steps(fig: go.Figure) -> list[int]:
    markers = traces(fig, "alerts")
    return list(markers[0].x) if markers else []


def is_empty(fig: go.Figure) -> bool:
    texts = [annotation.text for annotation in fig.layout.annotations]
    return not fig.data and figures.EMPTY_MESSAGE in texts


def band_bounds(fig: go.Figure, label: str) -> tuple[float, float]:
    """The band's lowest and highest y at its first step (the polygon's two ends)."""
    (band,) = traces(fig, label)
    first = band.x[0]
    ys = [y for x, y in zip(band.x, band.y, strict=True) if x == first]
    return min(ys), max(ys)


def test_fan_chart_nests_bands_from_widest_lightest_to_narrowest():
    fig = figures.fan_chart("ppo", fan_series())
    labels = [label for label, _, _ in figures.BANDS]
    bands = [trace for trace in fig.data if trace.name in labels]
    assert [band.name for band in bands] == labels
    assert all(band.fill == "toself" for band in bands)
    (outer_lo, outer_hi), (mid_lo, mid_hi), (inner_lo, inner_hi) = (
        band_bounds(fig, label) for label in labels
    )
    assert outer_lo < mid_lo < inner_lo < 1.0 < inner_hi < mid_hi < outer_hi
    alphas = [float(band.fillcolor.rsplit(",", 1)[1].rstrip(")")) for band in bands]
    assert alphas == sorted(alphas), "outer bands must be lighter"


def test_fan_chart_draws_the_median_on_a_log_axis():
    fig = figures.fan_chart("ppo", fan_series())
    (median,) = traces(fig, "median")
    assert list(median.x) == STEPS
    assert median.y[0] == pytest.approx(1.0)
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.xaxis.title.text == "step"


@pytest.mark.parametrize(
    ("clip", "expected"), [((0.2, 0.2), (0.8, 1.2)), ((0.1, 0.28), (0.9, 1.28))]
)
def test_fan_chart_clip_lines_sit_at_the_configured_eps(clip, expected):
    fig = figures.fan_chart("ppo", fan_series(), clip=clip)
    (bounds,) = [trace for trace in fig.data if trace.name.startswith("clip bounds")]
    assert bounds.line.dash == "dash"
    ys = sorted({y for y in bounds.y if y is not None})
    assert ys == pytest.approx(list(expected))
    xs = [x for x in bounds.x if x is not None]
    assert min(xs) == STEPS[0] and max(xs) == STEPS[-1]


def test_fan_chart_marks_every_alert_at_its_steps():
    marks = [alert("grad/norm", 12), alert("ppo/ess", 20, 25, severity="warning")]
    fig = figures.fan_chart("ppo", fan_series(), alerts=marks)
    assert alert_marker_steps(fig) == [12, 20]
    spans = sorted((shape.x0, shape.x1) for shape in fig.layout.shapes)
    assert spans == [(11.5, 12.5), (19.5, 25.5)]
    hover = traces(fig, "alerts")[0].customdata
    assert hover[0][0] == "rule:grad/norm" and "misbehaved" in hover[0][1]
    assert fig.layout.yaxis2.overlaying == "y" and list(fig.layout.yaxis2.range) == [0, 1]


def test_alerts_on_other_metrics_stay_off_the_specific_charts():
    series = {**fan_series(), "ppo/ess": Series(STEPS, [0.95] * 40)}
    series["grad/norm"] = Series(STEPS, [1.0] * 40)
    marks = [alert("grad/norm", 12), alert("ppo/ess", 20), alert("mismatch/ess", 30)]
    assert alert_marker_steps(figures.ess_chart("ppo", series, alerts=marks)) == [20]
    assert alert_marker_steps(figures.grad_chart(series, alerts=marks)) == [12]
    assert alert_marker_steps(figures.ess_chart("mismatch", series, alerts=marks)) == []


def test_resolved_alerts_are_grey_and_firing_ones_in_severity_colour():
    marks = [alert("grad/norm", 5), alert("grad/norm", 9, state="resolved")]
    fig = figures.grad_chart({"grad/norm": Series(STEPS, [1.0] * 40)}, alerts=marks)
    colours = list(traces(fig, "alerts")[0].marker.color)
    assert colours == [figures.theme.SEVERITY["critical"], figures.theme.RESOLVED]


def test_ess_chart_is_bounded_to_zero_one():
    series = {"ppo/ess": Series(STEPS, [0.9] * 40), "ppo/seq_ess": Series(STEPS, [0.7] * 40)}
    fig = figures.ess_chart("ppo", series)
    assert [trace.name for trace in fig.data] == ["token ESS", "sequence ESS"]
    assert list(fig.layout.yaxis.range) == [0, 1.05]


def test_clip_chart_shows_only_the_fractions_present():
    series = {
        "ppo/clip_low": Series(STEPS, [0.01] * 40),
        "ppo/clip_high": Series(STEPS, [0.02] * 40),
    }
    fig = figures.clip_chart("ppo", series)
    assert [trace.name for trace in fig.data] == ["r < 1-eps", "r > 1+eps"]
    series["ppo/clip_active"] = Series(STEPS, [0.005] * 40)
    assert len(figures.clip_chart("ppo", series).data) == 3


def test_kl_chart_has_the_three_estimators_on_a_linear_axis():
    series = {f"ppo/kl_k{i}": Series(STEPS, [0.001 * i] * 40) for i in (1, 2, 3)}
    fig = figures.kl_chart("ppo", series)
    assert [trace.name for trace in fig.data] == ["k1", "k2", "k3"]
    assert fig.layout.yaxis.type in (None, "linear", "-")


def test_grad_chart_is_log_scaled_and_keeps_the_spike():
    values = [1.0] * 40
    values[33] = 500.0
    fig = figures.grad_chart({"grad/norm": Series(STEPS, values)})
    assert fig.layout.yaxis.type == "log"
    assert max(fig.data[0].y) == 500.0


def test_nonfinite_and_nonpositive_values_become_gaps_not_errors():
    values = [1.0, float("nan"), None, 0.0, -1.0, float("inf"), 2.0]
    fig = figures.grad_chart({"grad/norm": Series(range(7), values)})
    assert list(fig.data[0].y) == [1.0, None, None, None, None, None, 2.0]
    kl = figures.kl_chart("ppo", {"ppo/kl_k1": Series([0, 1], [-0.01, float("nan")])})
    assert list(kl.data[0].y) == [-0.01, None]


@pytest.mark.parametrize(
    "build",
    [
        lambda s: figures.fan_chart("ppo", s, alerts=[alert("grad/norm", 3)]),
        lambda s: figures.ess_chart("ppo", s),
        lambda s: figures.clip_chart("ppo", s),
        lambda s: figures.kl_chart("ppo", s),
        lambda s: figures.grad_chart(s),
    ],
)
@pytest.mark.parametrize(
    "series",
    [{}, {"ppo/p50": Series([], [])}, {"ppo/ess": Series([0, 1], [None, None])}],
    ids=["nothing", "empty-series", "all-null"],
)
def test_empty_data_gives_a_no_data_figure(build, series):
    assert is_empty(build(series))


def test_fan_chart_tolerates_bands_sampled_at_different_steps():
    series = fan_series()
    series["ppo/p99"] = Series([0, 7, 39], [1.1, 1.9, 1.2])
    fig = figures.fan_chart("ppo", series)
    (outer,) = traces(fig, "p1-p99")
    assert len(outer.x) == len(STEPS) + 3
    assert max(outer.y) == 1.9


def test_chart_keys_cover_every_chart():
    keys = figures.chart_keys("mismatch")
    assert "mismatch/p50" in keys and "mismatch/ess" in keys and "mismatch/kl_k3" in keys
    assert "mismatch/clip_active" in keys and figures.GRAD_KEY in keys
