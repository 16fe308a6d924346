"""The quality bench's bookkeeping: job order, ToW, cross-machine agreement, its command-line checks."""

import importlib.util
import json
import subprocess
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


@pytest.fixture(scope="module")
def null_table():
    folder = BENCH.parents[1] / "robustness"
    sys.path.insert(0, str(folder))  # the driver imports its sibling `lanes`
    try:
        spec = importlib.util.spec_from_file_location("null_table", folder / "null_table.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def test_null_table_builds_one_reference_per_digit_and_plain_salun_at_the_first_seed(null_table, tmp_path):
    jobs = dict((o.name, a) for o, a in null_table.erase_jobs(tmp_path, [3, 8], [0, 1]))
    assert sorted(jobs) == ["retrain-3", "retrain-8", "robust-3-s0", "robust-3-s1", "robust-8-s0", "robust-8-s1",
                            "salun-3-s0", "salun-8-s0"]
    assert "--seed" not in jobs["retrain-3"] and jobs["robust-8-s1"][jobs["robust-8-s1"].index("--seed") + 1] == "1"
    probes = [o.name for o, _ in null_table.probe_jobs(tmp_path, [3], [0, 1])]
    assert "retrain-3-null-0.7T-s1" in probes and len(probes) == 5 * len(null_table.PROBES)


def test_null_table_on_words_builds_one_reference_without_all_of_them(null_table, tmp_path):
    jobs = dict((str(o.relative_to(tmp_path)), a) for o, a in null_table.erase_jobs(tmp_path, ["eight", "seven"], [0]))
    reference = jobs.pop("refs/digits-t2i-without-seven-eight")
    assert reference[:2] == ["train-base", "digits-t2i"] and reference.count("--exclude") == 2
    assert sorted(jobs) == ["robust-eight-s0", "robust-seven-s0", "salun-eight-s0", "salun-seven-s0"]
    recipe = Path(jobs["robust-eight-s0"][jobs["robust-eight-s0"].index("--config") + 1]).read_text()
    assert "a handwritten digit eight" in recipe and "a handwritten digit seven" in recipe  # seven is an anchor now
    assert recipe.index("digit eight") < recipe.index("anchor_prompts") < recipe.index("digit seven")
    assert "null_weight:" in recipe and "null_wseven" not in recipe  # whole words only
    probes = dict((o.name, a) for o, a in null_table.probe_jobs(tmp_path, ["seven"], [0]))
    soft = probes["robust-seven-soft-s0"]
    assert soft[soft.index("--forget-prompts") + 1] == "a handwritten digit seven" and "--forget" not in soft
    assert soft[soft.index("--instances") + 1] == "32"  # text models: cce and soft at 32 instances
    digit = dict((o.name, a) for o, a in null_table.probe_jobs(tmp_path, [3], [0]))["robust-3-cce-s0"]
    assert digit[digit.index("--instances") + 1] == "8"
    assert len(probes) == 3 * len(null_table.T2I_PROBES)
    evals = dict((o.name, a) for o, a in null_table.eval_jobs(tmp_path, ["eight"], [0]))
    assert sorted(evals) == ["robust-eight-s0", "salun-eight-s0"]  # the reference is not judged
    suite = Path(evals["robust-eight-s0"][evals["robust-eight-s0"].index("--suite") + 1])
    rows = [r.split(",") for r in (suite.parent / "digits-t2i-eight.csv").read_text().splitlines()[1:]]
    assert {r[3] for r in rows if r[4] == "target"} == {"8"} and {r[4] for r in rows if r[3] == "7"} == {"retain"}


def test_null_table_reports_excess_over_the_reference_at_the_same_seed(null_table, tmp_path):
    rates = {("retrain", 0): 0.4, ("robust", 0): 0.45, ("salun", 0): 0.9, ("retrain", 1): 0.3, ("robust", 1): 0.2}
    for (method, seed), rate in rates.items():
        for probe in null_table.PROBES:
            out = null_table.probe_dir(tmp_path, method, 3, seed, probe)
            out.mkdir(parents=True)
            rows = [{"role": "base", "image_rate": 1.0}, {"role": "erased", "image_rate": rate}]
            (out / "report.json").write_text(json.dumps({"attacks": rows}))
        model = null_table.model_dir(tmp_path, method, 3, seed)
        model.mkdir(exist_ok=True)
        metrics = {"UA": 1.0, "RA": 1.0, "FD": 40.0, "noisy_rate_retain": 0.03}
        (model / "erasure.json").write_text(json.dumps({"metrics": {"before": metrics, "after": metrics}}))
    rows = {(r["method"], r["seed"]): r for r in null_table.table(tmp_path, [3], [0, 1])["rows"]}
    assert rows[("robust", 0)]["excess null 0.5T"] == pytest.approx(0.05)
    assert rows[("robust", 1)]["excess cce"] == pytest.approx(-0.1)
    assert rows[("salun", 0)]["excess label 0.5T"] == pytest.approx(0.5) and rows[("retrain", 1)]["excess cce"] == 0


def test_null_table_rebuilds_one_method_over_the_recorded_reference(null_table, tmp_path):
    jobs = [o.name for o, _ in null_table.erase_jobs(tmp_path, [3], [0, 1], ["robust"])]
    assert jobs == ["robust-3-s0", "robust-3-s1"]
    assert {o.name.split("-")[0] for o, _ in null_table.probe_jobs(tmp_path, [3], [0], ["robust"])} == {"robust"}
    recorded = [{"concept": 3, "seed": 0, "method": m, **{p: rate for p in null_table.PROBES}}
                for m, rate in (("retrain", 0.4), ("salun", 0.9), ("robust", 0.7))]
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"rows": recorded}))
    for probe in null_table.PROBES:  # the robust model rebuilt, probed at 0.45
        out = null_table.probe_dir(tmp_path, "robust", 3, 0, probe)
        out.mkdir(parents=True)
        (out / "report.json").write_text(json.dumps({"attacks": [{"role": "erased", "image_rate": 0.45}]}))
    model = null_table.model_dir(tmp_path, "robust", 3, 0)
    model.mkdir()
    metrics = {"UA": 1.0, "RA": 1.0, "FD": 40.0, "noisy_rate_retain": 0.03}
    (model / "erasure.json").write_text(json.dumps({"metrics": {"before": metrics, "after": metrics}}))
    rows = {r["method"]: r for r in null_table.table(tmp_path, [3], [0], ["robust"], record)["rows"]}
    assert rows["salun"] == recorded[1] and rows["retrain"] == recorded[0]  # carried over as recorded
    assert rows["robust"]["null 0.7T"] == 0.45 and rows["robust"]["excess null 0.7T"] == pytest.approx(0.05)
    with pytest.raises(SystemExit, match="does not exist"):
        null_table.table(tmp_path, [3], [0], ["robust"], tmp_path / "missing.json")


def test_null_probe_refuses_a_missing_reference_record_before_probing(tmp_path):
    script = Path(__file__).parents[1] / "benchmarks" / "robustness" / "null_probe.py"
    done = subprocess.run([sys.executable, str(script), "--digit", "3", "--out", str(tmp_path / "o"), "--model",
                           "salun=nowhere", "--reference-record", str(tmp_path / "missing.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "missing.json: no such file" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


def test_the_cost_benchmark_refuses_a_bad_output_or_recipe_before_timing(tmp_path):
    script = Path(__file__).parents[1] / "benchmarks" / "robustness" / "bench_null_cost.py"
    for flags, said in ((["--output", str(tmp_path / "x.json")], "give a file name"),
                        (["--plain", str(tmp_path / "nope.yaml")], "nope.yaml' does not exist")):
        done = subprocess.run([sys.executable, str(script), *flags], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())


def test_the_lanes_driver_stops_when_the_jobs_left_wait_for_a_model_whose_build_failed(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks" / "robustness"))
    import lanes

    jobs = lambda: [("build", ["no-such-command"]), ("probe", ["attack", "--model", "never-built"])]  # noqa: E731
    with pytest.raises(SystemExit, match="build failed"):
        lanes.run_in_lanes(jobs, tmp_path, lanes=1, ready=lambda cmd: cmd[0] != "attack")
    assert (tmp_path / "build.log").is_file() and not (tmp_path / "probe.log").exists()
