"""Recipes: one dataclass, read from YAML and overridden from the command line."""

import copy
import dataclasses
import difflib
import importlib.util
import os
import sys
import types
import typing
from dataclasses import dataclass, field

import yaml
from transformers import HfArgumentParser

from .errors import RecipeError
from .modeling.configuration_si import POSITION_ENCODINGS
from .tracking import TRACKED, reporters

# Marks in a field's metadata (kept out of argparse by RecipeParser):
RESUMABLE = "resumable"  # changes how a run is watched or how fast it goes, never what it computes: a rerun may
#                          change it (everything else is compared with the run's recipe.yaml and its manifests)
TRAINER = "trainer"  # passed to TrainingArguments under the same name (si_hf.training.make_trainer)
MARKS = (RESUMABLE, TRAINER)


@dataclass
class Recipe:
    # What and where
    task: str = field(default="copy", metadata={"help": (
        "copy, reverse, reverse_addition, forward_addition, multiplication, maze_hops, maze_hops_15 (15-node "
        "trees), maze_chain_15 (15-node chains) or maze_nodes.")})
    output_dir: str = field(default="runs/copy-tiny", metadata={"help": "Where rounds are written.", RESUMABLE: True})
    seed: int = field(default=0, metadata={"help": "Seed of data, initialization and training."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": (
        "Delete a run of another recipe in output_dir."), RESUMABLE: True})
    base_examples: int | None = field(default=None, metadata={"help": (
        "Base problems to draw (default: base_steps * batch_size).")})

    # Model (SIConfig)
    num_hidden_layers: int = 6
    hidden_size: int = 384
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    position_encoding: str = field(default="nope", metadata={"help": "nope, rope or alibi."})

    # Or a pretrained start (si_hf.pretrained): any AutoModelForCausalLM checkpoint, its vocabulary cut to the
    # task's characters; the model fields above are then unused. Optional LoRA (peft), merged every round.
    model_name_or_path: str | None = field(default=None, metadata={"help": (
        "Pretrained causal LM (local directory or Hub id) to start from instead of a new si-hf model.")})
    lora_r: int = field(default=0, metadata={"help": (
        "LoRA rank with model_name_or_path (0: full fine-tuning); each round trains a fresh adapter (plus"
        " the embedding and output rows) and merges it.")})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale lora_alpha / lora_r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": (
        "all-linear (every linear layer but the output head) or comma-separated module names, e.g. "
        "q_proj,v_proj.")})

    # Round 0: base data
    base_min_level: int = 1
    base_max_level: int = 10
    base_steps: int = 2000
    base_warmup_steps: int = 200
    base_decay_steps: int = 500
    base_restart_steps: list[int] = field(default_factory=list, metadata={"help": (
        "After base_steps, train the base again from its own weights for each of these many steps, each "
        "stage with its own warm-up and decay (base_warmup_steps and base_decay_steps scaled to its length) "
        "on the base data a run of that many steps draws: the first rows of the same draw.")})
    base_carry_runs: float = field(default=0.0, metadata={"help": (
        "Share of base problems (addition) given a planted run of digit pairs summing to 9, a long carry "
        "chain; random digits hold a run of k pairs with chance ~10^-k.")})
    base_equal_lengths: float = field(default=0.0, metadata={"help": (
        "Share of base problems whose operands have one length, drawn as the held-out sets and the rounds "
        "draw them (addition, multiplication); the rest draw each operand's length independently.")})

    # Each later round
    num_rounds: int = field(default=10, metadata={"help": "Self-improvement rounds after round 0.", RESUMABLE: True})
    round_steps: int = 500
    round_warmup_steps: int = 0
    round_decay_steps: int = 250
    labels_per_round: int = field(default=20000, metadata={"help": "Problems the model labels each round."})
    filters: list[str] = field(default_factory=lambda: ["length"], metadata={"help": "Label filters, in order."})
    newest_fraction: float = field(default=0.5, metadata={"help": (
        "Share of each round's batches from its newest data.")})
    older_weighting: str = field(default="rows", metadata={"help": (
        "How the rest of each round's batches is drawn from the base data and the older rounds: rows (in "
        "proportion to their rows) or rounds (an equal share each, the base data counting as one).")})

    # Majority vote over K seed lineages
    num_seeds: int = field(default=1, metadata={"help": (
        "K models trained with seeds seed, seed+1, ..., one after another; with K > 1 each labels the "
        "same problems, a majority_vote filter decides the labels and every model trains on them "
        "(round-<k>/model is seed 0's, round-<k>/models/seed-<i> the others).")})
    eval_all_seeds: bool = field(default=False, metadata={"help": (
        "With num_seeds > 1, also evaluate every other lineage each round (seed_accuracy_by_level in "
        "eval.json); the frontier is seed 0's."), RESUMABLE: True})  # it only adds records

    # Schedule: which levels each round labels
    schedule: str = field(default="plus_one", metadata={"help": (
        "plus_one (the stage after the highest trained) or accelerated (probe the stages after it, label "
        "every consecutive one scoring >= frontier_threshold, at least one).")})
    probe_size: int = field(default=200, metadata={"help": (
        "accelerated: fresh problems per probed level (never held-out ones).")})
    probe_max_levels: int = field(default=8, metadata={"help": (
        "accelerated: most stages probed (and so labeled) in one round.")})
    min_kept_fraction: float = field(default=0.0, metadata={"help": (
        "A round whose filters keep less than this share of its labels leaves its stage(s) untrained: the "
        "next round labels them again, with the model this round trained (0: always move on).")})

    # Stop rules (default off)
    # (they decide only whether more rounds run, so a rerun may change them)
    stop_patience: int | None = field(default=None, metadata={"help": (
        "Stop when the frontier has not moved for this many rounds."), RESUMABLE: True})
    collapse_floor: float | None = field(default=None, metadata={"help": (
        "Stop when accuracy at a level inside the previous round's frontier falls below this."), RESUMABLE: True})
    final_stage: int | None = field(default=None, metadata={"help": (
        "Stop once this stage is trained (stage s >= 1: the levels task.round_levels(base_max_level, s); a "
        "stage labeled again counts once a round kept enough of its labels). That round evaluates on the "
        "full eval_size sets, as the last round does."), RESUMABLE: True})

    # The law of sustainability (si_hf.sustainability): it only adds a prediction to each round's record
    sustainability_law: str | None = field(default=None, metadata={"help": (
        "A law fitted by scripts/fit_sustainability.py --save LAW.json: each round records whether it predicts "
        "the run sustains or collapses, and when."), RESUMABLE: True})

    # Error avalanche: corrupt part of one round's labels on purpose
    corrupt_round: int | None = field(default=None, metadata={"help": (
        "The round (>= 1) whose kept labels are corrupted after filtering.")})
    corrupt_fraction: float = field(default=0.0, metadata={"help": "Share of that round's kept labels corrupted."})
    corrupt_mode: str = field(default="digits", metadata={"help": (
        "digits (uniform random digits, same length), drop_tail (last digit dropped) or perturb_tail "
        "(last digit +-1).")})

    # Optimization (AdamW, warmup-stable-decay to min_lr_ratio of the peak)
    batch_size: int = 1024
    learning_rate: float = 5e-4
    round_learning_rate: float | None = field(default=None, metadata={"help": (
        "Peak lr in rounds >= 1 (default: learning_rate).")})
    min_lr_ratio: float = 0.01
    weight_decay: float = field(default=0.01, metadata={TRAINER: True})
    adam_beta1: float = field(default=0.9, metadata={TRAINER: True})
    adam_beta2: float = field(default=0.98, metadata={TRAINER: True})
    adam_epsilon: float = field(default=1e-12, metadata={TRAINER: True})
    max_grad_norm: float = field(default=1.0, metadata={TRAINER: True})
    ema_decay: float | None = field(default=None, metadata={"help": (
        "Keep an exponential moving average of the weights while training (decay at most this, lower in "
        "the first steps so a short round averages its own steps); each round's model is the average. "
        "None: the last weights.")})
    group_by_length: bool = field(default=False, metadata={"help": (
        "Batch examples of similar length: less padding, but one-length batches slowed learning of copy "
        "several-fold.")})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast; default: on when CUDA supports it."})

    # Labeling and evaluation
    labeler: str = field(default="fast", metadata={"help": "fast (bucketed KV-cache loop) or generate."})
    label_batch_size: int = field(default=1024, metadata={RESUMABLE: True})
    eval_min_level: int = 1
    eval_max_level: int = 20
    eval_size: int = field(default=1000, metadata={"help": (
        "Held-out problems per eval level (all used in the last round).")})
    round_eval_size: int | None = field(default=None, metadata={"help": (
        "Problems per level evaluated in earlier rounds (a fixed subset; default: all).")})
    frontier_threshold: float = field(default=0.99, metadata={"help": "Accuracy a level needs to count as solved."})

    # Progress and tracking
    logging_steps: int = field(default=50, metadata={RESUMABLE: True, TRAINER: True})
    report_to: str = field(default="none", metadata={"help": "Trainer report_to: none, tensorboard, wandb, trackio.",
                                                     RESUMABLE: True})
    disable_tqdm: bool = field(default=False, metadata={RESUMABLE: True, TRAINER: True})
    # Threads change float sums, so the numbers: a rerun may change them, with a warning (si_hf.rounds).
    num_threads: int | None = field(default=None, metadata={"help": (
        "CPU threads per process (default: the cores this process may use, shared among local processes)."),
        RESUMABLE: True})

    # The Hub: publish every round, or start from a published one
    push_to_hub: bool = field(default=False, metadata={"help": (
        "Push each finished round to hub_model_id and hub_dataset_id."), RESUMABLE: True})
    hub_model_id: str | None = field(default=None, metadata={"help": (
        "Model repo (namespace/name) that gets one branch and tag round-<k> per round."), RESUMABLE: True})
    hub_dataset_id: str | None = field(default=None, metadata={"help": (
        "Dataset repo for the rounds' data (default: the same id as hub_model_id)."), RESUMABLE: True})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repos private.", RESUMABLE: True})
    init_from: str | None = field(default=None, metadata={"help": (
        "Start from a finished round, REPO@round-<k> (on the Hub) or RUN_DIR@round-<k> (a run directory on "
        "this machine): the run continues with round k+1.")})
    lineages_from: list[str] | None = field(default=None, metadata={"help": (
        "With init_from and num_seeds K > 1: the same round of K-1 other runs on this machine "
        "(RUN_DIR@round-<k>, init_from's k), whose models start lineages 1..K-1. A vote among models "
        "trained apart, on bases that single-model runs already trained.")})

    def validate(self):
        """The recipe itself, or a RecipeError naming the first wrong field and what it must be."""
        from .corruption import CORRUPT_MODES
        from .data import OLDER_WEIGHTINGS
        from .schedule import SCHEDULES
        from .tasks import get_task

        check_field_types(self)  # a YAML value of the wrong type (a list for a number, ...) names its field
        try:
            get_task(self.task)
        except ValueError as err:
            raise RecipeError(f"task: {err}") from None
        for rows in (_model_rows(self), _base_rows(self), _round_rows(self, OLDER_WEIGHTINGS, SCHEDULES),
                     _optimizer_rows(self), _evaluation_rows(self), _control_rows(self, CORRUPT_MODES)):
            for name, ok, why in rows:
                if not ok:
                    raise RecipeError(f"{name}={getattr(self, name)!r}: {why}")
        _check_start_and_hub(self)
        _check_base_draws(self)
        _check_filters(self)
        _check_law(self)
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(Recipe)}
RESUMABLE_CHANGES = tuple(f.name for f in dataclasses.fields(Recipe) if f.metadata.get(RESUMABLE))
TRAINER_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe) if f.metadata.get(TRAINER))


def trainer_arguments(recipe: Recipe) -> dict:
    """The recipe's fields that TrainingArguments takes as they are, under the same names."""
    return {name: getattr(recipe, name) for name in TRAINER_FIELDS}


# Each group of the recipe checked as rows of (field, holds, what it must be), in the order a user reads them.
def _model_rows(r: Recipe):
    heads_ok = r.num_attention_heads > 0  # before the divisibility row divides by it
    return [("num_hidden_layers", r.num_hidden_layers >= 1, "must be >= 1"),
            ("hidden_size", r.hidden_size > 0, "must be positive"),
            ("num_attention_heads", heads_ok, "must be positive"),
            ("hidden_size", heads_ok and r.hidden_size % r.num_attention_heads == 0,
             "must be divisible by num_attention_heads"),
            ("intermediate_size", r.intermediate_size > 0, "must be positive"),
            ("position_encoding", r.position_encoding in POSITION_ENCODINGS, f"must be one of {POSITION_ENCODINGS}"),
            ("lora_r", r.lora_r >= 0, "must be an integer >= 0"),
            ("lora_r", not r.lora_r or bool(r.model_name_or_path),
             "LoRA needs a pretrained start (model_name_or_path)"),
            ("lora_dropout", 0.0 <= r.lora_dropout < 1.0, "must be in [0, 1)"),
            ("lora_target_modules", not r.lora_r or bool(r.lora_target_modules.strip(" ,")),
             "name at least one module, or all-linear")]


def _base_rows(r: Recipe):
    return [("base_examples", r.base_examples is None or r.base_examples > 0, "must be positive (or unset)"),
            ("base_min_level", 1 <= r.base_min_level <= r.base_max_level,
             "needs 1 <= base_min_level <= base_max_level"),
            ("base_steps", r.base_steps > 0, "must be positive"),
            ("base_restart_steps", all(steps > 0 for steps in r.base_restart_steps),
             "every stage must be a positive number of steps"),
            ("base_carry_runs", 0 <= r.base_carry_runs <= 1, "must be a share between 0 and 1"),
            ("base_equal_lengths", 0 <= r.base_equal_lengths <= 1, "must be a share between 0 and 1"),
            ("base_warmup_steps", r.base_warmup_steps >= 0, "must be >= 0"),
            ("base_decay_steps", r.base_decay_steps >= 0, "must be >= 0"),
            ("base_warmup_steps", r.base_warmup_steps + r.base_decay_steps <= r.base_steps,
             "warmup + decay steps must fit in base_steps")]


def _round_rows(r: Recipe, older_weightings, schedules):
    return [("num_rounds", r.num_rounds >= 0, "must be >= 0"),
            ("round_steps", r.round_steps > 0 or (r.round_steps == 0 and r.num_rounds == 0), "must be positive"),
            ("round_warmup_steps", r.round_warmup_steps >= 0, "must be >= 0"),
            ("round_decay_steps", r.round_decay_steps >= 0, "must be >= 0"),
            ("round_warmup_steps", r.round_warmup_steps + r.round_decay_steps <= r.round_steps,
             "warmup + decay steps must fit in round_steps"),
            ("labels_per_round", r.labels_per_round > 0, "must be positive"),
            ("newest_fraction", 0.0 <= r.newest_fraction <= 1.0, "must be in [0, 1]"),
            ("older_weighting", r.older_weighting in older_weightings,
             f"must be one of {', '.join(older_weightings)}"),
            ("num_seeds", r.num_seeds >= 1, "must be >= 1"),
            ("schedule", r.schedule in schedules, f"must be one of {', '.join(schedules)}"),
            ("probe_size", r.probe_size > 0, "must be positive"),
            ("probe_max_levels", r.probe_max_levels > 0, "must be positive")]


def _optimizer_rows(r: Recipe):
    return [("batch_size", r.batch_size > 0, "must be positive"),
            ("learning_rate", r.learning_rate > 0, "must be positive"),
            ("round_learning_rate", r.round_learning_rate is None or r.round_learning_rate > 0,
             "must be positive (or unset)"),
            ("min_lr_ratio", 0.0 <= r.min_lr_ratio <= 1.0, "must be in [0, 1]"),
            ("weight_decay", r.weight_decay >= 0, "must be >= 0"),
            ("adam_beta1", 0.0 <= r.adam_beta1 < 1.0, "must be in [0, 1)"),
            ("adam_beta2", 0.0 <= r.adam_beta2 < 1.0, "must be in [0, 1)"),
            ("adam_epsilon", r.adam_epsilon >= 0, "must be >= 0"),
            ("max_grad_norm", r.max_grad_norm >= 0, "must be >= 0"),
            ("ema_decay", r.ema_decay is None or 0.0 < r.ema_decay < 1.0, "must be in (0, 1) (or unset)")]


def _evaluation_rows(r: Recipe):
    return [("labeler", r.labeler in ("fast", "generate"), "must be 'fast' or 'generate'"),
            ("label_batch_size", r.label_batch_size > 0, "must be positive"),
            ("eval_min_level", 1 <= r.eval_min_level <= r.eval_max_level,
             "needs 1 <= eval_min_level <= eval_max_level"),
            ("eval_size", r.eval_size > 0, "must be positive"),
            ("round_eval_size", r.round_eval_size is None or r.round_eval_size > 0, "must be positive"),
            ("frontier_threshold", 0.0 <= r.frontier_threshold <= 1.0, "must be in [0, 1]"),
            ("min_kept_fraction", 0.0 <= r.min_kept_fraction <= 1.0, "must be in [0, 1]")]


def _control_rows(r: Recipe, corrupt_modes):
    return [("stop_patience", r.stop_patience is None or r.stop_patience >= 1, "must be >= 1 (or unset)"),
            ("collapse_floor", r.collapse_floor is None or 0.0 <= r.collapse_floor <= 1.0,
             "must be in [0, 1] (or unset)"),
            ("final_stage", r.final_stage is None or r.final_stage >= 1, "must be >= 1 (or unset)"),
            ("corrupt_round", r.corrupt_round is None or r.corrupt_round >= 1,
             "must be >= 1 (round 0 is ground truth)"),
            ("corrupt_fraction", 0.0 <= r.corrupt_fraction <= 1.0, "must be in [0, 1]"),
            ("corrupt_mode", r.corrupt_mode in corrupt_modes, f"must be one of {', '.join(corrupt_modes)}"),
            ("logging_steps", r.logging_steps > 0, "must be positive"),
            ("num_threads", r.num_threads is None or r.num_threads >= 1, "must be >= 1 (or unset)"),
            ("sustainability_law", r.sustainability_law is None or os.path.isfile(r.sustainability_law),
             "must be a file written by scripts/fit_sustainability.py --save"),
            ("report_to", all(importlib.util.find_spec(name) for name in reporters(r.report_to) if name in TRACKED),
             "names a tracker that is not installed (pip install it, or drop it)")]


def _check_start_and_hub(r: Recipe):
    from .records import parse_init_from

    if r.push_to_hub and not r.hub_model_id:
        raise RecipeError("push_to_hub: needs hub_model_id (namespace/name)")
    if r.init_from is not None:
        try:
            parse_init_from(r.init_from)
        except ValueError as err:
            raise RecipeError(f"init_from={r.init_from!r}: {err}") from None
    _check_lineages_from(r)


def _check_lineages_from(r: Recipe):
    """A run continued from a round with K lineages names where lineages 1..K-1 start, at the same round."""
    from .records import parse_init_from

    sources = r.lineages_from or []
    if sources and r.init_from is None:
        raise RecipeError("lineages_from: needs init_from (lineage 0's run and round)")
    if r.init_from is not None and len(sources) != r.num_seeds - 1:
        raise RecipeError(f"lineages_from: a run continued from {r.init_from!r} with num_seeds={r.num_seeds} needs "
                          f"{r.num_seeds - 1} other runs' rounds to start lineages 1..{r.num_seeds - 1}, got "
                          f"{len(sources)}")
    for source in sources:
        try:
            k = parse_init_from(source)[1]
        except ValueError as err:
            raise RecipeError(f"lineages_from: {source!r}: {err}") from None
        if k != parse_init_from(r.init_from)[1]:
            raise RecipeError(f"lineages_from: {source!r} is not the round init_from={r.init_from!r} names")


def _check_law(r: Recipe):
    """A sustainability_law file is one this si-hf can read (checked before any round runs)."""
    from .sustainability import Law

    if r.sustainability_law is not None and os.path.isfile(r.sustainability_law):
        try:
            Law.load(r.sustainability_law)
        except ValueError as err:
            raise RecipeError(f"sustainability_law: {err}") from None


def _tasks_that(can) -> str:
    """The registered tasks for which `can(task)` holds, named in an error that refuses another task."""
    from .tasks import TASKS, get_task

    return ", ".join(sorted(t for t in TASKS if can(get_task(t))))


def _check_base_draws(r: Recipe):
    """The base-data shares only for tasks whose base draws they change."""
    from .tasks import get_task

    task = get_task(r.task)
    if r.base_carry_runs and not task.plants_carry_runs:
        planting = _tasks_that(lambda t: t.plants_carry_runs)
        raise RecipeError(f"base_carry_runs={r.base_carry_runs!r}: task {r.task!r} has no carries to plant "
                          f"(tasks: {planting})")
    if r.base_equal_lengths and not task.draws_lengths_apart:
        apart = _tasks_that(lambda t: t.draws_lengths_apart)
        raise RecipeError(f"base_equal_lengths={r.base_equal_lengths!r}: task {r.task!r} draws its base problems "
                          f"as its held-out sets already (tasks with operand lengths drawn apart: {apart})")


def _check_filters(r: Recipe):
    """Every filter spec parses, `pieces` only where the task has pieces, and a vote exactly when there
    are several lineages to vote."""
    from .filters import VOTE_FILTER, parse_filter_spec
    from .tasks import get_task

    names = []
    for spec in r.filters:
        try:
            names.append(parse_filter_spec(spec)[0])
        except ValueError as err:
            raise RecipeError(f"filters: {err}") from None
        if names[-1] in ("pieces", "compose") and not get_task(r.task).has_pieces:
            with_pieces = _tasks_that(lambda task: task.has_pieces)
            raise RecipeError(f"filters: {spec!r}: task {r.task!r} has no pieces to check a label against "
                              f"(tasks with pieces: {with_pieces})")
        if names[-1] == "commute" and not get_task(r.task).commutes:
            commuting = _tasks_that(lambda task: task.commutes)
            raise RecipeError(f"filters: {spec!r}: task {r.task!r} has no operands to swap (tasks: {commuting})")
        if names[-1] == "path" and not hasattr(get_task(r.task), "follows_edges"):
            mazes = _tasks_that(lambda task: hasattr(task, "follows_edges"))
            raise RecipeError(f"filters: {spec!r}: task {r.task!r} has no edges to follow (tasks: {mazes})")
    votes = names.count(VOTE_FILTER)
    if votes > 1:
        raise RecipeError(f"filters: at most one {VOTE_FILTER} filter, got {r.filters}")
    if votes and r.num_seeds < 2:
        raise RecipeError(f"filters: {VOTE_FILTER} needs num_seeds >= 2 models to vote (num_seeds={r.num_seeds})")
    if r.num_seeds > 1 and not votes:
        raise RecipeError(f"num_seeds={r.num_seeds}: several models need a {VOTE_FILTER} filter "
                          f"(e.g. '{VOTE_FILTER}:tau=0.7') to agree on one label per problem")



def recipe_warnings(r: Recipe) -> list[str]:
    """What a recipe allows but its author most likely did not mean (printed when a run starts)."""
    warnings = []
    if r.num_rounds and r.eval_max_level <= r.base_max_level:
        warnings.append(f"eval_max_level={r.eval_max_level} is not above base_max_level={r.base_max_level}: no "
                        f"level the rounds train on is evaluated, and the frontier cannot pass {r.eval_max_level}")
    return warnings

def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list or tp is list:
        items = typing.get_args(tp)
        return isinstance(value, list) and (not items or all(_type_ok(v, items[0]) for v in value))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True


def _type_name(tp) -> str:
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    parts = [_list_name(t) if t is list or typing.get_origin(t) is list
             else names.get(t, getattr(t, "__name__", str(t))) for t in args if t is not type(None)]
    return " or ".join(parts) + (" (or unset)" if type(None) in args else "")


def _list_name(tp) -> str:
    items = {int: "integers", float: "numbers", str: "strings"}.get(next(iter(typing.get_args(tp)), None))
    return f"a list of {items}" if items else "a list"


def check_field_types(recipe: "Recipe"):
    """RecipeError naming the first field whose value is not of its declared type (YAML values reach the
    recipe as YAML typed them: a list, a mapping or a number where a string is due)."""
    hints = typing.get_type_hints(type(recipe))
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if not _type_ok(value, hints[f.name]):
            raise RecipeError(f"{f.name}={value!r}: must be {_type_name(hints[f.name])}")


def read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise RecipeError(f"recipe {path} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise RecipeError(f"cannot read recipe {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping of field: value, got {type(data).__name__}")
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        msgs = []
        for k in unknown:
            close = difflib.get_close_matches(k, FIELDS, n=1)
            msgs.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise RecipeError(f"recipe {path}: unknown field(s) {', '.join(msgs)}")
    check_yaml_strings(path, data)
    return data


def check_yaml_strings(path: str, data: dict):
    """The command-line parser converts a string from the YAML as it would an argument (PyYAML reads
    `1e-3` as a string); a string it cannot convert is named here with its file and field, not as an
    invalid command line."""
    hints = typing.get_type_hints(Recipe)
    for name, value in data.items():
        kinds = set(typing.get_args(hints[name]) or (hints[name],)) - {type(None)}
        if not isinstance(value, str) or str in kinds or not kinds <= {int, float, bool}:
            continue
        if bool in kinds:
            ok = value.lower() in ("true", "false", "yes", "no", "1", "0", "t", "f", "y", "n")
        else:
            try:
                (float if float in kinds else int)(value)
                ok = True
            except ValueError:
                ok = False
        if not ok:
            raise RecipeError(f"recipe {path}: {name}={value!r}: must be {_type_name(hints[name])}")


class RecipeParser(HfArgumentParser):
    """HfArgumentParser, with si-hf's own field marks kept out of argparse (it takes the rest of a
    field's metadata as add_argument's keywords)."""

    @staticmethod
    def _parse_dataclass_field(parser, field: dataclasses.Field):
        plain = copy.copy(field)
        plain.metadata = types.MappingProxyType({k: v for k, v in field.metadata.items() if k not in MARKS})
        HfArgumentParser._parse_dataclass_field(parser, plain)
        if typing.get_origin(field.type) is list:
            # `--field` alone sets an empty list, as `field: []` does in YAML (e.g. no base_restart_steps).
            parser._actions[-1].nargs = "*"


def parse_recipe(argv: list[str] | None = None) -> Recipe:
    """`--config recipe.yaml` plus `--field value` overrides (command line wins)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = RecipeParser(Recipe)
    parser.add_argument("--config", help="YAML recipe; command-line fields override it.")
    try:
        known, _ = parser.parse_known_args(argv)
        if known.config:
            parser.set_defaults(**read_yaml(known.config))
        recipe, *_, extra = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except SystemExit as err:
        if err.code == 0:  # --help
            raise
        raise RecipeError("invalid command-line arguments (see the message above)") from err
    if extra:
        raise RecipeError(f"unknown command-line arguments: {' '.join(extra)}")
    return recipe.validate()
