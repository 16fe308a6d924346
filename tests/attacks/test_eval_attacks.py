"""An eval suite that lists `attacks` runs them on the model and its baseline: their rows go into the eval's
report.json and report.md, their outputs into `attacks/`; a rerun after an interruption reuses them; attacks
that cannot run are refused before anything is written."""

import json
import shutil

import pytest

import erasekit
from erasekit.cli import main
from erasekit.errors import ConfigError
from erasekit.eval.evaluate import run_eval
from erasekit.eval.suite import EvalSuite
from erasekit.io import staging_dir

SUITE = ["--suite", "configs/eval/digits.yaml", "--forget", "3", "--samples-per-class", "2",
         "--num-inference-steps", "4", "--attack-instances", "1"]
KEYS = {"attack", "role", "threat_model", "asr", "pre_asr", "n", "ci95"}


def test_suite_attacks_land_in_the_eval_report_and_survive_an_interruption(tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "--model", "bundled:digits-cfg", "--baseline", "bundled:digits-cfg", *SUITE,
            "--attacks", "trajectory", "--output", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["role"]: r for r in report["attacks"]}
    assert set(rows) == {"erased", "base"} and all(KEYS <= set(r) for r in rows.values())
    # the same weights under the same seeds: the two rows agree (a check that the roles are not mixed up)
    assert rows["erased"]["asr"] == rows["base"]["asr"] and rows["erased"]["n"] == 1
    assert "## Attacks" in (out / "report.md").read_text()
    assert json.loads((out / "attacks" / "report.json").read_text())["attacks"] == report["attacks"]

    # killed after the attacks, before the eval's report: the rerun reuses the attack report
    staging = staging_dir(out)
    shutil.move(out, staging)
    (staging / "report.json").unlink()
    attack_report = (staging / "attacks" / "report.json").stat().st_mtime_ns
    assert main(args) == 0
    assert json.loads((out / "report.json").read_text())["attacks"] == report["attacks"]
    assert (out / "attacks" / "report.json").stat().st_mtime_ns == attack_report


@pytest.mark.parametrize("extra, message", [
    (["--attacks", "nope"], "not an attack"), (["--attacks", "uda"], "needs a text encoder"),
    (["--attacks", "random", "--attack-reference", "bundled:digits-t2i"], "of one family")])
def test_suite_attacks_that_cannot_run_are_refused_before_anything_is_written(tmp_path, capsys, extra, message):
    out = tmp_path / "eval"
    assert main(["eval", "--model", "bundled:digits-cfg", *SUITE, *extra, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert not list(tmp_path.iterdir())


def test_the_evaluator_alone_refuses_a_suite_with_attacks(tmp_path):
    with pytest.raises(ConfigError, match="erasekit.evaluate"):
        run_eval("bundled:digits-cfg", None, EvalSuite(forget=[3], attacks=["cce"]), str(tmp_path / "eval"))
    assert not list(tmp_path.iterdir())
    assert erasekit.evaluate.__module__ == "erasekit.evaluation"


def test_text_suite_attacks_take_the_target_prompts_and_the_suite_judge(tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--model", "bundled:digits-t2i", "--prompts", "a handwritten digit seven", "--retain-prompts",
                 "a handwritten digit one", "--seeds", "0", "--metrics", "classifier", "--resolution", "16",
                 "--num-inference-steps", "4", "--attacks", "random", "--attack-instances", "1",
                 "--output", str(out)]) == 0
    attack_report = json.loads((out / "attacks" / "report.json").read_text())
    assert attack_report["settings"]["run"]["forget_prompts"] == ["a handwritten digit seven"]
    assert attack_report["judge"]["metric"] == "classifier"
    assert [r["role"] for r in json.loads((out / "report.json").read_text())["attacks"]] == ["erased"]
