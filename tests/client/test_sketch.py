from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratiowatch.errors import InvalidArgumentError
from ratiowatch.sketch import LN_GAMMA, MAX_KEY, MIN_KEY, RELATIVE_ACCURACY, RatioSketch

# The bound is exactly a; float rounding at bucket edges may add a few ulps.
TOLERANCE = RELATIVE_ACCURACY * (1 + 1e-9)
QS = (0.0, 0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999, 1.0)


def order_statistic(ratios: np.ndarray, q: float) -> float:
    """Nearest-rank quantile: the value of rank max(1, ceil(q n)) in ascending order."""
    ranked = np.sort(ratios)
    return float(ranked[max(1, math.ceil(q * ranked.size)) - 1])


def assert_quantiles_accurate(x: np.ndarray) -> None:
    sketch = RatioSketch()
    sketch.add_logratios(x)
    ratios = np.exp(x)
    for q in QS:
        exact = order_statistic(ratios, q)
        estimate = sketch.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) <= TOLERANCE * exact, (q, estimate, exact)


def test_ties_at_exactly_one() -> None:
    assert_quantiles_accurate(np.zeros(1000))


def test_ties_at_one_with_extreme_tails() -> None:
    x = np.concatenate([np.zeros(997), [-69.0, 69.0, 40.0]])
    assert_quantiles_accurate(x)


def test_ratios_spanning_sixty_orders_of_magnitude() -> None:
    x = np.linspace(math.log(1e-30), math.log(1e30), 10_001)
    assert_quantiles_accurate(x)


def test_values_on_bucket_boundaries() -> None:
    keys = np.arange(-300, 300)
    assert_quantiles_accurate(keys * LN_GAMMA)
    assert_quantiles_accurate(np.nextafter(keys * LN_GAMMA, np.inf))
    assert_quantiles_accurate(np.nextafter(keys * LN_GAMMA, -np.inf))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_samples(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(50):
        assert_quantiles_accurate(rng.standard_normal(n) * 20)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.floats(min_value=math.log(1e-30), max_value=math.log(1e30)), min_size=1, max_size=60
    )
)
def test_quantiles_within_relative_accuracy(values: list[float]) -> None:
    assert_quantiles_accurate(np.array(values))


def test_out_of_range_ratios_go_to_zero_and_overflow() -> None:
    sketch = RatioSketch()
    sketch.add_logratios(np.array([-200.0, -100.0, 0.0, 100.0, 800.0]))
    wire = sketch.to_wire()
    assert wire["zero"] == 2
    assert wire["overflow"] == 2
    assert sketch.quantile(0.0) == 0.0
    assert sketch.quantile(1.0) == math.inf
    assert sketch.quantile(0.5) == pytest.approx(1.0, rel=TOLERANCE)


def test_buckets_list_occupied_buckets_in_order() -> None:
    sketch = RatioSketch()
    sketch.add_logratios(np.array([800.0, 0.0, 0.0, -200.0, math.log(3.0)]))
    buckets = sketch.buckets()
    assert [count for _, count in buckets] == [1, 2, 1, 1]
    assert buckets[0][0] == 0.0 and buckets[-1][0] == math.inf
    assert buckets[1][0] == pytest.approx(1.0, rel=TOLERANCE)
    assert buckets[2][0] == pytest.approx(3.0, rel=TOLERANCE)
    assert RatioSketch().buckets() == []


def test_empty_sketch_has_no_quantiles() -> None:
    sketch = RatioSketch()
    assert sketch.count == 0
    assert sketch.quantile(0.5) is None


def test_quantile_outside_unit_interval_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match=r"quantile q is 1\.5"):
        RatioSketch().quantile(1.5)


def test_nonfinite_logratios_are_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="finite"):
        RatioSketch().add_logratios(np.array([0.0, np.nan]))


def test_merge_adds_counts_exactly() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(10_000) * 5
    whole, left, right = RatioSketch(), RatioSketch(), RatioSketch()
    whole.add_logratios(x)
    left.add_logratios(x[:3_000])
    right.add_logratios(x[3_000:])
    left.merge(right)
    assert left == whole
    assert left.count == 10_000


def test_add_keys_counts_matches_add_logratios() -> None:
    from_keys, from_values = RatioSketch(), RatioSketch()
    from_keys.add_keys_counts([MIN_KEY - 5, -1, 0, 3, MAX_KEY + 9], [1, 2, 3, 4, 5])
    from_values.add_logratios(
        np.array([-150.0] + [-1.5 * LN_GAMMA] * 2 + [0.0] * 3 + [2.5 * LN_GAMMA] * 4 + [150.0] * 5)
    )
    assert from_keys == from_values


def test_add_keys_counts_rejects_negative_counts() -> None:
    with pytest.raises(InvalidArgumentError, match="negative"):
        RatioSketch().add_keys_counts([0], [-1])


def test_wire_round_trip_through_json() -> None:
    rng = np.random.default_rng(1)
    sketch = RatioSketch()
    sketch.add_logratios(np.concatenate([rng.standard_t(2, 5_000) * 10, [-500.0, 900.0]]))
    wire = json.loads(json.dumps(sketch.to_wire()))
    assert wire["a"] == RELATIVE_ACCURACY
    assert wire["keys"] == sorted(wire["keys"])
    assert 0 not in wire["counts"]
    assert RatioSketch.from_wire(wire) == sketch


def valid_wire() -> dict[str, object]:
    return {"a": 0.01, "zero": 0, "overflow": 1, "keys": [-3, 0, 7], "counts": [1, 5, 2]}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("a", 0.02, "sketch field 'a' is 0.02"),
        ("a", "0.01", "sketch field 'a'"),
        ("zero", -1, "sketch field 'zero' is -1"),
        ("overflow", 1.5, "sketch field 'overflow' is 1.5"),
        ("overflow", True, "sketch field 'overflow' is True"),
        ("keys", [0, -3, 7], "sketch field 'keys' must be strictly increasing"),
        ("keys", [-3, 0, MAX_KEY + 1], "sketch field 'keys' must be a list of integers"),
        ("keys", "0,1", "sketch field 'keys' must be a list"),
        ("counts", [1, 0, 2], "sketch field 'counts' must be a list of integers in \\[1,"),
        ("counts", [1, 2], "sketch field 'counts' has 2 entries, 'keys' has 3"),
        ("counts", [2**60, 1, 1], "sketch field 'counts'"),
    ],
)
def test_from_wire_names_the_bad_field(field: str, value: object, message: str) -> None:
    data = valid_wire()
    data[field] = value
    with pytest.raises(InvalidArgumentError, match=message):
        RatioSketch.from_wire(data)


def test_from_wire_rejects_missing_and_unknown_fields() -> None:
    data = valid_wire()
    del data["keys"]
    with pytest.raises(InvalidArgumentError, match="sketch field 'keys' is missing"):
        RatioSketch.from_wire(data)
    with pytest.raises(InvalidArgumentError, match="unknown field"):
        RatioSketch.from_wire({**valid_wire(), "extra": 1})
    with pytest.raises(InvalidArgumentError, match="sketch must be an object"):
        RatioSketch.from_wire([1, 2])  # type: ignore[arg-type]


def test_from_wire_rejects_a_total_beyond_exact_float_range() -> None:
    data = valid_wire()
    data["zero"] = 2**53
    with pytest.raises(InvalidArgumentError, match="add up to more than"):
        RatioSketch.from_wire(data)


def test_bins_round_trip() -> None:
    sketch = RatioSketch()
    sketch.add_logratios(np.array([-1.0, 0.0, 3.0]))
    assert RatioSketch.from_bins(sketch.bins) == sketch
    with pytest.raises(InvalidArgumentError, match="shape"):
        RatioSketch.from_bins(np.zeros(3, dtype=np.int64))
