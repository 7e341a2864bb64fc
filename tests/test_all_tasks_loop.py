"""Every task's tiny recipe, shrunk to seconds, runs 2 self-improvement rounds end to end."""

import json
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk

from si_hf.tasks import get_task

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_RECIPES = sorted((REPO_ROOT / "recipes").glob("*/tiny.yaml"))

SHRINK = {
    "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
    "base_steps": 30, "base_warmup_steps": 5, "base_decay_steps": 10, "base_examples": 480, "batch_size": 16,
    "base_restart_steps": [10],  # a second base stage, as the maze recipe trains, in seconds for every task
    "num_rounds": 2, "round_steps": 10, "round_warmup_steps": 0, "round_decay_steps": 5,
    "labels_per_round": 40, "eval_size": 10, "round_eval_size": None, "label_batch_size": 256,
    "logging_steps": 50, "disable_tqdm": True,
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe_path", TINY_RECIPES, ids=lambda p: p.parent.name)
def test_tiny_recipe_runs_two_rounds(recipe_path, tmp_path, run_rounds_main):
    recipe = {**yaml.safe_load(recipe_path.read_text()), **SHRINK}
    recipe["eval_max_level"] = min(recipe["eval_max_level"], recipe["base_max_level"] + 2)
    recipe["output_dir"] = str(tmp_path / "run")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert run_rounds_main(["--config", str(path)]) == 0

    task = get_task(recipe["task"])
    out = tmp_path / "run"
    for k in range(3):
        record = json.loads((out / f"round-{k}" / "eval.json").read_text())
        levels = task.eval_levels(recipe["eval_min_level"], recipe["eval_max_level"])
        names = [task.level_name(level) for level in levels]
        assert list(record["accuracy_by_level"]) == names
        if k == 0:
            assert record["train_steps"] == 30 + 10  # the base, then its restart stage
        data = load_from_disk(str(out / f"round-{k}" / "data"))
        assert set(data.column_names) >= {"prompt", "completion", "level", "round", "correct"}
        assert set(data["round"]) <= {k}
        if k:
            expected = {task.level_name(level) for level in task.round_levels(recipe["base_max_level"], k)}
            got = {task.level_name(tuple(lv) if isinstance(lv, list) else lv) for lv in data["level"]}
            assert got <= expected
            assert record["labels"]["labeled"] == recipe["labels_per_round"] * len(expected)
    assert len((out / "summary.jsonl").read_text().splitlines()) == 3
