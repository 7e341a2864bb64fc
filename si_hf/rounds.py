"""The self-improvement loop: train -> evaluate -> label the next level -> filter -> save -> repeat.

This is the only module that knows the order of the steps. A round is finished once its directory
`round-<k>` exists: everything is written to a temporary directory first, then renamed.
"""

import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
import yaml
from accelerate import PartialState
from datasets import Dataset, disable_progress_bars, load_from_disk
from transformers import set_seed

from .confidence import score_labels
from .config import Recipe, RecipeError
from .data import (base_dataset, eval_problems, level_values, mixture, round_features, sample_problems, seeded_rng,
                   tokenize)
from .evaluation import evaluate_levels
from .filters import apply_filters, parse_filter_spec
from .hub import Publisher, import_rounds, imported_from, parent_of, write_model_card
from .labeling import greedy_label
from .modeling import SIForCausalLM
from .tasks import get_task
from .tokenization import task_tokenizer
from .training import build_model, make_trainer

logger = logging.getLogger("si_hf")


def round_dir(output_dir, k: int) -> Path:
    return Path(output_dir) / f"round-{k}"


def finished_rounds(output_dir) -> list[int]:
    out = Path(output_dir)
    if not out.is_dir():
        return []
    done = []
    for d in out.glob("round-*"):
        suffix = d.name.removeprefix("round-")
        if suffix.isdigit() and (d / "eval.json").is_file():
            done.append(int(suffix))
    return sorted(done)


def check_output_dir(recipe: Recipe):
    """Refuse to mix two recipes in one output directory (unless asked to overwrite)."""
    out = Path(recipe.output_dir)
    saved = out / "recipe.yaml"
    if not saved.is_file():
        return
    old = yaml.safe_load(saved.read_text())
    new = recipe.to_dict()
    diff = sorted(k for k in set(old) | set(new) if k not in Recipe.RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if not diff:
        return
    if recipe.overwrite_output_dir:
        state = PartialState()
        if state.is_main_process:
            logger.warning("Deleting the run in %s (another recipe): overwrite_output_dir is set", out)
            shutil.rmtree(out)
        state.wait_for_everyone()
        return
    details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
    raise RecipeError(
        f"{out} holds a run of a different recipe ({details}). Use another output_dir, or pass "
        "--overwrite_output_dir true to delete it."
    )


class SelfImprovement:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.state = PartialState()
        disable_progress_bars()  # dataset bookkeeping is quick; keep the log to rounds, training and labeling
        if not torch.cuda.is_available():
            # `accelerate launch` pins OMP_NUM_THREADS=1 unless told otherwise; use the cores we have.
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            torch.set_num_threads(recipe.num_threads or max(1, cores // self.state.num_processes))
        self.task = get_task(recipe.task)
        self.tokenizer = task_tokenizer(self.task)
        self.out = Path(recipe.output_dir)
        self.eval_sets = {
            level: eval_problems(self.task, level, recipe.eval_size, recipe.seed)
            for level in self.task.eval_levels(recipe.eval_min_level, recipe.eval_max_level)
        }
        self.held_out = {self.task.prompt(p) for ps in self.eval_sets.values() for p in ps}
        self.rounds_data: list[Dataset] = []
        self.hub: Publisher | None = None
        self.summary: list[dict] = []

    # -- helpers -------------------------------------------------------------------------------
    def log(self, msg: str):
        if self.state.is_main_process:
            print(msg, flush=True)


    def _resume(self):
        done = finished_rounds(self.out)
        expected = list(range(len(done)))
        if done != expected:
            raise RuntimeError(f"{self.out}: finished rounds {done} are not consecutive from 0; cannot resume")
        if not done:
            set_seed(self.recipe.seed)
            return build_model(self.recipe, self.tokenizer), 0
        last = done[-1]
        model_dir = round_dir(self.out, last) / "model"
        try:
            model = SIForCausalLM.from_pretrained(model_dir)
        except (OSError, ValueError) as err:
            raise RuntimeError(f"cannot load the checkpoint of finished round {last} from {model_dir}: {err}") from err
        model.to(self.state.device)
        for k in done:
            # In memory: later mixtures must not write cache files into finished rounds.
            self.rounds_data.append(load_from_disk(str(round_dir(self.out, k) / "data"), keep_in_memory=True))
        summary_path = self.out / "summary.jsonl"
        if summary_path.is_file():
            self.summary = [json.loads(line) for line in summary_path.read_text().splitlines() if line.strip()]
            self.summary = [row for row in self.summary if row["round"] <= last]
        self.log(f"Resuming {self.out}: rounds 0-{last} are finished; continuing with round {last + 1}.")
        return model, last + 1

    # -- the steps -----------------------------------------------------------------------------
    def base_data(self) -> Dataset:
        r = self.recipe
        n = r.base_examples or r.base_steps * r.batch_size
        return base_dataset(self.task, r.base_min_level, r.base_max_level, n, r.seed, self.held_out)

    def self_labeled_data(self, model, k: int) -> tuple[Dataset, dict]:
        r, task = self.recipe, self.task
        levels = task.round_levels(r.base_max_level, k)
        names = "&".join(task.level_name(level) for level in levels)
        rng = seeded_rng(r.seed, "label", task.name, k)
        problems = []
        for level in levels:  # labels_per_round problems at each new level
            problems += sample_problems(task, r.labels_per_round, lambda: task.sample(level, rng), self.held_out)
        prompts = [task.prompt(p) for p in problems]
        labels = greedy_label(
            model, self.tokenizer, prompts, [task.max_answer_len(q) for q in prompts],
            batch_size=r.label_batch_size, backend=r.labeler, desc=f"labeling level {names}",
            disable_tqdm=r.disable_tqdm,
        )
        if any(parse_filter_spec(spec)[0] == "confidence" for spec in r.filters):
            labels = score_labels(model, self.tokenizer, labels, batch_size=r.label_batch_size)
        keep, filter_stats = apply_filters(task, labels, r.filters)
        correct = [lab.completion == task.answer(p) for lab, p in zip(labels, problems)]
        rows = [i for i, kept in enumerate(keep) if kept]
        data = Dataset.from_dict(
            {
                "prompt": [prompts[i] for i in rows],
                "completion": [labels[i].completion for i in rows],
                "level": level_values([problems[i] for i in rows]),
                "round": [k] * len(rows),
                "correct": [correct[i] for i in rows],
            },
            features=round_features(task),
        )
        stats = {
            "level": names,
            "labeled": len(labels),
            "kept": len(rows),
            "label_accuracy_all": sum(correct) / len(correct),
            "label_accuracy_kept": (sum(correct[i] for i in rows) / len(rows)) if rows else None,
            "filters": filter_stats,
        }
        return data, stats

    def train(self, model, k: int, data: Dataset):
        r = self.recipe
        if k == 0:
            train_rows = data
        else:
            steps = r.round_steps
            if len(data) == 0:
                logger.warning("Round %d kept no labels; training on base and older rounds only", k)
            train_rows = mixture(data, self.rounds_data, steps * r.batch_size, r.newest_fraction, r.seed + k)
        train_set = tokenize(train_rows, self.tokenizer)
        trainer = make_trainer(model, self.tokenizer, train_set, r, k, str(self.out / ".trainer"))
        result = trainer.train()
        return trainer, result

    def run_round(self, model, k: int):
        r = self.recipe
        start = time.time()
        if k == 0:
            data, label_stats = self.base_data(), None
            trained = f"{r.base_min_level}-{r.base_max_level}"
        else:
            data, label_stats = self.self_labeled_data(model, k)
            trained = str(label_stats["level"])
        trainer, train_result = self.train(model, k, data)
        size = r.eval_size if (k == r.num_rounds or r.round_eval_size is None) else r.round_eval_size
        eval_sets = {level: problems[:size] for level, problems in self.eval_sets.items()}
        ev = evaluate_levels(model, self.tokenizer, self.task, eval_sets, r.label_batch_size, r.labeler,
                             r.disable_tqdm)
        front = self.task.frontier(ev["by_level"], r.frontier_threshold)
        wall = time.time() - start
        record = {
            "round": k,
            "levels_trained": trained,
            "frontier": front,
            "exact_match": ev["exact_match"],
            "accuracy_by_level": {self.task.level_name(lvl): acc for lvl, acc in ev["by_level"].items()},
            "eval_size_by_level": {self.task.level_name(lvl): n for lvl, n in ev["count_by_level"].items()},
            "labels": label_stats,
            "train_loss": train_result.training_loss,
            "train_steps": train_result.global_step,
            "wall_seconds": round(wall, 1),
        }
        trainer.log(
            {
                "round": k,
                "frontier": front,
                **{f"accuracy_level_{self.task.level_name(lvl)}": acc for lvl, acc in ev["by_level"].items()},
                **({"label_accuracy_kept": label_stats["label_accuracy_kept"] or 0.0,
                    "kept_fraction": label_stats["kept"] / label_stats["labeled"]} if label_stats else {}),
            }
        )
        self.save_round(model, k, data, record)
        self.rounds_data.append(data)
        self.summary.append(record)
        self.write_summary()
        self.log(self.progress_line(record))
        self.publish(k)

    def publish(self, k: int):
        """Pushes round k (its directory is complete) when the recipe asks for it."""
        if self.hub is not None and self.state.is_main_process:
            self.hub.publish_round(k)
        self.state.wait_for_everyone()

    def save_round(self, model, k: int, data: Dataset, record: dict):
        if self.state.is_main_process:
            tmp = self.out / f".round-{k}.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            model.save_pretrained(tmp / "model")
            self.tokenizer.save_pretrained(tmp / "model")
            data.save_to_disk(str(tmp / "data"), num_shards=1)  # one shard even when no label was kept
            (tmp / "eval.json").write_text(json.dumps(record, indent=2))
            repos = {"model_repo": self.hub.model_repo, "data_repo": self.hub.data_repo} if self.hub else {}
            write_model_card(tmp / "model", self.recipe.to_dict(), self.summary + [record], k,
                             parent=parent_of(self.out, k), shown_dir=round_dir(self.out, k) / "model", **repos)
            os.replace(tmp, round_dir(self.out, k))
        self.state.wait_for_everyone()

    # -- reporting -----------------------------------------------------------------------------
    def progress_line(self, rec: dict) -> str:
        R = self.recipe.num_rounds
        acc = rec["accuracy_by_level"]
        if rec["labels"]:
            lab = rec["labels"]
            lvl = lab["level"].split("&")[0]
            kept_acc = lab["label_accuracy_kept"]
            label_part = (f"kept {lab['kept']}/{lab['labeled']} | label acc {kept_acc:.3f}" if kept_acc is not None
                          else f"kept 0/{lab['labeled']}")
            return (f"[round {rec['round']}/{R}] level {lvl} | {label_part} | acc@{lvl} {acc.get(lvl, float('nan')):.3f}"
                    f" | frontier {rec['frontier']} | {rec['wall_seconds']:.0f}s")
        return (f"[round 0/{R}] base levels {rec['levels_trained']} | frontier {rec['frontier']} | "
                f"exact match {rec['exact_match']:.3f} | {rec['wall_seconds']:.0f}s")

    def write_summary(self):
        if not self.state.is_main_process:
            return
        with open(self.out / "summary.jsonl", "w") as fh:
            for rec in self.summary:
                fh.write(json.dumps(rec) + "\n")
        (self.out / "summary.md").write_text(summary_table(self.summary))

    # -- the loop ------------------------------------------------------------------------------
    def run(self):
        check_output_dir(self.recipe)
        if self.state.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in self.out.glob(".round-*.tmp"):
                shutil.rmtree(stale)
            (self.out / "recipe.yaml").write_text(yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        self.state.wait_for_everyone()
        if self.recipe.init_from and not imported_from(self.out):
            if self.state.is_main_process:
                import_rounds(self.recipe.init_from, self.out, self.recipe)
            self.state.wait_for_everyone()
        if self.recipe.push_to_hub:
            self.hub = Publisher(self.recipe, self.out, log=self.log)
            if self.state.is_main_process:
                self.hub.connect().publish_missing()  # what an earlier run could not push
            self.state.wait_for_everyone()
        model, start = self._resume()
        if start > self.recipe.num_rounds:
            self.log(f"All {self.recipe.num_rounds} rounds of {self.out} are finished.")
        for k in range(start, self.recipe.num_rounds + 1):
            self.run_round(model, k)
        return self.summary


def summary_table(summary: list[dict]) -> str:
    """Markdown table: one row per round, one accuracy column per evaluated level."""
    levels = list(dict.fromkeys(lvl for rec in summary for lvl in rec["accuracy_by_level"]))  # eval order
    head = ["round", "trained", "frontier", *[f"@{lvl}" for lvl in levels], "label acc", "kept/labeled", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in summary:
        lab = rec["labels"]
        accs = [f"{rec['accuracy_by_level'][lvl]:.3f}" if lvl in rec["accuracy_by_level"] else ""
                for lvl in levels]
        label_acc = "" if not lab or lab["label_accuracy_kept"] is None else f"{lab['label_accuracy_kept']:.3f}"
        kept = "" if not lab else f"{lab['kept']}/{lab['labeled']}"
        row = [str(rec["round"]), rec["levels_trained"], str(rec["frontier"]), *accs, label_acc, kept,
               f"{rec['wall_seconds']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
