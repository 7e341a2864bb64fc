"""The whole loop through scripts/run_rounds.py: rounds on disk, resuming, refusing, accelerate launch."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from si_hf import SIForCausalLM
from si_hf.data import eval_problems
from si_hf.evaluation import frontier
from si_hf.records import read_record, without_timing
from si_hf.tasks import get_task

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE_MAX_LEVEL = 4  # the micro recipe's base levels are 1-4


def _snapshot(out: Path) -> dict:
    """path -> (mtime_ns, size) of every file under `out`."""
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(out.rglob("*")) if p.is_file()}


def _round_files(snapshot: dict, k: int) -> dict:
    return {p: v for p, v in snapshot.items() if p.startswith(f"round-{k}/")}


def _run(main, argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def _eval_records(out: Path, rounds) -> list[dict]:
    records = []
    for k in rounds:
        records.append(without_timing(read_record(out, k)))
    return records


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory, write_recipe, run_rounds_main):
    """Runs the micro copy recipe (2 rounds), reruns it unchanged, then continues it to 3 rounds,
    recording the directory after each step."""
    root = tmp_path_factory.mktemp("e2e")
    argv = write_recipe(root, name="copy")
    out = root / "copy"
    rc1, log1 = _run(run_rounds_main, argv)
    assert rc1 == 0, log1
    snap1 = _snapshot(out)
    summary1 = (out / "summary.jsonl").read_text()
    summary_md1 = (out / "summary.md").read_text()

    rc2, log2 = _run(run_rounds_main, argv)
    snap2 = _snapshot(out)
    summary2 = (out / "summary.jsonl").read_text()

    rc3, log3 = _run(run_rounds_main, argv + ["--num_rounds", "3"])
    snap3 = _snapshot(out)
    return SimpleNamespace(root=root, out=out, argv=argv, log1=log1, snap1=snap1, summary1=summary1,
                           summary_md1=summary_md1, rc2=rc2, log2=log2, snap2=snap2, summary2=summary2,
                           rc3=rc3, log3=log3, snap3=snap3)


def test_rounds_on_disk(micro_run):
    out = micro_run.out
    task = get_task("copy")
    held_out = {task.prompt(p) for level in range(1, 7) for p in eval_problems(task, level, 50, seed=0)}
    summary = [json.loads(line) for line in micro_run.summary1.splitlines()]
    assert [row["round"] for row in summary] == [0, 1, 2]
    for k in range(3):
        d = out / f"round-{k}"
        assert (d / "model" / "model.safetensors").is_file()
        assert not (d / "model" / "pytorch_model.bin").exists()
        model = AutoModelForCausalLM.from_pretrained(d / "model")
        assert isinstance(model, SIForCausalLM)
        assert (model.config.num_hidden_layers, model.config.hidden_size) == (2, 64)
        tok = AutoTokenizer.from_pretrained(d / "model")
        assert tok.decode(tok("12=")["input_ids"], skip_special_tokens=True) == "12="

        data = load_from_disk(str(d / "data"))
        assert set(data.column_names) == {"prompt", "completion", "level", "round", "correct"}
        assert set(data["round"]) <= {k}
        assert set(data["prompt"]).isdisjoint(held_out)  # eval problems never reach training data
        if k == 0:
            assert len(data) == 200 * 32  # base_steps * batch_size
            assert set(data["level"]) == {1, 2, 3, 4} and all(data["correct"])
        else:
            assert set(data["level"]) <= {BASE_MAX_LEVEL + k}
            labels = summary[k]["labels"]
            assert labels["level"] == str(BASE_MAX_LEVEL + k)  # level names, as in accuracy_by_level
            assert labels["labeled"] == 200 and labels["kept"] == len(data)
            assert [{k: v for k, v in f.items() if k != "label_accuracy"} for f in labels["filters"]] == [
                {"filter": "length", "in": 200, "out": len(data)}]
            assert labels["filters"][0]["label_accuracy"] == labels["label_accuracy_kept"]
            for row in data:
                assert task.plausible(row["prompt"], row["completion"])  # the length filter ran
                assert row["correct"] == (row["completion"] == row["prompt"][:-1])
                assert len(row["prompt"]) - 1 == BASE_MAX_LEVEL + k

        ev = json.loads((d / "eval.json").read_text())
        assert ev["round"] == k
        assert set(ev["accuracy_by_level"]) == {str(lvl) for lvl in range(1, 7)}
        assert all(0.0 <= acc <= 1.0 for acc in ev["accuracy_by_level"].values())
        assert ev["frontier"] == frontier({int(lvl): a for lvl, a in ev["accuracy_by_level"].items()}, 0.99,
                                          {int(lvl): n for lvl, n in ev["eval_size_by_level"].items()})
        assert ev == summary[k]
    assert summary[0]["train_steps"] == 200 and summary[1]["train_steps"] == 20
    assert summary[0]["accuracy_by_level"]["1"] > 0.3  # the base model learned something

    md = micro_run.summary_md1.strip().splitlines()
    assert len(md) == 2 + 3  # header, separator, one row per round
    assert md[0].startswith("| round |") and "@6" in md[0]


def test_each_phase_of_a_round_is_timed(micro_run):
    """eval.json and the summary hold the wall seconds of each phase; the progress line shows them."""
    summary = [json.loads(line) for line in micro_run.summary1.splitlines()]
    for rec in summary:
        phases = rec["phase_seconds"]
        expected = ["train", "evaluate", "save"] if rec["round"] == 0 else [
            "probe", "label", "filter", "train", "evaluate", "save"]
        assert list(phases) == expected
        assert all(s >= 0 for s in phases.values()) and phases["train"] > 0
        assert phases == read_record(micro_run.out, rec["round"]).phase_seconds
    line = next(line for line in micro_run.log1.splitlines() if line.startswith("[round 1/2]"))
    assert f"train {summary[1]['phase_seconds']['train']:.0f}s" in line and "label " in line and "save " in line


def test_rerun_finishes_immediately(micro_run):
    assert micro_run.rc2 == 0
    assert "finished" in micro_run.log2
    assert "train_runtime" not in micro_run.log2  # nothing trained
    assert micro_run.summary2 == micro_run.summary1
    unchanged = {p: v for p, v in micro_run.snap2.items() if p != "recipe.yaml"}
    assert unchanged == {p: v for p, v in micro_run.snap1.items() if p != "recipe.yaml"}


def test_continue_adds_exactly_one_round(micro_run):
    assert micro_run.rc3 == 0
    out = micro_run.out
    assert "Resuming" in micro_run.log3
    assert micro_run.log3.count("train_runtime") == 1  # only round 3 trained
    assert (out / "round-3" / "eval.json").is_file() and not (out / "round-4").exists()
    summary = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert [row["round"] for row in summary] == [0, 1, 2, 3]
    assert (out / "summary.md").read_text().count("\n") == 2 + 4
    assert micro_run.summary1.splitlines() == (out / "summary.jsonl").read_text().splitlines()[:3]
    data = load_from_disk(str(out / "round-3" / "data"))
    assert set(data["round"]) <= {3} and set(data["level"]) <= {BASE_MAX_LEVEL + 3}
    for k in range(3):  # the finished rounds' checkpoints and records are left alone
        for name in ("eval.json", "model/model.safetensors", "data/data-00000-of-00001.arrow"):
            key = f"round-{k}/{name}"
            if key in micro_run.snap1:
                assert micro_run.snap3[key] == micro_run.snap1[key], key


def test_continue_writes_nothing_into_finished_rounds(micro_run):
    for k in range(3):
        assert _round_files(micro_run.snap3, k) == _round_files(micro_run.snap1, k)


def test_resumed_run_equals_straight_run(micro_run, write_recipe, run_rounds_main):
    argv = write_recipe(micro_run.root, name="straight", num_rounds=3)
    rc, log = _run(run_rounds_main, argv)
    assert rc == 0, log
    straight = micro_run.root / "straight"
    assert _eval_records(straight, range(4)) == _eval_records(micro_run.out, range(4))
    a = load_from_disk(str(straight / "round-3" / "data"))
    b = load_from_disk(str(micro_run.out / "round-3" / "data"))
    assert a.to_dict() == b.to_dict()
    wa = AutoModelForCausalLM.from_pretrained(straight / "round-3" / "model").state_dict()
    wb = AutoModelForCausalLM.from_pretrained(micro_run.out / "round-3" / "model").state_dict()
    assert all(torch.equal(wa[name], wb[name]) for name in wa)


def test_a_base_restart_is_a_second_run_from_the_base_weights(tmp_path, write_recipe, run_rounds_main):
    # What the maze bases were measured with: a run of the base, then a run from its weights with the
    # scaled schedule; `base_restart_steps` does both in one run of round 0.
    small = dict(num_rounds=0, base_steps=20, base_warmup_steps=2, base_decay_steps=4, eval_max_level=5, eval_size=10)
    first = write_recipe(tmp_path, name="first", **small)
    assert run_rounds_main(first) == 0
    second = write_recipe(tmp_path, name="second", **{**small, "base_steps": 10, "base_warmup_steps": 1,
                                                      "base_decay_steps": 2})
    assert run_rounds_main(second + ["--model_name_or_path", str(tmp_path / "first" / "round-0" / "model")]) == 0
    staged = write_recipe(tmp_path, name="staged", **small, base_restart_steps=[10])
    rc, log = _run(run_rounds_main, staged)
    assert rc == 0 and "base stage 2: 10 steps more" in log
    assert read_record(tmp_path / "staged", 0).train_steps == 30
    wa = AutoModelForCausalLM.from_pretrained(tmp_path / "second" / "round-0" / "model").state_dict()
    wb = AutoModelForCausalLM.from_pretrained(tmp_path / "staged" / "round-0" / "model").state_dict()
    assert all(torch.allclose(wa[name], wb[name], atol=1e-6) for name in wa)
    # Round 0's data stays the first stage's (base_steps * batch_size rows).
    assert len(load_from_disk(str(tmp_path / "staged" / "round-0" / "data"))) == 20 * 32


def test_a_resumed_run_says_which_rounds_are_finished(tmp_path, write_recipe, run_rounds_main):
    argv = write_recipe(tmp_path, name="run", num_rounds=0, base_steps=5, base_warmup_steps=0, base_decay_steps=2,
                        round_steps=2, round_decay_steps=1, labels_per_round=16, eval_max_level=2, eval_size=5)
    assert _run(run_rounds_main, argv)[0] == 0
    rc, log = _run(run_rounds_main, argv + ["--num_rounds", "1"])
    assert rc == 0 and "round 0 is finished." in log and "rounds 0-0" not in log
    rc, log = _run(run_rounds_main, argv + ["--num_rounds", "2"])
    assert rc == 0 and "rounds 0-1 are finished." in log


def test_other_recipe_in_same_dir_is_refused(tmp_path, write_recipe, run_rounds_main, capsys):
    small = dict(num_rounds=0, base_steps=5, base_warmup_steps=0, base_decay_steps=2, eval_max_level=2,
                 eval_size=5)
    argv = write_recipe(tmp_path, name="run", **small)
    out = tmp_path / "run"
    assert run_rounds_main(argv) == 0
    assert (out / "round-0" / "eval.json").is_file() and not (out / "round-1").exists()
    before = _snapshot(out)

    capsys.readouterr()
    assert run_rounds_main(argv + ["--learning_rate", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and "overwrite_output_dir" in err
    after = _snapshot(out)
    assert ({p: v for p, v in after.items() if p != "recipe.yaml"}
            == {p: v for p, v in before.items() if p != "recipe.yaml"})
    assert "learning_rate: 0.003" in (out / "recipe.yaml").read_text()  # the saved recipe is kept

    # Fields that only change how a run is watched may differ.
    assert run_rounds_main(argv + ["--logging_steps", "7", "--label_batch_size", "64"]) == 0
    assert _snapshot(out)["round-0/eval.json"] == before["round-0/eval.json"]

    assert run_rounds_main(argv + ["--learning_rate", "0.01", "--overwrite_output_dir", "true"]) == 0
    assert "learning_rate: 0.01" in (out / "recipe.yaml").read_text()
    assert _snapshot(out)["round-0/eval.json"] != before["round-0/eval.json"]  # a new round 0


def test_invalid_recipe_exits_with_code_2(tmp_path, write_recipe, run_rounds_main, capsys):
    argv = write_recipe(tmp_path, name="bad", frontier_threshold=1.5)
    assert run_rounds_main(argv) == 2
    assert "frontier_threshold" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_resume_after_a_round_that_kept_nothing(tmp_path, write_recipe, run_rounds_main):
    # An essentially untrained model: no label survives the length filter.
    argv = write_recipe(tmp_path, name="empty", num_rounds=1, base_steps=2, base_warmup_steps=0,
                        base_decay_steps=1, learning_rate=1e-6, round_steps=2, round_decay_steps=1,
                        labels_per_round=20, eval_max_level=2, eval_size=5)
    rc, log = _run(run_rounds_main, argv)
    assert rc == 0 and "acc@5 not evaluated (past eval_max_level)" in log  # labels level 5, evaluates 1-2
    summary = [json.loads(line) for line in (tmp_path / "empty" / "summary.jsonl").read_text().splitlines()]
    assert summary[1]["labels"]["kept"] == 0
    rc, log = _run(run_rounds_main, argv)
    assert rc == 0 and "finished" in log


def test_accelerate_launch(tmp_path, write_recipe):
    argv = write_recipe(tmp_path, name="acc", num_rounds=1, base_steps=20, base_warmup_steps=0,
                        base_decay_steps=5, round_steps=5, round_decay_steps=2, labels_per_round=50,
                        eval_max_level=3, eval_size=10)
    accelerate = Path(sys.executable).with_name("accelerate")
    launcher = [str(accelerate)] if accelerate.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    if launcher[-1] != "accelerate.commands.launch":
        launcher.append("launch")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [*launcher, "--config_file", "accelerate_config.yaml", "scripts/run_rounds.py", *argv]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "acc"
    for k in (0, 1):
        assert (out / f"round-{k}" / "eval.json").is_file()
        assert (out / f"round-{k}" / "model" / "model.safetensors").is_file()
    assert not (out / "round-2").exists()
    assert len((out / "summary.jsonl").read_text().splitlines()) == 2
