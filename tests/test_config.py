"""Recipes: YAML plus command-line overrides, and the errors that name the field at fault."""

import math

import pytest
import torch
import yaml

from si_hf.config import (
    RESUMABLE_CHANGES,
    TRAINER_FIELDS,
    Recipe,
    RecipeError,
    parse_recipe,
    recipe_warnings,
    trainer_arguments,
)
from si_hf.tasks import TASKS, get_task


def _yaml(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_are_the_paper_values():
    r = parse_recipe([])
    assert r.position_encoding == "nope"
    assert (r.num_hidden_layers, r.hidden_size, r.num_attention_heads, r.intermediate_size) == (6, 384, 6, 1536)
    assert (r.learning_rate, r.adam_beta2, r.adam_epsilon, r.weight_decay, r.max_grad_norm) == (
        5e-4, 0.98, 1e-12, 0.01, 1.0)
    assert r.newest_fraction == 0.5 and r.filters == ["length"]


def test_yaml_then_command_line_overrides(tmp_path):
    path = _yaml(tmp_path, """
task: reverse_addition
learning_rate: 5e-4          # YAML 1.1 reads this as a string; it must still become a float
batch_size: 16
hidden_size: 64
num_attention_heads: 4
filters: [length]
bf16: false
round_learning_rate: 1.0e-4
base_min_level: 2
base_max_level: 7
""")
    r = parse_recipe(["--config", path])
    assert r.task == "reverse_addition"
    assert r.learning_rate == 5e-4 and isinstance(r.learning_rate, float)
    assert (r.batch_size, r.hidden_size, r.num_attention_heads) == (16, 64, 4)
    assert r.filters == ["length"] and r.bf16 is False and r.round_learning_rate == 1e-4
    assert (r.base_min_level, r.base_max_level) == (2, 7)
    assert r.num_rounds == Recipe().num_rounds  # untouched fields keep their defaults

    r = parse_recipe(["--config", path, "--batch_size", "8", "--task", "copy", "--bf16", "true",
                      "--learning_rate", "1e-3", "--overwrite_output_dir"])
    assert r.batch_size == 8 and r.task == "copy" and r.bf16 is True
    assert r.learning_rate == 1e-3 and r.overwrite_output_dir is True
    assert r.hidden_size == 64  # from YAML still

    # order does not matter: the command line wins even when it comes before --config
    r = parse_recipe(["--batch_size", "4", "--config", path])
    assert r.batch_size == 4


def test_list_field_on_the_command_line(tmp_path):
    r = parse_recipe(["--filters", "length", "length"])
    assert r.filters == ["length", "length"]


def test_unknown_yaml_field_suggests_a_name(tmp_path):
    path = _yaml(tmp_path, "task: copy\nlearning_rat: 0.1\n")
    with pytest.raises(RecipeError, match=r"(?i)learning_rat.*did you mean 'learning_rate'"):
        parse_recipe(["--config", path])


def test_malformed_yaml(tmp_path):
    path = _yaml(tmp_path, "task: [copy\n  x: : y\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        parse_recipe(["--config", path])


def test_yaml_must_be_a_mapping(tmp_path):
    path = _yaml(tmp_path, "- task\n- copy\n")
    with pytest.raises(RecipeError, match="mapping"):
        parse_recipe(["--config", path])


def test_empty_yaml_means_defaults(tmp_path):
    path = _yaml(tmp_path, "")
    assert parse_recipe(["--config", path]) == Recipe()


def test_base_restart_steps_from_yaml_and_command_line(tmp_path):
    path = _yaml(tmp_path, "base_restart_steps: [2000, 4000]\n")
    assert parse_recipe(["--config", path]).base_restart_steps == [2000, 4000]
    assert parse_recipe(["--config", path, "--base_restart_steps", "500"]).base_restart_steps == [500]
    assert parse_recipe(["--config", path, "--base_restart_steps"]).base_restart_steps == []
    with pytest.raises(RecipeError, match="base_restart_steps"):
        parse_recipe(["--config", _yaml(tmp_path, "base_restart_steps: [2000, two]\n", "bad.yaml")])


def test_missing_yaml_file(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        parse_recipe(["--config", str(tmp_path / "nope.yaml")])


def test_unknown_command_line_argument():
    with pytest.raises(RecipeError, match="--no_such_field"):
        parse_recipe(["--no_such_field", "1"])


@pytest.mark.parametrize("argv,field", [
    (["--frontier_threshold", "1.5"], "frontier_threshold"),
    (["--frontier_threshold", "-0.1"], "frontier_threshold"),
    (["--base_min_level", "5", "--base_max_level", "3"], "base_min_level"),
    (["--base_min_level", "0"], "base_min_level"),
    (["--eval_min_level", "9", "--eval_max_level", "3"], "eval_min_level"),
    (["--task", "revers"], "task"),
    (["--filters", "lenght"], "filters"),
    (["--position_encoding", "fire"], "position_encoding"),
    (["--labeler", "beam"], "labeler"),
    (["--hidden_size", "100", "--num_attention_heads", "6"], "hidden_size"),
    (["--base_steps", "0"], "base_steps"),
    (["--base_restart_steps", "2000", "0"], "base_restart_steps"),
    (["--base_steps", "100", "--base_warmup_steps", "60", "--base_decay_steps", "50"], "base_warmup_steps"),
    (["--round_steps", "0"], "round_steps"),
    (["--num_rounds", "-1"], "num_rounds"),
    (["--labels_per_round", "0"], "labels_per_round"),
    (["--batch_size", "0"], "batch_size"),
    (["--eval_size", "0"], "eval_size"),
    (["--learning_rate", "0"], "learning_rate"),
    (["--newest_fraction", "1.2"], "newest_fraction"),
    (["--older_weighting", "levels"], "older_weighting"),
    (["--min_lr_ratio", "2"], "min_lr_ratio"),
    (["--task", "forward_addition", "--base_carry_runs", "1.5"], "base_carry_runs"),
    (["--task", "copy", "--base_carry_runs", "0.5"], "base_carry_runs"),
    (["--task", "forward_addition", "--base_equal_lengths", "-0.1"], "base_equal_lengths"),
    (["--task", "reverse", "--base_equal_lengths", "0.5"], "base_equal_lengths"),
])
def test_invalid_values_name_the_field(argv, field):
    with pytest.raises(RecipeError, match=field):
        parse_recipe(argv)


def test_invalid_value_in_yaml_names_the_field(tmp_path):
    with pytest.raises(RecipeError, match="frontier_threshold"):
        parse_recipe(["--config", _yaml(tmp_path, "frontier_threshold: 1.5\n")])
    with pytest.raises(RecipeError, match="task"):
        parse_recipe(["--config", _yaml(tmp_path, "task: reverse_adition\n", "b.yaml")])


def test_unknown_task_and_filter_hints():
    with pytest.raises(RecipeError, match=r"(?i)did you mean 'reverse'"):
        parse_recipe(["--task", "revers"])
    with pytest.raises(RecipeError, match=r"(?i)did you mean 'length'"):
        parse_recipe(["--filters", "lenght"])


def test_zero_rounds_needs_no_round_steps():
    assert parse_recipe(["--num_rounds", "0", "--round_steps", "0", "--round_decay_steps", "0"]).num_rounds == 0


@pytest.mark.parametrize("text, message", [
    ("batch_size: lots\n", "batch_size='lots': must be an integer"),
    ("num_rounds: many\n", "num_rounds='many': must be an integer"),
    ("round_learning_rate: fast\n", "round_learning_rate='fast': must be a number (or unset)"),
    ("push_to_hub: maybe\n", "push_to_hub='maybe': must be true or false"),
])
def test_uncastable_yaml_value_names_the_file_and_the_field(tmp_path, text, message):
    path = _yaml(tmp_path, text)
    with pytest.raises(RecipeError, match=rf"^recipe {path}: ") as err:
        parse_recipe(["--config", path])
    assert message in str(err.value) and "command-line" not in str(err.value)


def test_yaml_strings_the_parser_converts_are_accepted(tmp_path):
    r = parse_recipe(["--config", _yaml(tmp_path, "learning_rate: 1e-3\nnum_rounds: '3'\ndisable_tqdm: 'yes'\n")])
    assert (r.learning_rate, r.num_rounds, r.disable_tqdm) == (1e-3, 3, True)


def test_an_unreadable_recipe_names_the_file(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("task: copy\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=rf"recipe {bad} is not UTF-8 text"):
        parse_recipe(["--config", str(bad)])
    with pytest.raises(RecipeError, match=rf"cannot read recipe {tmp_path}"):
        parse_recipe(["--config", str(tmp_path)])


def test_uncastable_command_line_value_is_a_recipe_error():
    with pytest.raises(RecipeError):
        parse_recipe(["--learning_rate", "abc"])


def test_recipe_round_trips_through_yaml(tmp_path):
    r = parse_recipe(["--task", "reverse", "--num_rounds", "3", "--filters", "length"])
    path = _yaml(tmp_path, yaml.safe_dump(r.to_dict(), sort_keys=False))
    assert parse_recipe(["--config", path]) == r


def test_shipped_recipes_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "recipes"
    # recipes/accelerate/ (if present) holds accelerate launch configs, not recipes
    recipes = sorted(p for p in root.glob("**/*.yaml") if "accelerate" not in p.relative_to(root).parts)
    assert recipes
    for path in recipes:
        parse_recipe(["--config", str(path)])


def test_an_evaluation_range_below_the_rounds_is_warned_about():
    (warning,) = recipe_warnings(parse_recipe(["--base_max_level", "10", "--eval_max_level", "10"]))
    assert "eval_max_level=10 is not above base_max_level=10" in warning and "cannot pass 10" in warning
    assert recipe_warnings(parse_recipe(["--base_max_level", "10", "--eval_max_level", "11"])) == []
    assert recipe_warnings(parse_recipe(["--num_rounds", "0", "--round_steps", "0", "--round_decay_steps", "0",
                                         "--eval_max_level", "3"])) == []


def test_more_labels_than_a_level_holds_are_warned_about(capsys):
    from si_hf.rounds import SelfImprovement

    loop = SelfImprovement(parse_recipe(["--task", "copy", "--labels_per_round", "100", "--eval_size", "5",
                                         "--eval_max_level", "12"]))
    assert len(loop.fresh_problems(1, [1])) == 100
    out = capsys.readouterr().out
    assert "warning: level 1 gave only" in out and "labels_per_round=100" in out
    loop.fresh_problems(1, [12])
    assert "warning" not in capsys.readouterr().out


def test_resumable_fields_are_marked_on_the_field_and_hidden_from_the_help(capsys):
    """The marks decide what a rerun may change (and so the recipe hash in every manifest)."""
    assert set(RESUMABLE_CHANGES) == {
        "num_rounds", "report_to", "logging_steps", "disable_tqdm", "overwrite_output_dir", "label_batch_size",
        "output_dir", "num_threads", "push_to_hub", "hub_model_id", "hub_dataset_id", "hub_private",
        "stop_patience", "collapse_floor", "final_stage", "eval_all_seeds", "sustainability_law"}
    with pytest.raises(SystemExit) as exit_info:
        parse_recipe(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--num_threads" in text and "resumable" not in text
    for task in TASKS:  # the task help names every task
        assert task in Recipe.__dataclass_fields__["task"].metadata["help"]


def test_the_trainer_gets_the_marked_fields_as_the_recipe_has_them(tmp_path):
    from datasets import Dataset

    from si_hf.tokenization import task_tokenizer
    from si_hf.training import build_model, make_trainer

    recipe = parse_recipe(["--num_hidden_layers", "1", "--hidden_size", "32", "--num_attention_heads", "2",
                           "--intermediate_size", "64", "--weight_decay", "0.3", "--adam_beta2", "0.9",
                           "--max_grad_norm", "0.5", "--logging_steps", "7", "--disable_tqdm", "true"])
    tokenizer = task_tokenizer(get_task("copy"))
    data = Dataset.from_dict({"input_ids": [[1, 2, 3]], "prompt_len": [1]})
    args = make_trainer(build_model(recipe, tokenizer), tokenizer, data, recipe, 1, str(tmp_path)).args
    assert set(TRAINER_FIELDS) == {"weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
                                   "logging_steps", "disable_tqdm"}
    assert {name: getattr(args, name) for name in TRAINER_FIELDS} == trainer_arguments(recipe)
    assert (args.weight_decay, args.adam_beta2, args.max_grad_norm, args.logging_steps) == (0.3, 0.9, 0.5, 7)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of bf16")
def test_bf16_asked_for_on_the_cpu_trains_under_autocast(tmp_path):
    from datasets import Dataset

    from si_hf.tokenization import task_tokenizer
    from si_hf.training import build_model, make_trainer

    recipe = parse_recipe(["--num_hidden_layers", "1", "--hidden_size", "32", "--num_attention_heads", "2",
                           "--intermediate_size", "64", "--bf16", "true", "--round_steps", "2",
                           "--round_warmup_steps", "0", "--round_decay_steps", "1", "--batch_size", "2",
                           "--disable_tqdm", "true"])
    tokenizer = task_tokenizer(get_task("copy"))
    data = Dataset.from_dict({"input_ids": [[1, 5, 6, 2], [1, 7, 2]], "prompt_len": [2, 1]})
    trainer = make_trainer(build_model(recipe, tokenizer), tokenizer, data, recipe, 1, str(tmp_path))
    assert trainer.args.bf16 and trainer.args.use_cpu
    result = trainer.train()
    assert result.global_step == 2 and math.isfinite(result.training_loss)
    assert next(trainer.model.parameters()).dtype == torch.float32  # autocast, weights stay float32
