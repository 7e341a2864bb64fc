"""Majority vote over seed lineages, the accelerated schedule, the stop rules and label corruption:
the pure decisions, then micro runs of the loop (seconds each on one thread)."""

import contextlib
import io
import json
import random
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk
from synthetic_records import round_record

from conftest import SMALL
from si_hf import SIForCausalLM
from si_hf.cards import plot_level_map, plot_summary, summary_table
from si_hf.config import RESUMABLE_CHANGES, RecipeError, parse_recipe
from si_hf.corruption import corrupt_completion, corrupt_completions
from si_hf.filters import select_labels
from si_hf.labeling import Label, greedy_label
from si_hf.rounds import check_output_dir
from si_hf.schedule import accelerated_stages, level_rank, stop_decision
from si_hf.tasks import get_task
from si_hf.tokenization import task_tokenizer


def _run(main, argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def _records(out):
    return [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]


# -- majority vote ---------------------------------------------------------------------------------

def test_voted_data_keeps_only_agreeing_labels():
    task = get_task("copy")
    prompts = ["12345=", "54321=", "11111=", "22222=", "33333="]
    outputs = [
        ["12345", "54321", "11111", "22222", "3333"],
        ["12345", "54320", "11111", "22222!", "3333"],
        ["12345", "54321", "11112", "22222!", "3333"],
    ]  # a trailing `!`: the model did not finish (no EOS)
    sets = [[Label(p, o.rstrip("!"), not o.endswith("!")) for p, o in zip(prompts, row)] for row in outputs]
    labels, keep, stats, masks = select_labels(task, sets, ["length", "majority_vote:tau=0.6"])
    # 2 of 3 agree on 0, 1, 2 and 4 (4 is one digit short: the length filter drops it); 3 has one vote
    assert [lab.completion for lab in labels] == ["12345", "54321", "11111", "22222", "3333"]
    assert keep == [True, True, True, False, False]
    assert [s["filter"] for s in stats] == ["majority_vote:tau=0.6", "length"]  # the vote runs first
    assert (stats[0]["in"], stats[0]["out"], stats[0]["models"], stats[0]["min_votes"]) == (5, 4, 3, 2)
    assert stats[1] == {"filter": "length", "in": 4, "out": 3}
    assert masks == [[True, True, True, False, True], keep]
    # unanimity: only what all three wrote
    _, keep, _, _ = select_labels(task, sets, ["majority_vote:tau=1.0"])
    assert keep == [True, False, False, False, True]
    # one model without a vote passes through; several without one are refused
    labels, keep, stats, masks = select_labels(task, sets[:1], ["length"])
    assert labels == sets[0] and keep == [True, True, True, True, False] and masks == [keep]
    assert select_labels(task, sets[:1], [])[1] == [True] * 5
    with pytest.raises(ValueError, match="majority_vote"):
        select_labels(task, sets, ["length"])


def test_vote_recipe_validation():
    assert parse_recipe(["--num_seeds", "3", "--filters", "majority_vote:tau=0.6", "length"]).num_seeds == 3
    with pytest.raises(RecipeError, match="needs num_seeds"):
        parse_recipe(["--filters", "majority_vote"])
    with pytest.raises(RecipeError, match="majority_vote filter"):
        parse_recipe(["--num_seeds", "2"])
    with pytest.raises(RecipeError, match="at most one"):
        parse_recipe(["--num_seeds", "2", "--filters", "majority_vote", "majority_vote:tau=1"])
    with pytest.raises(RecipeError, match="tau"):
        parse_recipe(["--num_seeds", "2", "--filters", "majority_vote:tau=1.5"])
    vote_from = ["--num_seeds", "2", "--filters", "majority_vote", "--init_from", "runs/a@round-1"]
    assert parse_recipe(vote_from + ["--lineages_from", "runs/b@round-1"]).lineages_from == ["runs/b@round-1"]
    for extra, message in [([], "needs 1 other runs' rounds"),
                           (["--lineages_from", "runs/b@round-2"], "not the round"),
                           (["--lineages_from", "runs/b"], "REPO@round-<k>")]:
        with pytest.raises(RecipeError, match=message):
            parse_recipe(vote_from + extra)
    with pytest.raises(RecipeError, match="needs init_from"):
        parse_recipe(["--lineages_from", "runs/b@round-1"])
    for argv, field in [(["--schedule", "fastest"], "schedule"), (["--probe_size", "0"], "probe_size"),
                        (["--stop_patience", "0"], "stop_patience"), (["--collapse_floor", "1.5"], "collapse_floor"),
                        (["--final_stage", "0"], "final_stage"),
                        (["--corrupt_round", "0"], "corrupt_round"), (["--corrupt_fraction", "2"], "corrupt_fraction"),
                        (["--corrupt_mode", "shuffle"], "corrupt_mode"),
                        (["--min_kept_fraction", "1.5"], "min_kept_fraction")]:
        with pytest.raises(RecipeError, match=field):
            parse_recipe(argv)


def test_vote_micro_run_keeps_lineages(recipe_factory, run_rounds_main):
    # The vote alone (a micro model's agreed outputs rarely pass the length filter too): unanimity of 2.
    argv = recipe_factory(**SMALL, num_seeds=2, filters=["majority_vote:tau=1.0"], eval_all_seeds=True,
                          num_rounds=1)
    out = Path(argv[-1])
    rc, log = _run(run_rounds_main, argv)
    assert rc == 0, log
    # Resuming loads both lineages and goes on with both.
    rc, log = _run(run_rounds_main, argv + ["--num_rounds", "2"])
    assert rc == 0, log
    assert "Resuming" in log and "continuing with round 2" in log
    for k in range(3):
        assert (out / f"round-{k}" / "model" / "model.safetensors").is_file()
        assert (out / f"round-{k}" / "models" / "seed-1" / "model.safetensors").is_file()
        assert not (out / f"round-{k}" / "models" / "seed-2").exists()
    tok = task_tokenizer(get_task("copy"))
    seed0 = SIForCausalLM.from_pretrained(out / "round-0" / "model")
    seed1 = SIForCausalLM.from_pretrained(out / "round-0" / "models" / "seed-1")
    assert not all((a == b).all() for a, b in zip(seed0.parameters(), seed1.parameters()))  # other init

    # Round 1's data: exactly the labels both round-0 lineages wrote (tau 1.0 of 2 models).
    data = load_from_disk(str(out / "round-1" / "data"))
    rec = _records(out)[1]
    vote = rec["labels"]["filters"][0]
    assert (vote["filter"], vote["models"], vote["min_votes"], vote["in"]) == ("majority_vote:tau=1.0", 2, 2, 64)
    assert len(vote["seed_label_accuracy"]) == 2 and "label_accuracy" in vote
    assert rec["labels"]["kept"] == vote["out"] == len(data) > 0
    prompts = data["prompt"]
    bounds = [len(p) - 1 for p in prompts]
    for model in (seed0, seed1):
        labels = greedy_label(model, tok, prompts, bounds)
        assert [lab.completion for lab in labels] == data["completion"] and all(lab.finished for lab in labels)
    for rec in _records(out):
        assert len(rec["seed_accuracy_by_level"]) == 1 and len(rec["seed_frontier"]) == 1
        assert len(rec["seed_train_loss"]) == 1
    assert len(_records(out)) == 3


# -- schedules -------------------------------------------------------------------------------------

@pytest.mark.parametrize("passed,expected", [
    ([], [4]),                                 # nothing probed: plus one
    ([False], [4]),                            # the first fails: still one
    ([True], [4]),
    ([True, True, False], [4, 5]),             # consecutive passing stages
    ([True, False, True], [4]),                # a pass after a failure does not count
    ([True, True, True], [4, 5, 6]),           # all probed stages pass (the probe's cap)
])
def test_accelerated_stages_takes_consecutive_passing_levels(passed, expected):
    probed = [{f"{4 + j}": 1.0 if ok else 0.5} for j, ok in enumerate(passed)]
    assert accelerated_stages(3, probed, 0.99) == expected


def test_accelerated_stages_need_every_level_of_a_stage():
    pairs = [{(1, 5): 1.0, (5, 1): 0.995}, {(2, 5): 1.0, (5, 2): 0.98}]
    assert accelerated_stages(4, pairs, 0.99) == [5]
    assert accelerated_stages(4, pairs, 0.98) == [5, 6]


def test_accelerated_micro_run(recipe_factory, run_rounds_main):
    # Threshold 0: every probed stage passes, so each round takes probe_max_levels of them.
    argv = recipe_factory(**SMALL, schedule="accelerated", probe_size=8, probe_max_levels=2,
                          frontier_threshold=0.0, num_rounds=1)
    out = Path(argv[-1])
    rc, log = _run(run_rounds_main, argv)
    assert rc == 0, log
    rc, log = _run(run_rounds_main, argv + ["--num_rounds", "2"])  # the stage reached survives resuming
    assert rc == 0, log
    records = _records(out)
    assert [r["stage"] for r in records] == [0, 2, 4]
    assert [r["levels_trained"] for r in records] == ["1-4", "5&6", "7&8"]
    for k, levels in [(1, {5, 6}), (2, {7, 8})]:
        rec = records[k]
        assert set(rec["probe"]["accuracy_by_level"]) == {str(lvl) for lvl in levels}
        assert rec["probe"]["size"] == 8 and rec["probe"]["stages_taken"] == 2
        assert rec["labels"]["labeled"] == 2 * 64  # labels_per_round per level
        data = load_from_disk(str(out / f"round-{k}" / "data"))
        assert set(data["level"]) <= levels


def test_a_stage_that_keeps_too_few_labels_is_labeled_again(recipe_factory, run_rounds_main):
    """A filter that keeps nothing (no model is that sure of every token) under min_kept_fraction 0.5: round
    1 counts no stage as trained, so round 2 labels the same level again."""
    argv = recipe_factory(**SMALL, filters=["confidence:threshold=1.0"], min_kept_fraction=0.5, num_rounds=2)
    rc, log = _run(run_rounds_main, argv)
    assert rc == 0, log
    records = _records(Path(argv[-1]))
    assert records[1]["labels"]["kept"] < records[1]["labels"]["labeled"]
    assert [r["stage"] for r in records] == [0, 0, 0]
    assert [r["levels_trained"] for r in records] == ["1-4", "5", "5"]
    assert "the next round labels 5 again" in log


# -- stop rules ------------------------------------------------------------------------------------

def _rec(k, front, accs=None):
    return round_record(k, front, accs)


def test_stop_patience():
    fronts = [4, 5, 5, 5]
    summary = [_rec(k, f) for k, f in enumerate(fronts)]
    assert stop_decision(summary) is None
    assert stop_decision(summary[:2], patience=1) is None           # moved 4 -> 5
    assert stop_decision(summary[:3], patience=1)["rule"] == "stop_patience"
    assert stop_decision(summary[:3], patience=2) is None           # 4 -> 5 within the last 2 rounds
    stopped = stop_decision(summary, patience=2)
    assert stopped["rule"] == "stop_patience" and stopped["round"] == 3 and "5" in stopped["reason"]
    assert stop_decision(summary[:1], patience=1) is None           # round 0 alone: nothing to compare
    # a frontier that falls and comes back has not moved past its best
    assert stop_decision([_rec(0, 6), _rec(1, 3), _rec(2, 6)], patience=2)["rule"] == "stop_patience"


def test_collapse_floor():
    prev = _rec(0, 5, {str(n): 1.0 for n in range(1, 8)})
    fine = _rec(1, 6, {**prev.accuracy_by_level, "6": 0.995, "7": 0.1})
    fallen = _rec(1, 2, {**prev.accuracy_by_level, "3": 0.4})
    assert stop_decision([prev, fine], collapse_floor=0.5) is None  # level 7 is outside frontier 5
    stopped = stop_decision([prev, fallen], collapse_floor=0.5)
    assert stopped["rule"] == "collapse_floor" and "3: 0.400" in stopped["reason"]
    assert stop_decision([prev, fallen], collapse_floor=0.3) is None
    assert stop_decision([fallen], collapse_floor=0.9) is None      # no previous round
    # pair levels: inside a square frontier n means max(a, b) <= n
    assert level_rank("4x5") == 5 and level_rank("12") == 12
    pairs = [_rec(0, 3, {"1x3": 1.0}), _rec(1, 3, {"1x3": 0.2, "4x1": 0.0})]
    assert stop_decision(pairs, collapse_floor=0.5)["reason"].endswith("(1x3: 0.200)")


def test_final_stage():
    summary = [round_record(k, 4, stage=k) for k in range(3)]
    assert stop_decision(summary[:2], final_stage=2) is None
    stopped = stop_decision(summary, final_stage=2)
    assert stopped == {"rule": "final_stage", "round": 2, "reason": "the highest stage trained is 2 (final_stage 2)"}
    assert stop_decision(summary, final_stage=3) is None
    assert stop_decision(summary, final_stage=1)["rule"] == "final_stage"  # lowered on a rerun: stop at once
    held = round_record(3, 4, stage=2)  # a round whose stage kept too little is not a new stage
    assert stop_decision(summary + [held], final_stage=3) is None
    fallen = round_record(2, 0, {"1": 0.0}, stage=2)  # the collapse rule is checked first
    assert stop_decision(summary[:2] + [fallen], collapse_floor=0.5, final_stage=2)["rule"] == "collapse_floor"


def test_a_run_stops_once_its_final_stage_is_trained(recipe_factory, run_rounds_main):
    """final_stage 2 under +1 a round: round 2 trains stage 2 and is the last, evaluated on the full sets;
    a rerun trains nothing more until the rule changes."""
    argv = recipe_factory(**SMALL, final_stage=2, num_rounds=4, round_eval_size=5)
    out = Path(argv[-1])
    rc, log = _run(run_rounds_main, argv)
    assert rc == 0, log
    records = _records(out)
    assert [r["stage"] for r in records] == [0, 1, 2] and not (out / "round-3").exists()
    assert records[2]["stopped"]["rule"] == "final_stage"
    assert "stopping (final_stage)" in log
    sizes = [{lvl: rec["eval_size_by_level"][lvl] for lvl in ("4", "5")} for rec in records]
    assert sizes == [{"4": 5, "5": 5}, {"4": 5, "5": 5}, {"4": 20, "5": 20}]
    rc, log = _run(run_rounds_main, argv)
    assert rc == 0 and "stopped after round 2 (final_stage)" in log and "continuing" not in log, log
    assert not (out / "round-3").exists()


def test_stop_and_corruption_micro_run(recipe_factory, run_rounds_main):
    # Threshold 0: the frontier is the highest evaluated level from round 0 on, so it cannot move.
    # No filter: every label is kept, so half of the 64 are corrupted.
    argv = recipe_factory(**SMALL, frontier_threshold=0.0, stop_patience=1, num_rounds=3, filters=[],
                          corrupt_round=1, corrupt_fraction=0.5, corrupt_mode="perturb_tail")
    out = Path(argv[-1])
    rc, log = _run(run_rounds_main, argv)
    assert rc == 0, log
    records = _records(out)
    assert [r["round"] for r in records] == [0, 1] and not (out / "round-2").exists()
    assert records[0]["stopped"] is None
    assert records[1]["stopped"]["rule"] == "stop_patience" and records[1]["stopped"]["round"] == 1
    assert "stopping (stop_patience)" in log
    assert "Stopped after round 1 (stop_patience)" in (out / "summary.md").read_text()
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "summary_levels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    labels = records[1]["labels"]
    corruption = labels["corruption"]
    assert corruption["mode"] == "perturb_tail" and corruption["fraction"] == 0.5
    assert labels["kept"] == 64 and corruption["corrupted"] == 32
    assert 0 <= corruption["changed"] <= 32  # a completion without a digit stays as it is
    assert f"corrupted {corruption['corrupted']}/{labels['kept']} kept labels" in log
    assert "corrupted on purpose (perturb_tail" in (out / "summary.md").read_text()
    data = load_from_disk(str(out / "round-1" / "data"))
    assert sum(data["correct"]) == round(labels["label_accuracy_kept"] * len(data))

    # A rerun with the rule still set stays stopped and trains nothing.
    rc, log = _run(run_rounds_main, argv)
    assert rc == 0 and "stopped after round 1" in log and "train_runtime" not in log
    assert len(_records(out)) == 2


# -- corruption ------------------------------------------------------------------------------------

def test_corruption_modes():
    rng = random.Random(0)
    cot = "83680+040470(876280)+0007160=8769960"
    for _ in range(20):
        noisy = corrupt_completion(cot, "digits", rng)
        assert len(noisy) == len(cot) and get_task("multiplication").plausible("4321*765=", noisy)
        assert [c for c in noisy if not c.isdigit()] == [c for c in cot if not c.isdigit()]
    assert corrupt_completion("12345", "drop_tail", rng) == "1234"
    assert corrupt_completion("12=34)", "drop_tail", rng) == "12=3)"  # the last digit, not the last character
    for _ in range(20):
        out = corrupt_completion("12340", "perturb_tail", rng)
        assert out[:-1] == "1234" and out[-1] in "91"  # 0 - 1 wraps to 9
    assert corrupt_completion("", "perturb_tail", rng) == "" and corrupt_completion(">", "drop_tail", rng) == ">"
    with pytest.raises(ValueError, match="corrupt_mode"):
        corrupt_completion("1", "reverse", rng)


def test_corrupt_completions_fraction_and_seed():
    texts = [f"{i:05d}" for i in range(40)]
    out, chosen = corrupt_completions(texts, 0.25, "perturb_tail", random.Random(3))
    assert len(chosen) == 10 and chosen == sorted(set(chosen))
    assert [i for i, (a, b) in enumerate(zip(texts, out)) if a != b] == chosen
    assert corrupt_completions(texts, 0.25, "perturb_tail", random.Random(3)) == (out, chosen)
    assert corrupt_completions(texts, 0.0, "digits", random.Random(3)) == (texts, [])
    assert corrupt_completions([], 0.5, "digits", random.Random(3)) == ([], [])
    with pytest.raises(ValueError, match="corrupt_fraction"):
        corrupt_completions(texts, 1.5, "digits", random.Random(3))


# -- records ---------------------------------------------------------------------------------------

def test_summary_notes_and_plot():
    labels = {"label_accuracy_kept": 0.5, "corruption": {"mode": "digits", "fraction": 0.5, "corrupted": 4,
                                                         "changed": 4, "label_accuracy_kept_before": 1.0}}
    summary = [
        round_record(0, 4, {"4": 1.0}),
        round_record(1, 4, {"4": 1.0}, labels, stopped={"rule": "stop_patience", "round": 1, "reason": "stuck"}),
    ]
    md = summary_table(summary)
    assert "Round 1: 4 kept labels corrupted on purpose (digits, fraction 0.5)." in md
    assert md.rstrip().endswith("Stopped after round 1 (stop_patience): stuck.")
    assert "Stopped" not in summary_table(summary[:1])
    png = plot_summary(summary)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and plot_summary(summary) == png
    level_map = plot_level_map(summary)
    assert level_map[:8] == png[:8] and plot_level_map(summary) == level_map != png


def test_a_run_older_than_the_new_fields_still_resumes(tmp_path):
    recipe = parse_recipe(["--output_dir", str(tmp_path)])
    old = {k: v for k, v in recipe.to_dict().items()
           if k not in ("num_seeds", "schedule", "probe_size", "corrupt_mode", "corrupt_fraction")}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(old))
    check_output_dir(recipe)  # missing fields count as their defaults
    with pytest.raises(RecipeError, match="schedule"):
        check_output_dir(parse_recipe(["--output_dir", str(tmp_path), "--schedule", "accelerated"]))
    assert {"stop_patience", "collapse_floor"} <= set(RESUMABLE_CHANGES)


def test_kept_label_accuracy_is_that_of_the_rows_trained_on_after_a_corruption():
    """After the filters, the kept rows as trained on (corrupted ones wrong) decide label_accuracy_kept; each
    filter step keeps the accuracy of what it kept before any corruption."""
    from si_hf.rounds import label_accuracy

    labels = [Label(f"{i}=", str(i), True) for i in range(4)]
    steps = [{"filter": "length", "in": 4, "out": 4}]
    stats = label_accuracy(labels, [str(i) for i in range(4)], [labels], steps, [[True] * 4],
                           kept_correct=[True, False, True, False])  # two kept labels corrupted
    assert stats["label_accuracy_kept"] == 0.5 and steps[0]["label_accuracy"] == 1.0
