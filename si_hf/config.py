"""Recipes: one dataclass, read from YAML and overridden from the command line."""

import dataclasses
import difflib
import sys
from dataclasses import dataclass, field

import yaml
from transformers import HfArgumentParser


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the field and the reason."""


@dataclass
class Recipe:
    # What and where
    task: str = field(default="copy", metadata={"help": "Task name (copy, reverse, reverse_addition)."})
    output_dir: str = field(default="runs/copy-tiny", metadata={"help": "Where rounds are written."})
    seed: int = field(default=0, metadata={"help": "Seed of data, initialization and training."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Delete a run of another recipe in output_dir."})
    base_examples: int | None = field(default=None, metadata={"help": "Base problems to draw (default: base_steps * batch_size)."})

    # Model (SIConfig)
    num_hidden_layers: int = 6
    hidden_size: int = 384
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    position_encoding: str = field(default="nope", metadata={"help": "nope or rope."})

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
    newest_fraction: float = field(default=0.5, metadata={"help": "Share of each round's batches from its newest data."})

    # Optimization (AdamW, warmup-stable-decay to min_lr_ratio of the peak)
    batch_size: int = 1024
    learning_rate: float = 5e-4
    round_learning_rate: float | None = field(default=None, metadata={"help": "Peak lr in rounds >= 1 (default: learning_rate)."})
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-12
    max_grad_norm: float = 1.0
    group_by_length: bool = field(default=False, metadata={"help": "Batch examples of similar length: less padding, but one-length batches slowed learning of copy several-fold."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast; default: on when CUDA supports it."})

    # Labeling and evaluation
    labeler: str = field(default="fast", metadata={"help": "fast (bucketed KV-cache loop) or generate."})
    label_batch_size: int = 1024
    eval_min_level: int = 1
    eval_max_level: int = 20
    eval_size: int = field(default=1000, metadata={"help": "Held-out problems per eval level (all used in the last round)."})
    round_eval_size: int | None = field(default=None, metadata={"help": "Problems per level evaluated in earlier rounds (a fixed subset; default: all)."})
    frontier_threshold: float = field(default=0.99, metadata={"help": "Accuracy a level needs to count as solved."})

    # Progress and tracking
    logging_steps: int = 50
    report_to: str = field(default="none", metadata={"help": "Trainer report_to: none, tensorboard, wandb, trackio."})
    disable_tqdm: bool = False
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads per process (default: the cores this process may use, shared among local processes)."})

    # The Hub: publish every round, or start from a published one
    push_to_hub: bool = field(default=False, metadata={"help": "Push each finished round to hub_model_id and hub_dataset_id."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Model repo (namespace/name) that gets one branch and tag round-<k> per round."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Dataset repo for the rounds' data (default: the same id as hub_model_id)."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repos private."})
    init_from: str | None = field(default=None, metadata={"help": "Start from a published round, REPO@round-<k>: the run continues with round k+1."})

    def validate(self):
        from .tasks import get_task

        try:
            get_task(self.task)
        except ValueError as err:
            raise RecipeError(f"task: {err}") from None
        if self.num_attention_heads <= 0:
            raise RecipeError(f"num_attention_heads={self.num_attention_heads!r}: must be positive")
        if not isinstance(self.filters, list):
            raise RecipeError(f"filters={self.filters!r}: must be a list, e.g. [length]")
        for name in ("batch_size", "base_steps", "round_steps", "labels_per_round", "eval_size", "num_rounds"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise RecipeError(f"{name}={getattr(self, name)!r}: must be an integer")
        checks = [
            ("position_encoding", self.position_encoding in ("nope", "rope"), "must be 'nope' or 'rope'"),
            ("labeler", self.labeler in ("fast", "generate"), "must be 'fast' or 'generate'"),
            ("hidden_size", self.hidden_size % self.num_attention_heads == 0, "must be divisible by num_attention_heads"),
            ("base_min_level", 1 <= self.base_min_level <= self.base_max_level, "needs 1 <= base_min_level <= base_max_level"),
            ("eval_min_level", 1 <= self.eval_min_level <= self.eval_max_level, "needs 1 <= eval_min_level <= eval_max_level"),
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
        ]
        if self.push_to_hub and not self.hub_model_id:
            raise RecipeError("push_to_hub: needs hub_model_id (namespace/name)")
        if self.init_from is not None:
            from .hub import parse_init_from

            try:
                parse_init_from(self.init_from)
            except ValueError as err:
                raise RecipeError(f"init_from={self.init_from!r}: {err}") from None
        for name, ok, why in checks:
            if not ok:
                raise RecipeError(f"{name}={getattr(self, name)!r}: {why}")
        from .filters import parse_filter_spec

        for spec in self.filters:
            try:
                parse_filter_spec(spec)
            except ValueError as err:
                raise RecipeError(f"filters: {err}") from None
        return self

    # Fields that change how a run is watched or how fast it goes, never what it computes.
    RESUMABLE_CHANGES = ("num_rounds", "report_to", "logging_steps", "disable_tqdm", "overwrite_output_dir",
                         "label_batch_size", "output_dir", "num_threads", "push_to_hub", "hub_model_id",
                         "hub_dataset_id", "hub_private")

    def to_dict(self):
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(Recipe)}


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
