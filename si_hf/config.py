"""Recipes: one dataclass, read from YAML and overridden from the command line."""

import dataclasses
import difflib
import sys
import types
import typing
from dataclasses import dataclass, field

import yaml
from transformers import HfArgumentParser

from .errors import RecipeError


@dataclass
class Recipe:
    # What and where
    task: str = field(default="copy", metadata={"help": "Task name (copy, reverse, reverse_addition)."})
    output_dir: str = field(default="runs/copy-tiny", metadata={"help": "Where rounds are written."})
    seed: int = field(default=0, metadata={"help": "Seed of data, initialization and training."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": (
        "Delete a run of another recipe in output_dir.")})
    base_examples: int | None = field(default=None, metadata={"help": (
        "Base problems to draw (default: base_steps * batch_size).")})

    # Model (SIConfig)
    num_hidden_layers: int = 6
    hidden_size: int = 384
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    position_encoding: str = field(default="nope", metadata={"help": "nope or rope."})

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

    # Each later round
    num_rounds: int = field(default=10, metadata={"help": "Self-improvement rounds after round 0."})
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
        "eval.json); the frontier is seed 0's.")})

    # Schedule: which levels each round labels
    schedule: str = field(default="plus_one", metadata={"help": (
        "plus_one (the stage after the highest trained) or accelerated (probe the stages after it, label "
        "every consecutive one scoring >= frontier_threshold, at least one).")})
    probe_size: int = field(default=200, metadata={"help": (
        "accelerated: fresh problems per probed level (never held-out ones).")})
    probe_max_levels: int = field(default=8, metadata={"help": (
        "accelerated: most stages probed (and so labeled) in one round.")})

    # Stop rules (default off)
    stop_patience: int | None = field(default=None, metadata={"help": (
        "Stop when the frontier has not moved for this many rounds.")})
    collapse_floor: float | None = field(default=None, metadata={"help": (
        "Stop when accuracy at a level inside the previous round's frontier falls below this.")})

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
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-12
    max_grad_norm: float = 1.0
    group_by_length: bool = field(default=False, metadata={"help": (
        "Batch examples of similar length: less padding, but one-length batches slowed learning of copy "
        "several-fold.")})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast; default: on when CUDA supports it."})

    # Labeling and evaluation
    labeler: str = field(default="fast", metadata={"help": "fast (bucketed KV-cache loop) or generate."})
    label_batch_size: int = 1024
    eval_min_level: int = 1
    eval_max_level: int = 20
    eval_size: int = field(default=1000, metadata={"help": (
        "Held-out problems per eval level (all used in the last round).")})
    round_eval_size: int | None = field(default=None, metadata={"help": (
        "Problems per level evaluated in earlier rounds (a fixed subset; default: all).")})
    frontier_threshold: float = field(default=0.99, metadata={"help": "Accuracy a level needs to count as solved."})

    # Progress and tracking
    logging_steps: int = 50
    report_to: str = field(default="none", metadata={"help": "Trainer report_to: none, tensorboard, wandb, trackio."})
    disable_tqdm: bool = False
    num_threads: int | None = field(default=None, metadata={"help": (
        "CPU threads per process (default: the cores this process may use, shared among local processes).")})

    # The Hub: publish every round, or start from a published one
    push_to_hub: bool = field(default=False, metadata={"help": (
        "Push each finished round to hub_model_id and hub_dataset_id.")})
    hub_model_id: str | None = field(default=None, metadata={"help": (
        "Model repo (namespace/name) that gets one branch and tag round-<k> per round.")})
    hub_dataset_id: str | None = field(default=None, metadata={"help": (
        "Dataset repo for the rounds' data (default: the same id as hub_model_id).")})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repos private."})
    init_from: str | None = field(default=None, metadata={"help": (
        "Start from a published round, REPO@round-<k>: the run continues with round k+1.")})

    def validate(self):
        from .corruption import CORRUPT_MODES
        from .data import OLDER_WEIGHTINGS
        from .schedule import SCHEDULES
        from .tasks import TASKS, get_task

        check_field_types(self)  # a YAML value of the wrong type (a list for a number, ...) names its field
        try:
            get_task(self.task)
        except ValueError as err:
            raise RecipeError(f"task: {err}") from None
        if self.num_attention_heads <= 0:
            raise RecipeError(f"num_attention_heads={self.num_attention_heads!r}: must be positive")
        if not isinstance(self.filters, list):
            raise RecipeError(f"filters={self.filters!r}: must be a list, e.g. [length]")
        for name in ("batch_size", "base_steps", "round_steps", "labels_per_round", "eval_size", "num_rounds",
                     "num_seeds", "probe_size", "probe_max_levels"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise RecipeError(f"{name}={getattr(self, name)!r}: must be an integer")
        checks = [
            # sizes, steps and optimizer settings that cannot be negative (or zero)
            ("num_hidden_layers", self.num_hidden_layers >= 1, "must be >= 1"),
            ("hidden_size", self.hidden_size > 0, "must be positive"),
            ("intermediate_size", self.intermediate_size > 0, "must be positive"),
            ("base_examples", self.base_examples is None or self.base_examples > 0, "must be positive (or unset)"),
            ("base_steps", self.base_steps > 0, "must be positive"),
            ("base_warmup_steps", self.base_warmup_steps >= 0, "must be >= 0"),
            ("base_decay_steps", self.base_decay_steps >= 0, "must be >= 0"),
            ("round_steps", self.round_steps >= 0, "must be >= 0"),
            ("round_warmup_steps", self.round_warmup_steps >= 0, "must be >= 0"),
            ("round_decay_steps", self.round_decay_steps >= 0, "must be >= 0"),
            ("round_learning_rate", self.round_learning_rate is None or self.round_learning_rate > 0,
             "must be positive (or unset)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("adam_beta1", 0.0 <= self.adam_beta1 < 1.0, "must be in [0, 1)"),
            ("adam_beta2", 0.0 <= self.adam_beta2 < 1.0, "must be in [0, 1)"),
            ("adam_epsilon", self.adam_epsilon >= 0, "must be >= 0"),
            ("max_grad_norm", self.max_grad_norm >= 0, "must be >= 0"),
            ("logging_steps", self.logging_steps > 0, "must be positive"),
            ("num_threads", self.num_threads is None or self.num_threads >= 1, "must be >= 1 (or unset)"),
            ("position_encoding", self.position_encoding in ("nope", "rope"), "must be 'nope' or 'rope'"),
            ("labeler", self.labeler in ("fast", "generate"), "must be 'fast' or 'generate'"),
            ("hidden_size", self.hidden_size % self.num_attention_heads == 0,
             "must be divisible by num_attention_heads"),
            ("base_min_level", 1 <= self.base_min_level <= self.base_max_level,
             "needs 1 <= base_min_level <= base_max_level"),
            ("eval_min_level", 1 <= self.eval_min_level <= self.eval_max_level,
             "needs 1 <= eval_min_level <= eval_max_level"),
            ("base_steps", self.base_steps > 0, "must be positive"),
            ("round_steps", self.round_steps > 0 or self.num_rounds == 0, "must be positive"),
            ("num_rounds", self.num_rounds >= 0, "must be >= 0"),
            ("base_warmup_steps", 0 <= self.base_warmup_steps + self.base_decay_steps <= self.base_steps,
             "warmup + decay steps must fit in base_steps"),
            ("round_warmup_steps", 0 <= self.round_warmup_steps + self.round_decay_steps <= self.round_steps,
             "warmup + decay steps must fit in round_steps"),
            ("labels_per_round", self.labels_per_round > 0, "must be positive"),
            ("batch_size", self.batch_size > 0, "must be positive"),
            ("label_batch_size", self.label_batch_size > 0, "must be positive"),
            ("eval_size", self.eval_size > 0, "must be positive"),
            ("round_eval_size", self.round_eval_size is None or self.round_eval_size > 0, "must be positive"),
            ("learning_rate", self.learning_rate > 0, "must be positive"),
            ("frontier_threshold", 0.0 <= self.frontier_threshold <= 1.0, "must be in [0, 1]"),
            ("newest_fraction", 0.0 <= self.newest_fraction <= 1.0, "must be in [0, 1]"),
            ("min_lr_ratio", 0.0 <= self.min_lr_ratio <= 1.0, "must be in [0, 1]"),
            ("older_weighting", self.older_weighting in OLDER_WEIGHTINGS,
             f"must be one of {', '.join(OLDER_WEIGHTINGS)}"),
            ("num_seeds", self.num_seeds >= 1, "must be >= 1"),
            ("schedule", self.schedule in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}"),
            ("probe_size", self.probe_size > 0, "must be positive"),
            ("probe_max_levels", self.probe_max_levels > 0, "must be positive"),
            ("stop_patience", self.stop_patience is None or self.stop_patience >= 1, "must be >= 1 (or unset)"),
            ("collapse_floor", self.collapse_floor is None or 0.0 <= self.collapse_floor <= 1.0,
             "must be in [0, 1] (or unset)"),
            ("corrupt_round", self.corrupt_round is None or self.corrupt_round >= 1,
             "must be >= 1 (round 0 is ground truth)"),
            ("corrupt_fraction", 0.0 <= self.corrupt_fraction <= 1.0, "must be in [0, 1]"),
            ("corrupt_mode", self.corrupt_mode in CORRUPT_MODES, f"must be one of {', '.join(CORRUPT_MODES)}"),
        ]
        if not isinstance(self.lora_r, int) or isinstance(self.lora_r, bool) or self.lora_r < 0:
            raise RecipeError(f"lora_r={self.lora_r!r}: must be an integer >= 0")
        if self.lora_r and not self.model_name_or_path:
            raise RecipeError(f"lora_r={self.lora_r!r}: LoRA needs a pretrained start (model_name_or_path)")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise RecipeError(f"lora_dropout={self.lora_dropout!r}: must be in [0, 1)")
        if self.lora_r and not self.lora_target_modules.strip(" ,"):
            raise RecipeError("lora_target_modules: name at least one module, or all-linear")
        if self.push_to_hub and not self.hub_model_id:
            raise RecipeError("push_to_hub: needs hub_model_id (namespace/name)")
        if self.init_from is not None:
            from .records import parse_init_from

            try:
                parse_init_from(self.init_from)
            except ValueError as err:
                raise RecipeError(f"init_from={self.init_from!r}: {err}") from None
        for name, ok, why in checks:
            if not ok:
                raise RecipeError(f"{name}={getattr(self, name)!r}: {why}")
        from .filters import VOTE_FILTER, parse_filter_spec

        votes = 0
        for spec in self.filters:
            try:
                name = parse_filter_spec(spec)[0]
            except ValueError as err:
                raise RecipeError(f"filters: {err}") from None
            votes += name == VOTE_FILTER
            if name == "pieces" and not get_task(self.task).has_pieces:
                with_pieces = ", ".join(sorted(t for t in TASKS if get_task(t).has_pieces))
                raise RecipeError(f"filters: {spec!r}: task {self.task!r} has no pieces to check a label against "
                                  f"(tasks with pieces: {with_pieces})")
        if votes > 1:
            raise RecipeError(f"filters: at most one {VOTE_FILTER} filter, got {self.filters}")
        if votes and self.num_seeds < 2:
            raise RecipeError(f"filters: {VOTE_FILTER} needs num_seeds >= 2 models to vote "
                              f"(num_seeds={self.num_seeds})")
        if self.num_seeds > 1 and not votes:
            raise RecipeError(f"num_seeds={self.num_seeds}: several models need a {VOTE_FILTER} filter "
                              f"(e.g. '{VOTE_FILTER}:tau=0.7') to agree on one label per problem")
        if self.num_seeds > 1 and self.init_from is not None:
            raise RecipeError(f"init_from={self.init_from!r}: a published round holds one lineage; it cannot start "
                              f"num_seeds={self.num_seeds} lineages")
        return self

    # Fields that change how a run is watched or how fast it goes, never what it computes.
    RESUMABLE_CHANGES = ("num_rounds", "report_to", "logging_steps", "disable_tqdm", "overwrite_output_dir",
                         "label_batch_size", "output_dir", "num_threads", "push_to_hub", "hub_model_id",
                         "hub_dataset_id", "hub_private",
                         # the stop rules decide only whether more rounds run; eval_all_seeds only adds records
                         "stop_patience", "collapse_floor", "eval_all_seeds")

    def to_dict(self):
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(Recipe)}


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list or tp is list:
        return isinstance(value, list)
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
    parts = [names.get(t, "a list" if typing.get_origin(t) is list else getattr(t, "__name__", str(t)))
             for t in args if t is not type(None)]
    return " or ".join(parts) + (" (or unset)" if type(None) in args else "")


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
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
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
    return data


def parse_recipe(argv: list[str] | None = None) -> Recipe:
    """`--config recipe.yaml` plus `--field value` overrides (command line wins)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(Recipe)
    parser.add_argument("--config", help="YAML recipe; command-line fields override it.")
    try:
        known, _ = parser.parse_known_args(argv)
        if known.config:
            parser.set_defaults(**read_yaml(known.config))
        recipe, *_, extra = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except SystemExit as err:
        raise RecipeError("invalid command-line arguments (see the message above)") from err
    if extra:
        raise RecipeError(f"unknown command-line arguments: {' '.join(extra)}")
    return recipe.validate()
