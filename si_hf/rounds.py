"""The self-improvement loop: train -> evaluate -> label the next level -> filter -> save -> repeat.

This is the only module that knows the order of the steps. A round is finished once its directory
`round-<k>` holds its manifest: everything is written to a temporary directory first, the manifest
(checksums of every file) last, then the directory is renamed (si_hf.manifest).
"""

import dataclasses
import io
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
from safetensors import SafetensorError
from transformers import set_seed

from .confidence import score_labels
from .config import Recipe, RecipeError
from .consistency import compose_labels
from .corruption import corrupt_completions
from .data import (
    base_dataset,
    eval_problems,
    level_values,
    mixture,
    round_features,
    sample_problems,
    seeded_rng,
    tokenize,
)
from .distributed import (
    map_split,
    mean_over_processes,
    per_device_batch_size,
    process_state,
    unsharded_model,
    uses_fsdp,
)
from .evaluation import evaluate_levels
from .filters import parse_filter_spec, select_labels
from .hub import Publisher, import_rounds, imported_from, parent_of, write_model_card
from .killpoints import kill_point
from .labeling import greedy_label
from .manifest import RoundError, adopt_legacy_rounds, is_finished, staged_round, unfinished_round_dirs, verify_rounds
from .pretrained import load_round_model, lora_adapter
from .schedule import accelerated_stages, passes, stop_decision
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
        if suffix.isdigit() and is_finished(d, int(suffix)):  # a directory without a valid manifest does not count
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
    defaults = Recipe().to_dict()  # a field the saved recipe predates counts as its default
    diff = sorted(k for k in set(old) | set(new)
                  if k not in Recipe.RESUMABLE_CHANGES and old.get(k, defaults.get(k)) != new.get(k))
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
        self.state = process_state()  # one process, DDP or FSDP (on the CPU too; si_hf.distributed)
        per_device_batch_size(recipe.batch_size, self.state.num_processes)  # the global batch must split evenly
        if recipe.lora_r and uses_fsdp():
            raise RecipeError("lora_r > 0 is not supported under FSDP (the adapter is merged into the model in "
                              "place, which FSDP has sharded): use DDP (recipes/accelerate/multi_gpu.yaml)")
        disable_progress_bars()  # dataset bookkeeping is quick; keep the log to rounds, training and labeling
        if not torch.cuda.is_available():
            # `accelerate launch` pins OMP_NUM_THREADS=1 unless told otherwise; use the cores we have, shared
            # among the processes on this machine (LOCAL_WORLD_SIZE; num_processes counts every machine's).
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            local = int(os.environ.get("LOCAL_WORLD_SIZE", self.state.num_processes))
            torch.set_num_threads(recipe.num_threads or max(1, cores // local))
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
        # The K seed lineages (lineage 0 is the model the loop reports on) and the highest stage trained
        # (see si_hf.schedule): set by run().
        self.lineages: list = []
        self.stage = 0

    # -- helpers -------------------------------------------------------------------------------
    def log(self, msg: str):
        if self.state.is_main_process:
            print(msg, flush=True)


    def _resume(self):
        done = finished_rounds(self.out)
        expected = list(range(len(done)))
        if done != expected:
            gap = min(set(range(done[-1] + 1)) - set(done))
            raise RoundError(f"{self.out}: finished rounds {done} are not consecutive from 0 "
                             f"({round_dir(self.out, gap)} "
                             "is missing or has no valid manifest.json); cannot resume")
        for d in unfinished_round_dirs(self.out):
            self.log(f"{d} has no valid manifest.json (an interrupted or damaged round): it does not count and is "
                     "computed again.")
        if not done:
            set_seed(self.recipe.seed)
            return build_model(self.recipe, self.tokenizer), 0
        last = done[-1]
        verify_rounds(self.out, done)  # checksums of the last round, sizes of the others: RoundError names the file
        model_dir = round_dir(self.out, last) / "model"
        try:
            model = load_round_model(model_dir)
        except (OSError, ValueError, SafetensorError) as err:
            weights = ", ".join(str(p) for p in sorted(model_dir.glob("*.safetensors"))) or str(model_dir)
            raise RoundError(f"cannot load the checkpoint of finished round {last} ({weights}): {err}") from err
        model.to(self.state.device)
        for k in done:
            # In memory: later mixtures must not write cache files into finished rounds.
            self.rounds_data.append(load_from_disk(str(round_dir(self.out, k) / "data"), keep_in_memory=True))
        # The finished rounds' records are the summary (a run killed before rewriting summary.jsonl lacks a row).
        self.summary = [json.loads((round_dir(self.out, k) / "eval.json").read_text()) for k in done]
        summary_path = self.out / "summary.jsonl"
        if (any(not (self.out / name).is_file() for name in ("summary.jsonl", "summary.md", "summary.png"))
                or summary_path.read_text() != "".join(json.dumps(r) + "\n" for r in self.summary)):
            self.write_summary()
        self.log(f"Resuming {self.out}: rounds 0-{last} are finished; continuing with round {last + 1}.")
        return model, last + 1

    def _extra_lineages(self, start: int) -> list:
        """Lineages 1..K-1 (seeds seed+1, ...): new models before round 0, else the checkpoints of the
        last finished round (round-<k>/models/seed-<i>)."""
        r = self.recipe
        extra = []
        for i in range(1, r.num_seeds):
            if start == 0:
                set_seed(r.seed + i)
                extra.append(build_model(r, self.tokenizer))
                continue
            path = round_dir(self.out, start - 1) / "models" / f"seed-{i}"
            try:
                model = load_round_model(path)
            except (OSError, ValueError) as err:
                raise RuntimeError(f"cannot load lineage {i} (seed {r.seed + i}) of finished round {start - 1} "
                                   f"from {path}: {err}") from err
            extra.append(model.to(self.state.device))
        if start == 0 and extra:
            set_seed(r.seed)
        return extra

    def _last_stage(self, start: int) -> int:
        """The highest stage trained by the finished rounds (eval.json `stage`; runs without it: +1 per round)."""
        if start == 0:
            return 0
        record = json.loads((round_dir(self.out, start - 1) / "eval.json").read_text())
        return int(record.get("stage", start - 1))

    # -- the steps -----------------------------------------------------------------------------
    def base_data(self) -> Dataset:
        r = self.recipe
        n = r.base_examples or r.base_steps * r.batch_size
        return base_dataset(self.task, r.base_min_level, r.base_max_level, n, r.seed, self.held_out)

    def self_labeled_data(self, model, k: int, levels: list | None = None) -> tuple[Dataset, dict]:
        """Round k's kept labels at `levels` (default: the task's round_levels for k). Every lineage labels
        the same problems; the recipe's filters (the vote first) decide; with `corrupt_round` == k a
        share of the kept labels is corrupted afterwards."""
        r, task = self.recipe, self.task
        levels = task.round_levels(r.base_max_level, k) if levels is None else levels
        names = "&".join(task.level_name(level) for level in levels)
        rng = seeded_rng(r.seed, "label", task.name, k)
        problems = []
        for level in levels:  # labels_per_round problems at each new level
            problems += sample_problems(task, r.labels_per_round, lambda: task.sample(level, rng), self.held_out)
        prompts = [task.prompt(p) for p in problems]
        bounds = [task.max_answer_len(q) for q in prompts]
        models = [model, *self.lineages[1:]]
        # With several processes each labels its share of the prompts (per level) and every process gets
        # all the labels, in order (si_hf.distributed.map_split).
        groups = [task.level_name(p.level) for p in problems]
        quiet = r.disable_tqdm or not self.state.is_local_main_process
        label_sets = [
            map_split(lambda share, m=m, i=i: greedy_label(
                m, self.tokenizer, [prompts[j] for j in share], [bounds[j] for j in share],
                batch_size=r.label_batch_size, backend=r.labeler,
                desc=f"labeling level {names}" + (f" (seed {r.seed + i})" if len(models) > 1 else ""),
                disable_tqdm=quiet), range(len(prompts)), groups)
            for i, m in enumerate(models)
        ]
        kill_point("label", k)  # a test hook (si_hf.killpoints); nothing unless a test sets it
        labels, keep, filter_stats, masks = select_labels(task, label_sets, r.filters,
                                                          score=lambda labels: self.score(model, labels, groups))
        answers = [task.answer(p) for p in problems]
        correct = [lab.completion == a for lab, a in zip(labels, answers)]
        # Analysis only (no filter reads it): how many of what each step kept are right.
        for step, mask in zip(filter_stats, masks):
            kept_correct = [c for c, m in zip(correct, mask) if m]
            step["label_accuracy"] = sum(kept_correct) / len(kept_correct) if kept_correct else None
        if len(label_sets) > 1:
            filter_stats[0]["seed_label_accuracy"] = [
                sum(lab.completion == a for lab, a in zip(ls, answers)) / len(ls) for ls in label_sets]
        rows = [i for i, kept in enumerate(keep) if kept]
        completions = [labels[i].completion for i in rows]
        corruption = None
        if r.corrupt_round == k:
            before = sum(correct[i] for i in rows)
            completions, chosen = corrupt_completions(completions, r.corrupt_fraction, r.corrupt_mode,
                                                      seeded_rng(r.seed, "corrupt", task.name, k))
            corruption = {
                "mode": r.corrupt_mode, "fraction": r.corrupt_fraction, "corrupted": len(chosen),
                "changed": sum(completions[j] != labels[rows[j]].completion for j in chosen),
                "label_accuracy_kept_before": before / len(rows) if rows else None,
            }
        kept_correct = [completions[j] == answers[i] for j, i in enumerate(rows)]
        data = Dataset.from_dict(
            {
                "prompt": [prompts[i] for i in rows],
                "completion": completions,
                "level": level_values([problems[i] for i in rows]),
                "round": [k] * len(rows),
                "correct": kept_correct,
            },
            features=round_features(task),
        )
        stats = {
            "level": names,
            "labeled": len(labels),
            "kept": len(rows),
            "label_accuracy_all": sum(correct) / len(correct),
            "label_accuracy_kept": (sum(kept_correct) / len(rows)) if rows else None,
            "filters": filter_stats,
        }
        if corruption is not None:
            stats["corruption"] = corruption
        return data, stats

    def score(self, model, labels: list, groups: list) -> list:
        """What the recipe's filters read beyond the labels, from the first model (split across processes
        like the labeling): its confidence in each label, the answer its own answers to the pieces imply."""
        r = self.recipe
        options = {name: opts for name, opts in map(parse_filter_spec, r.filters)}
        groups = groups if len(labels) == len(groups) else None
        if "confidence" in options:
            labels = map_split(lambda share: score_labels(model, self.tokenizer, share, r.label_batch_size),
                               labels, groups)
        if "pieces" in options:
            max_piece = options["pieces"].get("max_piece") or r.base_max_level
            labels = map_split(lambda share: compose_labels(model, self.tokenizer, self.task, share, max_piece,
                                                            r.label_batch_size, r.labeler), labels, groups)
        return labels

    def next_stages(self, model, k: int) -> tuple[list[int], dict | None]:
        """The stages round k labels (see si_hf.schedule), and for the accelerated schedule what the probe
        measured: fresh problems (never held-out ones; past every level trained, so never training
        data) at the stages after the highest trained, one by one until one fails."""
        r, task = self.recipe, self.task
        if r.schedule != "accelerated":
            return [self.stage + 1], None
        probed = []
        for j in range(1, r.probe_max_levels + 1):
            sets = {}
            for level in task.round_levels(r.base_max_level, self.stage + j):
                rng = seeded_rng(r.seed, "probe", task.name, k, task.level_name(level))
                sets[level] = sample_problems(task, r.probe_size, lambda lv=level, g=rng: task.sample(lv, g),
                                              self.held_out)
            ev = evaluate_levels(model, self.tokenizer, task, sets, r.label_batch_size, r.labeler, r.disable_tqdm)
            probed.append(ev["by_level"])
            if not passes(ev["by_level"], r.frontier_threshold):
                break
        stages = accelerated_stages(self.stage, probed, r.frontier_threshold)
        probe = {"size": r.probe_size, "threshold": r.frontier_threshold,
                 "accuracy_by_level": {task.level_name(lvl): acc for by in probed for lvl, acc in by.items()},
                 "stages_taken": len(stages)}
        return stages, probe

    def train(self, model, k: int, data: Dataset, lineage: int = 0):
        """Trains `model` on round k's mixture (the same rows for every lineage); lineage i's Trainer is
        seeded with seed + i. Returns the Trainer, its result and the trained model: `model` itself, or
        under FSDP (which shards `model` in place) a plain model with the gathered full weights."""
        r = self.recipe
        if k == 0:
            train_rows = data
        else:
            steps = r.round_steps
            if len(data) == 0:
                logger.warning("Round %d kept no labels; training on base and older rounds only", k)
            train_rows = mixture(data, self.rounds_data, steps * r.batch_size, r.newest_fraction, r.seed + k,
                                 older_weighting=r.older_weighting)
        train_set = tokenize(train_rows, self.tokenizer)
        trainer_recipe = dataclasses.replace(r, seed=r.seed + lineage) if lineage else r
        # With lora_r: a fresh adapter for this round, merged into `model` when training ends.
        cls = type(model)
        with lora_adapter(model, r, seed=trainer_recipe.seed + k) as trained:
            trainer = make_trainer(trained, self.tokenizer, train_set, trainer_recipe, k, str(self.out / ".trainer"))
            result = trainer.train()
        if trainer.is_fsdp_enabled:
            # Every process gathers the full weights into a plain model: labeling, evaluation and saving read
            # them, and the next round's Trainer shards that model afresh (never one already sharded).
            model = unsharded_model(trainer.model, cls, self.state.device)
            if not lineage:
                self.log(f"FSDP: round {k}'s full weights gathered from {self.state.num_processes} processes")
        # Under DDP each process reports the loss of its own rows: the mean over processes is the batch's.
        return trainer, result._replace(training_loss=mean_over_processes(result.training_loss)), model

    def run_round(self, model, k: int):
        r = self.recipe
        start = time.time()
        probe = None
        if k == 0:
            data, label_stats = self.base_data(), None
            trained = f"{r.base_min_level}-{r.base_max_level}"
            stage = 0
        else:
            stages, probe = self.next_stages(model, k)
            levels = [level for s in stages for level in self.task.round_levels(r.base_max_level, s)]
            data, label_stats = self.self_labeled_data(model, k, levels)
            trained = str(label_stats["level"])
            stage = stages[-1]
            if "corruption" in label_stats:
                c = label_stats["corruption"]
                self.log(f"[round {k}/{r.num_rounds}] corrupted {c['corrupted']}/{label_stats['kept']} kept labels "
                         f"({c['mode']}, fraction {c['fraction']})")
        trainer, train_result, model = self.train(model, k, data)
        self.lineages[0] = model
        seed_losses = []
        for i, m in enumerate(self.lineages[1:], 1):
            _, seed_result, self.lineages[i] = self.train(m, k, data, lineage=i)
            seed_losses.append(seed_result.training_loss)
        size = r.eval_size if (k == r.num_rounds or r.round_eval_size is None) else r.round_eval_size
        eval_sets = {level: problems[:size] for level, problems in self.eval_sets.items()}
        ev = evaluate_levels(model, self.tokenizer, self.task, eval_sets, r.label_batch_size, r.labeler,
                             r.disable_tqdm)
        front = self.task.frontier(ev["by_level"], r.frontier_threshold, ev["count_by_level"])
        seed_evals = [evaluate_levels(m, self.tokenizer, self.task, eval_sets, r.label_batch_size, r.labeler,
                                      r.disable_tqdm) for m in (self.lineages[1:] if r.eval_all_seeds else [])]
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
            "stage": stage,  # the highest stage trained so far (si_hf.schedule)
            "wall_seconds": round(wall, 1),
        }
        if probe is not None:
            record["probe"] = probe
        if seed_losses:
            record["seed_train_loss"] = seed_losses  # lineages 1..K-1
        if seed_evals:
            record["seed_accuracy_by_level"] = [
                {self.task.level_name(lvl): acc for lvl, acc in e["by_level"].items()} for e in seed_evals]
            record["seed_frontier"] = [self.task.frontier(e["by_level"], r.frontier_threshold, e["count_by_level"])
                                     for e in seed_evals]
        record["stopped"] = stop_decision(self.summary + [record], r.stop_patience, r.collapse_floor)
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
        kill_point("saved", k)  # a test hook (si_hf.killpoints)
        self.stage = stage
        self.rounds_data.append(data)
        self.summary.append(record)
        self.write_summary()
        self.log(self.progress_line(record))
        if record["stopped"]:
            stopped = record["stopped"]
            self.log(f"[round {k}/{r.num_rounds}] stopping ({stopped['rule']}): {stopped['reason']}")
        self.publish(k)
        return model

    def publish(self, k: int):
        """Pushes round k (its directory is complete) when the recipe asks for it."""
        if self.hub is not None and self.state.is_main_process:
            self.hub.publish_round(k)
        self.state.wait_for_everyone()

    def save_round(self, model, k: int, data: Dataset, record: dict):
        if self.state.is_main_process:
            # Written into .round-<k>.tmp; the manifest last, then renamed to round-<k> (si_hf.manifest). On an
            # error (a full disk included) the temporary directory is removed and no round-<k> appears.
            parent = parent_of(self.out, k) or (f"round-{k - 1}" if k else None)
            with staged_round(self.out, k, self.recipe.to_dict(), parent) as tmp:
                model.save_pretrained(tmp / "model")
                self.tokenizer.save_pretrained(tmp / "model")
                for i, extra in enumerate(self.lineages[1:], 1):  # the other seed lineages
                    extra.save_pretrained(tmp / "models" / f"seed-{i}")
                    self.tokenizer.save_pretrained(tmp / "models" / f"seed-{i}")
                kill_point("save", k)  # a test hook (si_hf.killpoints)
                data.save_to_disk(str(tmp / "data"), num_shards=1)  # one shard even when no label was kept
                (tmp / "eval.json").write_text(json.dumps(record, indent=2))
                repos = {"model_repo": self.hub.model_repo, "data_repo": self.hub.data_repo} if self.hub else {}
                write_model_card(tmp / "model", self.recipe.to_dict(), self.summary + [record], k,
                                 parent=parent_of(self.out, k), shown_dir=round_dir(self.out, k) / "model", **repos)
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
            return (f"[round {rec['round']}/{R}] level {lvl} | {label_part} | "
                    f"acc@{lvl} {acc.get(lvl, float('nan')):.3f}"
                    f" | frontier {rec['frontier']} | {rec['wall_seconds']:.0f}s")
        return (f"[round 0/{R}] base levels {rec['levels_trained']} | frontier {rec['frontier']} | "
                f"exact match {rec['exact_match']:.3f} | {rec['wall_seconds']:.0f}s")

    def write_summary(self):
        if not self.state.is_main_process:
            return
        with open(self.out / "summary.jsonl.tmp", "w") as fh:  # replaced whole: a kill never leaves half a line
            for rec in self.summary:
                fh.write(json.dumps(rec) + "\n")
        os.replace(self.out / "summary.jsonl.tmp", self.out / "summary.jsonl")
        (self.out / "summary.md").write_text(summary_table(self.summary))
        (self.out / "summary.png").write_bytes(plot_summary(self.summary))

    # -- the loop ------------------------------------------------------------------------------
    def run(self):
        check_output_dir(self.recipe)
        if self.state.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in self.out.glob(".round-*.tmp"):
                shutil.rmtree(stale)
            adopt_legacy_rounds(self.out, self.recipe.to_dict(), log=self.log)  # runs older than round manifests
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
        self.lineages = [model, *self._extra_lineages(start)]
        self.stage = self._last_stage(start)
        stopped = stop_decision(self.summary, self.recipe.stop_patience, self.recipe.collapse_floor) if start else None
        if start > self.recipe.num_rounds:
            self.log(f"All {self.recipe.num_rounds} rounds of {self.out} are finished.")
        elif stopped:
            self.log(f"{self.out} stopped after round {start - 1} ({stopped['rule']}): {stopped['reason']}. "
                     f"Unset or change {stopped['rule']} to go on.")
            return self.summary
        for k in range(start, self.recipe.num_rounds + 1):
            model = self.run_round(model, k)
            if self.summary[-1].get("stopped"):
                break
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
    notes = []
    for rec in summary:
        corruption = (rec.get("labels") or {}).get("corruption")
        if corruption:
            notes.append(f"Round {rec['round']}: {corruption['corrupted']} kept labels corrupted on purpose "
                         f"({corruption['mode']}, fraction {corruption['fraction']}).")
    if summary and summary[-1].get("stopped"):
        stopped = summary[-1]["stopped"]
        notes.append(f"Stopped after round {stopped['round']} ({stopped['rule']}): {stopped['reason']}.")
    return "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in notes)


def plot_summary(summary: list[dict]) -> bytes:
    """PNG: the frontier and the label accuracy (kept labels) per round; corrupted rounds marked."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg, no display needed

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    rounds = [rec["round"] for rec in summary]
    ax.plot(rounds, [rec["frontier"] for rec in summary], marker="o", color="tab:blue", label="frontier")
    ax.set_xlabel("round")
    ax.set_ylabel("frontier", color="tab:blue")
    ax.grid(alpha=0.3)
    acc = ax.twinx()
    points = [(rec["round"], rec["labels"]["label_accuracy_kept"]) for rec in summary
              if rec.get("labels") and rec["labels"].get("label_accuracy_kept") is not None]
    if points:
        acc.plot(*zip(*points), marker="s", color="tab:orange", label="label accuracy (kept)")
    acc.set_ylim(-0.02, 1.02)
    acc.set_ylabel("label accuracy (kept labels)", color="tab:orange")
    for rec in summary:
        if (rec.get("labels") or {}).get("corruption"):
            ax.axvline(rec["round"], color="tab:red", linestyle="--", alpha=0.6)
    title = "frontier and label accuracy by round"
    if summary and summary[-1].get("stopped"):
        title += f" (stopped: {summary[-1]['stopped']['rule']})"
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
