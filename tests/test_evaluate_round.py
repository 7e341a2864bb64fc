"""scripts/evaluate_round.py on a tiny saved round: integer levels (copy) and pair levels (multiplication)."""

import contextlib
import io
import json
import random
import runpy
import shutil
from pathlib import Path

import pytest
from datasets import Dataset

from si_hf.data import round_features
from si_hf.manifest import write_manifest
from si_hf.tasks import TASKS, Problem, get_task

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = runpy.run_path(str(REPO_ROOT / "scripts" / "evaluate_round.py"))

# Round 0 only, a few steps: the checkpoint and its eval.json are what the script reads.
TINY = {"base_steps": 10, "base_warmup_steps": 0, "base_decay_steps": 5, "base_examples": 160, "batch_size": 16,
        "num_rounds": 0, "eval_size": 8, "eval_min_level": 1}
# Evaluated levels per task: pairs up to 2x2; trees of 10-12 nodes (S and E 9 hops apart); else 1-3.
RANGES = {"multiplication": (1, 2), "maze_nodes": (10, 12)}


@pytest.fixture(scope="module", params=sorted(TASKS))
def saved_round(request, tmp_path_factory, write_recipe, run_rounds_main):
    task = request.param
    root = tmp_path_factory.mktemp(f"evaluate-{task}")
    lo, hi = RANGES.get(task, (1, 3))
    base = {"base_min_level": lo, "base_max_level": hi} if task == "maze_nodes" else {}
    argv = write_recipe(root, name=task, task=task, **{**TINY, **base, "eval_min_level": lo, "eval_max_level": hi})
    with contextlib.redirect_stdout(io.StringIO()):
        assert run_rounds_main(argv) == 0
    return get_task(task), root / task / "round-0"


def _evaluate(round_dir: Path, out: Path, *extra):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = SCRIPT["main"](["--model", str(round_dir / "model"), "--eval_size", "8", "--output_dir", str(out),
                             *extra])
    return rc, buf.getvalue(), json.loads(next(out.glob("*.json")).read_text())


def test_default_levels_reproduce_the_recorded_round(saved_round, tmp_path):
    task, round_dir = saved_round
    recorded = json.loads((round_dir / "eval.json").read_text())
    rc, log, saved = _evaluate(round_dir, tmp_path)
    assert rc == 0, log
    names = [task.level_name(level) for level in task.eval_levels(*RANGES.get(task.name, (1, 3)))]
    assert list(saved["accuracy_by_level"]) == names == list(recorded["accuracy_by_level"])
    # Same held-out sets, same weights, greedy decoding: the numbers of training come back exactly.
    assert saved["accuracy_by_level"] == recorded["accuracy_by_level"]
    assert saved["count_by_level"] == recorded["eval_size_by_level"]
    assert saved["frontier"] == recorded["frontier"]
    assert saved["task"] == task.name
    assert "| level | problems | exact match | recorded in training |" in log
    assert all(f"| {name} | {saved['count_by_level'][name]} |" in log for name in names)
    md = next(tmp_path.glob("*.md")).read_text()
    assert md.count("\n| ") == len(names) + 1


def test_levels_given_as_a_range_or_as_names(saved_round, tmp_path):
    task, round_dir = saved_round
    lo, hi = RANGES.get(task.name, (1, 3))
    given = "1x2,2x1" if task.pair_levels else f"{hi},{lo}"
    rc, log, saved = _evaluate(round_dir, tmp_path / "names", "--levels", given)
    assert rc == 0, log
    assert list(saved["accuracy_by_level"]) == given.split(",")
    rc, log, saved = _evaluate(round_dir, tmp_path / "range", "--levels", f"{hi}-{hi}")
    assert rc == 0, log
    assert list(saved["accuracy_by_level"]) == [f"{hi}x{hi}" if task.pair_levels else str(hi)]


def test_level_names_parse_back_through_the_task():
    copy, multiplication = get_task("copy"), get_task("multiplication")
    assert SCRIPT["parse_level"](copy, "12") == 12
    assert SCRIPT["parse_level"](multiplication, "4x5") == (4, 5)
    for task in (copy, multiplication):
        for level in task.eval_levels(1, 3):
            assert SCRIPT["parse_level"](task, task.level_name(level)) == level
    assert SCRIPT["parse_levels"](multiplication, "1-2") == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert SCRIPT["parse_levels"](copy, "2-4") == [2, 3, 4]
    for task, bad in ((copy, "4x5"), (copy, "x"), (multiplication, "4"), (multiplication, "4x")):
        with pytest.raises(ValueError, match="is not a level name"):
            SCRIPT["parse_level"](task, bad)
    with pytest.raises(ValueError, match="levels must look like 1-20"):
        SCRIPT["parse_levels"](copy, "5-2")


def test_a_bad_levels_argument_is_a_usage_error(saved_round, tmp_path, capsys):
    task, round_dir = saved_round
    with pytest.raises(SystemExit) as exit_info:
        SCRIPT["main"](["--model", str(round_dir / "model"), "--levels", "4y5", "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "argument --levels" in capsys.readouterr().err


ERRORS = runpy.run_path(str(REPO_ROOT / "scripts" / "addition_errors.py"))


def _printed_rows(main, argv) -> list[list[str]]:
    """The body rows of the Markdown table an analysis script prints, split into cells."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(argv)
    return [line.split(" | ") for line in buf.getvalue().splitlines()[2:]]


def test_addition_errors_counts_carry_errors_at_a_nine_run():
    forward, reverse = get_task("forward_addition"), get_task("reverse_addition")
    problems = [Problem(4, (1234, 4567)), Problem(4, (1234, 4321)), Problem(4, (1295, 4305))]
    # 5801 is right; 5565 for 5555 is one carry off at the tens, over 4+1; 5500 for 5600 is one carry off at
    # the hundreds, over 9+0 (a run of one) and 5+5.
    assert ERRORS["nine_run_below"](1295, 4305, 2) == 1
    assert ERRORS["nine_run_below"](1234, 4321, 2) == 0
    row = ERRORS["error_row"](forward, problems, ["5801", "5565", "5500"])
    assert row == {"problems": 3, "wrong": 2, "off by one carry": 2, "with a 9-run below": 1}
    rev = ERRORS["error_row"](reverse, problems[2:], ["00560"])  # truth 00650: the hundreds again, last digit first
    assert rev == {"problems": 1, "wrong": 1, "off by one carry": 1, "with a 9-run below": 1}
    for malformed in ("58011", "58+1"):  # a wrong length, a character that is not a digit
        assert ERRORS["error_row"](forward, problems[:1], [malformed]) == {
            "problems": 1, "wrong": 1, "off by one carry": 0, "with a 9-run below": 0}
    with pytest.raises(SystemExit):
        ERRORS["main"](["--model", "unused", "--levels", "6,eight"])


def test_addition_errors_counts_wrong_sums_by_their_longest_nine_run():
    assert ERRORS["longest_nine_run"](1234, 4321) == 0
    assert ERRORS["longest_nine_run"](1295, 4305) == 1  # 9+0 at the hundreds, between 5+5 and 2+3
    assert ERRORS["longest_nine_run"](45127, 54872) == 5  # every place sums to 9
    assert ERRORS["longest_nine_run"](91, 8) == 2  # 1+8, then 9 over the missing digit, a 0
    problems = [Problem(4, (1234, 4321)), Problem(4, (1295, 4305)),
                Problem(4, (4512, 5487)), Problem(5, (45127, 54872))]
    truths = ["5555", "5600", "9999", "99999"]
    rows = ERRORS["nine_run_rows"](problems, ["5555", "5500", "9999", "99998"], truths, cap=4)
    assert rows == [{"longest 9-run": "0", "problems": 1, "wrong": 0},
                    {"longest 9-run": "1", "problems": 1, "wrong": 1},
                    {"longest 9-run": "4+", "problems": 2, "wrong": 1}]


def test_addition_errors_reads_a_saved_round(saved_round):
    task, round_dir = saved_round
    argv = ["--model", str(round_dir / "model"), "--levels", "2,3", "--eval_size", "8", "--num_threads", "1"]
    if not task.plants_carry_runs:
        with pytest.raises(SystemExit, match=f"{task.name} is not an addition task"):
            ERRORS["main"](argv)
        return
    rows = _printed_rows(ERRORS["main"], argv)
    assert [row[0] for row in rows] == ["| 2", "| 3"] and all(row[1] == "8" for row in rows)
    by_run = _printed_rows(ERRORS["main"], argv + ["--by_nine_run"])
    for level in ("| 2", "| 3"):  # each level's rows count its 8 problems once
        assert sum(int(row[2]) for row in by_run if row[0] == level) == 8


MAZE_ERRORS = runpy.run_path(str(REPO_ROOT / "scripts" / "maze_errors.py"))


def test_maze_errors_sorts_wrong_paths_by_where_they_leave_the_true_one():
    prompt, truth = "5>3#12:5,3,7-3:12,9-7:12-5:12-9:3=", "5>12>3"  # the path 5-12-3, 7 on 12, 9 on 3
    kinds = {"5>12>3": "right", "7>12>3": "wrong start", "5>12>7": "turns along an edge",
             "5>3": "jumps to E", "5>9>3": "jumps to a neighbor of E", "5>7>3": "jumps elsewhere",
             "5>12": "stops short of E", "5>12>3>12": "runs past E", "5>>3": "malformed"}
    for completion, kind in kinds.items():
        assert MAZE_ERRORS["error_kind"](prompt, completion, truth) == kind, completion
    row = MAZE_ERRORS["error_row"]([prompt] * 3, ["5>12>3", "5>3", "5>3"], [truth] * 3)
    assert row["problems"] == 3 and row["right"] == 1 and row["jumps to E"] == 2
    assert row[MAZE_ERRORS["HUB"]] == 3  # E=3's neighbors: 12 (3 neighbors) on the path, 9 (1) off it
    assert not MAZE_ERRORS["hub_is_next_to_end"]("5>3#12:5,3-3:12,9-9:3,7-7:9-5:12=", "5>12>3")  # 12 and 9 tie
    assert sum(row[k] for k in MAZE_ERRORS["KINDS"]) == 3
    with pytest.raises(SystemExit):
        MAZE_ERRORS["main"](["--model", "unused", "--levels", "2,three"])


def test_maze_errors_counts_right_answers_by_the_degree_before_end():
    low = "5>3#12:5,3-3:12-5:12=", "5>12>3"  # 12, before E=3, has 2 neighbors
    high = "5>3#12:5,3,7-3:12,9-7:12-5:12-9:3=", "5>12>3"  # here 3
    assert MAZE_ERRORS["degree_before_end"](*low) == 2 and MAZE_ERRORS["degree_before_end"](*high) == 3
    prompts, truths = [high[0], low[0], high[0]], [high[1], low[1], high[1]]
    rows = MAZE_ERRORS["right_by"](MAZE_ERRORS["degree_before_end"], prompts, ["5>12>3", "5>3", "5>7>3"], truths)
    assert rows == {2: [0, 1], 3: [1, 2]} and list(rows) == [2, 3]


def test_maze_errors_measures_the_deepest_side_branch_off_the_path():
    depth = MAZE_ERRORS["branch_depth"]
    assert depth("5>3#12:5,3-3:12-5:12=", "5>12>3") == 0  # a bare path
    assert depth("5>3#12:5,3,7-3:12,9-7:12-5:12-9:3=", "5>12>3") == 1  # 7 on 12; 9 hangs off E, not counted
    deep = "5>3#12:5,3,7-3:12-7:12,8-8:7,4-4:8-5:12,6-6:5=", "5>12>3"  # 12-7-8-4 and 5-6
    assert depth(*deep) == 3
    rows = MAZE_ERRORS["right_by"](depth, [deep[0], "5>3#12:5,3-3:12-5:12="], ["5>12>3", "5>3"], [deep[1], "5>12>3"])
    assert rows == {0: [0, 1], 3: [1, 1]}


def test_maze_errors_reads_a_saved_round(saved_round):
    task, round_dir = saved_round
    lo, hi = RANGES.get(task.name, (1, 3))
    argv = ["--model", str(round_dir / "model"), "--levels", f"{lo},{hi}", "--eval_size", "8", "--num_threads", "1"]
    if not task.name.startswith("maze"):
        with pytest.raises(SystemExit, match=f"{task.name} is not a maze task"):
            MAZE_ERRORS["main"](argv)
        return
    rows = _printed_rows(MAZE_ERRORS["main"], argv)
    assert [row[0] for row in rows] == [f"| {lo}", f"| {hi}"]
    for row in rows:  # every one of a level's 8 answers falls in exactly one kind
        assert row[1] == "8" and sum(int(cell.strip(" |")) for cell in row[2:-1]) == 8
    by_degree = _printed_rows(MAZE_ERRORS["main"], [*argv, "--by_degree"])
    by_depth = _printed_rows(MAZE_ERRORS["main"], [*argv, "--by_branch_depth"])
    for level in (lo, hi):  # each level's 8 problems counted once across its degrees, and its depths
        assert sum(int(row[2]) for row in by_degree if row[0] == f"| {level}") == 8
        assert sum(int(row[2]) for row in by_depth if row[0] == f"| {level}") == 8


KEPT = runpy.run_path(str(REPO_ROOT / "scripts" / "kept_nine_runs.py"))


def _kept_run(tmp_path, task_name, prompts_by_round, unfinished=()) -> Path:
    """A run directory with a recipe and each round's kept rows (round 0, the base's data, left out);
    the rounds in `unfinished` get no manifest."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(f"task: {task_name}\n")
    task = get_task(task_name)
    for k, prompts in prompts_by_round.items():
        rows = [{"prompt": p, "completion": "0", "level": task.parse(p).level, "round": k, "correct": True}
                for p in prompts]
        Dataset.from_list(rows, features=round_features(task)).save_to_disk(str(run / f"round-{k}" / "data"))
        if k not in unfinished:
            write_manifest(run / f"round-{k}", k, {})
    return run


def test_kept_nine_runs_compares_kept_sums_with_fresh_draws(tmp_path):
    # 12+34: no 9-pair; 45+54: two places summing to 9; 19+70: one (9+0 at the ones).
    run = _kept_run(tmp_path, "forward_addition", {1: ["12+34=", "45+54=", "19+70="], 2: ["123+456="],
                                                   3: ["1234+5678="]}, unfinished={3})
    rows = _printed_rows(KEPT["main"], ["--run", str(run), "--draws", "50"])
    kept = [row for row in rows if row[2] == "kept"]
    # round 3 has no manifest: not finished, not counted
    assert [(row[0], row[1], row[3]) for row in kept] == [("| 1", "2", "3"), ("| 2", "3", "1")]
    assert kept[0][4:] == ["0.333", "0.333", "0.333", "0.000 |"]
    fresh = [row for row in rows if row[2] == "fresh draws"]
    assert [row[3] for row in fresh] == ["50", "50"]
    assert abs(sum(float(x.strip(" |")) for x in fresh[0][4:]) - 1) < 1e-6
    assert rows == _printed_rows(KEPT["main"], ["--run", str(run), "--draws", "50"])  # the same draws each time


def test_kept_nine_runs_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(SystemExit, match="no recipe.yaml"):
        KEPT["main"](["--run", str(tmp_path)])
    run = _kept_run(tmp_path, "copy", {})
    with pytest.raises(SystemExit, match="copy is not an addition task"):
        KEPT["main"](["--run", str(run)])
    (run / "recipe.yaml").write_text("task: forward_addition\n")
    with pytest.raises(SystemExit, match="no finished round past round 0"):
        KEPT["main"](["--run", str(run)])


SHAPES = runpy.run_path(str(REPO_ROOT / "scripts" / "multiplication_shapes.py"))


def test_multiplication_shapes_sorts_answers_by_the_pair_whose_template_they_fit():
    task = get_task("multiplication")
    problem = Problem((2, 2), (12, 34))
    assert task.answer(problem) == "840+0630=8040"  # 12*4 and 12*30, reversed and padded; 408 reversed
    answers = ["840+0630=8040", "841+0630=8041", "84+063=804", "840=840", "84=84", "840+063=8040"]
    assert [SHAPES["shape_of"](a, 2, 2) for a in answers] == [
        "own shape", "own shape", "a one digit shorter", "b one digit shorter", "both one digit shorter", "other"]
    assert SHAPES["shape_of"]("84=84", 2, 1) == "a one digit shorter"  # (1, 0) is no pair: never "both"
    assert SHAPES["shape_row"](task, [problem] * len(answers), answers) == {
        "problems": 6, "right": 1, "own shape": 2, "a one digit shorter": 1, "b one digit shorter": 1,
        "both one digit shorter": 1, "other": 1}
    for malformed in ("4x", "4x1,0x2", "4x1x2", ""):
        with pytest.raises(SystemExit):
            SHAPES["main"](["--model", "unused", "--pairs", malformed])


def test_multiplication_shapes_reads_a_saved_round(saved_round):
    task, round_dir = saved_round
    argv = ["--model", str(round_dir / "model"), "--pairs", "2x1,1x3", "--eval_size", "8", "--num_threads", "1"]
    if task.name != "multiplication":
        with pytest.raises(SystemExit, match=f"{task.name} is not multiplication"):
            SHAPES["main"](argv)
        return
    rows = _printed_rows(SHAPES["main"], argv)
    assert [row[0] for row in rows] == ["| 2x1", "| 1x3"]
    for row in rows:  # every answer counted once, under exactly one shape
        counts = [int(x.strip(" |")) for x in row[1:]]
        assert counts[0] == 8 and sum(counts[2:]) == 8 and counts[1] <= counts[2]


LABEL_ERRORS = runpy.run_path(str(REPO_ROOT / "scripts" / "multiplication_label_errors.py"))


def test_label_errors_counts_wrong_products_by_hand():
    task = get_task("multiplication")
    prompt = task._mul_prompt(12, 34)  # truth 840+0630=8040
    rows = [{"prompt": prompt, "completion": "840+0630=8040", "correct": True},
            {"prompt": prompt, "completion": "840+0630=8041", "correct": False},   # only the product
            {"prompt": prompt, "completion": "841+0630=8041", "correct": False}]   # a partial product too
    assert LABEL_ERRORS["error_row"](task, rows) == {
        "kept": 3, "wrong": 2, "only the product wrong": 1, "recomposed": "-", "recomposed right": "-"}
    assert LABEL_ERRORS["error_row"](task, rows, ["840+0630=8040", "", "841+0630=8041"]) == {
        "kept": 3, "wrong": 2, "only the product wrong": 1, "recomposed": 2, "recomposed right": 1}


def test_label_errors_reads_a_self_labeled_round(saved_round, tmp_path):
    """A round 1 written beside a copy of the saved round 0 (pairs one digit past its 2x2 square): the
    script counts its rows per pair and relabels them with round 0's model."""
    task, round_dir = saved_round
    run = tmp_path / "run"
    shutil.copytree(round_dir, run / "round-0")
    shutil.copy(round_dir.parent / "recipe.yaml", run / "recipe.yaml")
    argv = ["--round_dir", str(run / "round-1"), "--recompose", "--num_threads", "1"]
    with pytest.raises(SystemExit, match="not a finished round-<k> directory"):  # round 1 is not written yet
        LABEL_ERRORS["main"](argv)
    (run / "round-1" / "data").mkdir(parents=True)
    if task.name != "multiplication":
        with pytest.raises(SystemExit, match="not a self-labeled round"):
            LABEL_ERRORS["main"](argv)
        return
    rng = random.Random(0)
    problems = [task.sample(level, rng) for level in [(1, 3), (1, 3), (3, 2)]]
    answers = [task.answer(p) for p in problems]
    answers[1] = answers[1][:-1] + str((int(answers[1][-1]) + 1) % 10)  # a wrong top digit
    rows = {"prompt": [task.prompt(p) for p in problems], "completion": answers,
            "level": [list(p.level) for p in problems], "round": [1, 1, 1], "correct": [True, False, True]}
    Dataset.from_dict(rows, features=round_features(task)).save_to_disk(run / "round-1" / "data")
    rows = _printed_rows(LABEL_ERRORS["main"], argv)
    assert [row[:4] for row in rows] == [["| 1x3", "2", "1", "1"], ["| 3x2", "1", "0", "0"]]
    for row in rows:
        recomposed, right = int(row[4]), int(row[5].strip(" |"))
        assert right <= recomposed <= int(row[1])


COMPOSE_SCREEN = runpy.run_path(str(REPO_ROOT / "scripts" / "compose_screen.py"))


def test_compose_screen_reads_a_saved_round(saved_round):
    task, round_dir = saved_round
    _, hi = RANGES.get(task.name, (1, 3))
    argv = ["--model", str(round_dir / "model"), "--levels", f"{hi}", "--eval_size", "8", "--num_threads", "1"]
    if task.pair_levels or not task.has_pieces:
        with pytest.raises(SystemExit, match="a task with pieces and whole-number levels"):
            COMPOSE_SCREEN["main"](argv)
        return
    [row] = _printed_rows(COMPOSE_SCREEN["main"], argv)
    level, problems, own, dropped, dropped_right, composed, composed_right = (int(c.strip(" |")) for c in row)
    assert (level, problems) == (hi, 8) and own <= 8
    assert dropped_right <= dropped <= composed <= 8 and composed_right <= composed
    if not task.composes_around_unfinished:  # the two ways differ only where a task composes around them
        assert (dropped, dropped_right) == (composed, composed_right)
