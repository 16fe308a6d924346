"""The quality bench's bookkeeping: job order, ToW, cross-machine agreement, its command-line checks."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks" / "quality" / "bench_digits_classes.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_digits_classes", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_job_order_runs_retrain_first_then_whole_seeds(bench):
    jobs = bench.job_order(["salun", "retrain", "esd"], [3, 8], [1, 2])
    assert jobs[:2] == [("retrain", 3, 1), ("retrain", 8, 1)]  # retrain once, at the first seed
    assert jobs[2:] == [("salun", 3, 1), ("esd", 3, 1), ("salun", 8, 1), ("esd", 8, 1),
                        ("salun", 3, 2), ("esd", 3, 2), ("salun", 8, 2), ("esd", 8, 2)]
    assert [j for j in bench.job_order(["ga"], [0], [0])] == [("ga", 0, 0)]


def test_tow_is_one_for_the_reference_and_falls_with_each_gap(bench):
    ref = {"UA": 0.8, "RA": 1.0, "FD": 40.0}
    assert bench.tow(ref, ref) == 1.0
    assert bench.tow({"UA": 1.0, "RA": 1.0, "FD": 40.0}, ref) == pytest.approx(0.8)
    assert bench.tow({"UA": 0.8, "RA": 0.9, "FD": 44.0}, ref) == pytest.approx(0.9 * 0.9)
    assert bench.tow({"UA": 0.8, "RA": 1.0, "FD": 200.0}, ref) == 0.0  # the FD term is clipped at zero


def test_agreement_reports_the_largest_gaps_over_shared_runs(bench):
    row = {"method": "salun", "class": 3, "seed": 0, "UA": 1.0, "FD": 40.0}
    ours = [row, {**row, "class": 4, "FD": 30.0}, {"method": "base", "class": -1, "seed": 0}]
    theirs = [{**row, "UA": 0.96, "FD": 40.5}, {**row, "class": 4, "FD": 29.0}, {**row, "class": 5}]
    text = bench.agreement(ours, theirs, "the other file")
    assert text.startswith("2 runs (salun) are also in the other file")
    assert "UA differs by at most 0.04" in text and "retain FD by at most 1.00" in text
    assert bench.agreement(ours, [], "the other file") == "no run here is also in the other file."


@pytest.mark.parametrize("args, message", [(["--methods", "salun,nope"], "unknown method 'nope'"),
                                           (["--workers", "0"], "--workers must be at least 1"),
                                           (["--report", "--rows", "/nonexistent/rows.jsonl"], "holds no rows")])
def test_bad_flags_get_a_usage_error(bench, monkeypatch, capsys, args, message):
    monkeypatch.setattr(sys, "argv", ["bench_digits_classes.py", *args])
    with pytest.raises(SystemExit) as exit_info:
        bench.main()
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
