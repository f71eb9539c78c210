"""The benchmark's own arithmetic: what it reports about where time went must be right."""
import pytest

from benchmarks.pipeline import covered_seconds


@pytest.mark.parametrize(("intervals", "expected"), [
    ([], 0.0),
    ([(0.0, 2.0)], 2.0),
    ([(0.0, 2.0), (1.0, 3.0)], 3.0),                # two cores overlapping count once
    ([(5.0, 6.0), (0.0, 1.0)], 2.0),                # a gap, given out of order
    ([(0.0, 10.0), (2.0, 3.0), (4.0, 12.0)], 12.0),  # one task inside another
    ([(0.0, 1.0), (1.0, 2.0)], 2.0),                # back to back
])
def test_time_some_task_ran_counts_overlaps_once(intervals, expected):
    assert covered_seconds(intervals) == pytest.approx(expected)
