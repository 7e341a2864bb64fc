"""The self-improvement loop: train -> evaluate -> label the next level -> filter -> save -> repeat.

This is the only module that knows the order of the steps. A round is finished once its directory
`round-<k>` holds its manifest: everything is written to a temporary directory first, the manifest
(checksums of every file) last, then the directory is renamed (si_hf.manifest).
"""

import contextlib
import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

import torch
import yaml
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from datasets import Dataset, disable_progress_bars, load_from_disk
from safetensors import SafetensorError
from transformers import set_seed

from .branch import branch_rounds, check_lineage_source, check_source, local_source
from .cards import plot_level_map, plot_summary, prediction_text, summary_table, write_model_card
from .confidence import score_labels
from .config import RESUMABLE_CHANGES, Recipe, recipe_warnings
from .consistency import compose_labels, swap_labels
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
from .errors import RecipeError, RoundError
from .evaluation import evaluate_levels
from .filters import parse_filter_spec, select_labels
from .hub import Publisher, import_rounds, imported_from, parent_of
from .killpoints import kill_point
from .labeling import greedy_label
from .lock import LOCK_FILES, RunLock
from .manifest import (
    adopt_legacy_rounds,
    finished_rounds,
    staged_round,
    unfinished_round_dirs,
    verify_lineage,
    verify_rounds,
)
from .pretrained import load_round_model, lora_adapter
from .records import (
    SUMMARY_FILE,
    LabelStats,
    RoundRecord,
    parse_init_from,
    read_record,
    read_summary,
    round_dir,
    round_name,
    write_record,
    write_summary,
)
from .schedule import accelerated_stages, final_stage_reached, passes, stop_decision
from .sustainability import Law, prediction
from .tasks import get_task
from .timing import PhaseTimes, phases_text
from .tokenization import task_tokenizer
from .tracking import TRACKED, RunTracker, reporters
from .training import build_model, make_trainer

logger = logging.getLogger("si_hf")


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
                  if k not in RESUMABLE_CHANGES and old.get(k, defaults.get(k)) != new.get(k))
    if not diff:
        if old.get("num_threads") != new["num_threads"] and finished_rounds(out):
            logger.warning("%s: num_threads was %s and is %s now: the rounds still to come are computed right, but "
                           "with sums in another order they depart from what the uninterrupted run would give",
                           out, old.get("num_threads"), new["num_threads"])
        return
    if recipe.overwrite_output_dir:
        state = PartialState()
        if state.is_main_process:
            logger.warning("Deleting the run in %s (another recipe): overwrite_output_dir is set", out)
            for entry in out.iterdir():
                if entry.name in LOCK_FILES:  # this run holds the directory (si_hf.lock)
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        state.wait_for_everyone()
        return
    details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
    raise RecipeError(
        f"{out} holds a run of a different recipe ({details}). Use another output_dir, or pass "
        "--overwrite_output_dir true to delete it."
    )


def label_accuracy(labels, answers, label_sets, filter_stats, masks, kept_correct: list[bool]) -> dict:
    """Analysis only (no filter reads it): how many labels are right, in all, after each filter step
    (written into `filter_stats`), per lineage, and among the rows trained on (`kept_correct`)."""
    correct = [lab.completion == a for lab, a in zip(labels, answers)]
    for step, mask in zip(filter_stats, masks):
        step_correct = [c for c, m in zip(correct, mask) if m]
        step["label_accuracy"] = sum(step_correct) / len(step_correct) if step_correct else None
    own = sum(lab.completion == a for lab, a in zip(label_sets[0], answers)) / len(answers)
    for step in filter_stats:
        if step.get("composed") is not None:  # the compose step replaced labels: how right were the model's own
            step["own_label_accuracy"] = own
    if len(label_sets) > 1:
        filter_stats[0]["seed_label_accuracy"] = [
            sum(lab.completion == a for lab, a in zip(ls, answers)) / len(ls) for ls in label_sets]
    return {"label_accuracy_all": sum(correct) / len(correct),
            "label_accuracy_kept": sum(kept_correct) / len(kept_correct) if kept_correct else None,
            "filters": filter_stats}


# What write_summary renders beside summary.jsonl, and how (rebuilt on a rerun when one is missing).
SUMMARY_VIEWS = {"summary.md": lambda summary: summary_table(summary).encode(), "summary.png": plot_summary,
                 "summary_levels.png": plot_level_map}


def base_size(recipe: Recipe) -> int:
    """How many base problems a run of `recipe` draws."""
    return recipe.base_examples or recipe.base_steps * recipe.batch_size


class SelfImprovement:
    def __init__(self, recipe: Recipe):
        self.timed = PhaseTimes()  # reset by every round
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
        self.tracker: RunTracker | None = None  # with report_to tensorboard, trackio or wandb (set by run)
        self.law = Law.load(recipe.sustainability_law) if recipe.sustainability_law else None
        self.summary: list[RoundRecord] = []
        # The K seed lineages, the one home of the models (lineage 0 is `model`, the one the loop reports
        # on, labels with and publishes), and the highest stage trained (see si_hf.schedule): set by run().
        self.lineages: list = []
        self.stage = 0

    @property
    def model(self):
        return self.lineages[0]

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
        verify_lineage(self.out, done)  # one chain under one recipe
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
        self.summary = [read_record(self.out, k) for k in done]
        if (any(not (self.out / name).is_file() for name in (SUMMARY_FILE, *SUMMARY_VIEWS))
                or read_summary(self.out) != self.summary):
            self.write_summary()
        self.log(f"Resuming {self.out}: " + (f"rounds 0-{last} are finished." if last else "round 0 is finished."))
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
            path = self._lineage_checkpoint(i, start - 1)
            try:
                model = load_round_model(path)
            except (OSError, ValueError) as err:
                raise RuntimeError(f"cannot load lineage {i} (seed {r.seed + i}) of finished round {start - 1} "
                                   f"from {path}: {err}") from err
            extra.append(model.to(self.state.device))
        if start == 0 and extra:
            set_seed(r.seed)
        return extra

    def _lineage_checkpoint(self, i: int, k: int) -> Path:
        """Where lineage i's model of finished round k lies: this run's round-<k>/models/seed-<i>, or, for the
        round `init_from` started from, the model (lineage 0's) of `lineages_from`'s i-th run."""
        r = self.recipe
        if r.lineages_from and k == parse_init_from(r.init_from)[1]:
            source, _ = parse_init_from(r.lineages_from[i - 1])
            return round_dir(source, k) / "model"
        return round_dir(self.out, k) / "models" / f"seed-{i}"

    def _last_stage(self, start: int) -> int:
        """The highest stage trained by the finished rounds (eval.json `stage`; runs without it: +1 per round)."""
        if start == 0:
            return 0
        return read_record(self.out, start - 1).stage

    # -- the steps -----------------------------------------------------------------------------
    def base_data(self, recipe: Recipe | None = None) -> Dataset:
        """The base problems a run of `recipe` (default: this run's) draws: the same seed draws the same first rows."""
        r = recipe or self.recipe
        return base_dataset(self.task, r.base_min_level, r.base_max_level, base_size(r), r.seed, self.held_out,
                            carry_runs=r.base_carry_runs, equal_lengths=r.base_equal_lengths)

    def self_labeled_data(self, k: int, levels: list | None = None) -> tuple[Dataset, LabelStats]:
        """Round k's kept labels at `levels` (default: the task's round_levels for k). Every lineage labels
        the same problems; the recipe's filters (the vote first) decide; with `corrupt_round` == k a
        share of the kept labels is corrupted afterwards."""
        r, task = self.recipe, self.task
        levels = task.round_levels(r.base_max_level, k) if levels is None else levels
        names = "&".join(task.level_name(level) for level in levels)
        problems = self.fresh_problems(k, levels)
        prompts = [task.prompt(p) for p in problems]
        bounds = [task.max_answer_len(q) for q in prompts]
        groups = [task.level_name(p.level) for p in problems]
        with self.timed("label"):
            label_sets = [self._label(m, prompts, bounds, groups, names, i)
                          for i, m in enumerate(self.lineages)]
        kill_point("label", k)  # a test hook (si_hf.killpoints); nothing unless a test sets it
        with self.timed("filter"):
            labels, keep, filter_stats, masks = select_labels(task, label_sets, r.filters,
                                                              score=lambda labels: self.score(labels, groups),
                                                              max_piece=self.piece_size())
        rows = [i for i, kept in enumerate(keep) if kept]
        completions, corruption = self.corrupted([labels[i].completion for i in rows], k)
        answers = [task.answer(p) for p in problems]
        kept_correct = [c == answers[i] for c, i in zip(completions, rows)]
        if corruption is not None:
            before = [labels[i].completion == answers[i] for i in rows]
            corruption["label_accuracy_kept_before"] = sum(before) / len(rows) if rows else None
        stats = LabelStats(level=names, labeled=len(labels), kept=len(rows), corruption=corruption,
                           **label_accuracy(labels, answers, label_sets, filter_stats, masks, kept_correct))
        data = Dataset.from_dict(
            {"prompt": [prompts[i] for i in rows], "completion": completions,
             "level": level_values([problems[i] for i in rows]), "round": [k] * len(rows),
             "correct": kept_correct},
            features=round_features(task),
        )
        return data, stats

    def fresh_problems(self, k: int, levels: list) -> list:
        """labels_per_round problems at each of round k's levels, none of them held out."""
        r, task = self.recipe, self.task
        rng = seeded_rng(r.seed, "label", task.name, k)
        problems = []
        for level in levels:
            drawn = sample_problems(task, r.labels_per_round, lambda: task.sample(level, rng), self.held_out)
            distinct = len({task.prompt(p) for p in drawn})
            if distinct < 0.9 * len(drawn):  # a small level: the same problems are labeled several times
                self.log(f"warning: level {task.level_name(level)} gave only {distinct} distinct problems (outside "
                         f"the held-out set) for labels_per_round={r.labels_per_round}: each is labeled about "
                         f"{len(drawn) / distinct:.1f} times")
            problems += drawn
        return problems

    def corrupted(self, completions: list[str], k: int) -> tuple[list[str], dict | None]:
        """The kept labels, a share of them corrupted on purpose when the recipe asks it of round k."""
        r = self.recipe
        if r.corrupt_round != k:
            return completions, None
        changed, chosen = corrupt_completions(completions, r.corrupt_fraction, r.corrupt_mode,
                                              seeded_rng(r.seed, "corrupt", self.task.name, k))
        return changed, {"mode": r.corrupt_mode, "fraction": r.corrupt_fraction, "corrupted": len(chosen),
                         "changed": sum(changed[j] != completions[j] for j in chosen)}

    def _label(self, model, prompts: list, bounds: list, groups: list, names: str, lineage: int) -> list:
        """One lineage's greedy labels. With several processes each labels its share of the prompts (per
        level) and every process gets all the labels, in order (si_hf.distributed.map_split)."""
        r = self.recipe
        desc = f"labeling level {names}" + (f" (seed {r.seed + lineage})" if len(self.lineages) > 1 else "")
        quiet = r.disable_tqdm or not self.state.is_local_main_process
        return map_split(lambda share: greedy_label(
            model, self.tokenizer, [prompts[j] for j in share], [bounds[j] for j in share],
            batch_size=r.label_batch_size, backend=r.labeler, desc=desc, disable_tqdm=quiet),
            range(len(prompts)), groups)

    def piece_size(self) -> int:
        """The size of the pieces `compose` and `pieces` read (one composition serves both): the first size
        their specs name, else the task's largest reliable piece (`Task.largest_piece`)."""
        options = dict(map(parse_filter_spec, self.recipe.filters))
        named = [options[name].get("max_piece") for name in ("compose", "pieces") if name in options]
        return next(filter(None, named), None) or self.task.largest_piece(self.recipe.base_max_level, self.stage)

    def score(self, labels: list, groups: list) -> list:
        """What the recipe's filters read beyond the labels, from the first model (split across processes
        like the labeling): its confidence in each label, the answer its own answers to the pieces imply,
        its answer with the operands swapped."""
        r, model = self.recipe, self.model
        options = {name: opts for name, opts in map(parse_filter_spec, r.filters)}
        groups = groups if len(labels) == len(groups) else None
        if "confidence" in options:
            labels = map_split(lambda share: score_labels(model, self.tokenizer, share, r.label_batch_size),
                               labels, groups)
        if "compose" in options or "pieces" in options:
            max_piece = self.piece_size()
            labels = map_split(lambda share: compose_labels(model, self.tokenizer, self.task, share, max_piece,
                                                            r.label_batch_size, r.labeler), labels, groups)
        if "commute" in options:
            labels = map_split(lambda share: swap_labels(model, self.tokenizer, self.task, share, r.label_batch_size,
                                                         r.labeler), labels, groups)
        return labels

    def next_stages(self, k: int) -> tuple[list[int], dict | None]:
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
            ev = evaluate_levels(self.model, self.tokenizer, task, sets, r.label_batch_size, r.labeler, r.disable_tqdm)
            probed.append(ev["by_level"])
            if not passes(ev["by_level"], r.frontier_threshold):
                break
        stages = accelerated_stages(self.stage, probed, r.frontier_threshold)
        probe = {"size": r.probe_size, "threshold": r.frontier_threshold,
                 "accuracy_by_level": {task.level_name(lvl): acc for by in probed for lvl, acc in by.items()},
                 "stages_taken": len(stages)}
        return stages, probe

    def training_stages(self, k: int, data: Dataset) -> list[tuple[Recipe, Dataset]]:
        """Round k's trainings in order, each a recipe (its schedule) and its rows: a round trains once on
        its mixture; round 0 trains the base, then once more from those weights per `base_restart_steps`."""
        r = self.recipe
        if k:
            if len(data) == 0:
                logger.warning("Round %d kept no labels; training on base and older rounds only", k)
            return [(r, mixture(data, self.rounds_data, r.round_steps * r.batch_size, r.newest_fraction, r.seed + k,
                                older_weighting=r.older_weighting))]
        if r.base_restart_steps and uses_fsdp():
            raise RecipeError("base_restart_steps: not supported under FSDP (each stage would reshard the model)")
        stages = [(r, data)]
        for steps in r.base_restart_steps:
            scale = steps / r.base_steps
            stage = dataclasses.replace(r, base_steps=steps, base_warmup_steps=round(r.base_warmup_steps * scale),
                                        base_decay_steps=round(r.base_decay_steps * scale))
            stages.append((stage, self.first_base_rows(stage, data)))
        return stages

    def first_base_rows(self, stage: Recipe, data: Dataset) -> Dataset:
        """The rows a base stage of `stage` trains on: the first rows of the base draw `data` when it holds
        enough (the same seed draws the same first rows, so this is what drawing again would give, without
        the cost), else a fresh draw of its own length."""
        n = base_size(stage)
        return data.select(range(n)) if n <= len(data) else self.base_data(stage)

    def train(self, model, k: int, data: Dataset, lineage: int = 0):
        """Trains `model` on round k's rows (the same for every lineage), stage after stage
        (`training_stages`); lineage i's Trainers are seeded with seed + i. Returns the last Trainer, the
        result (the last stage's loss, every stage's steps) and the trained model: `model` itself, or under
        FSDP (which shards `model` in place) a plain model with the gathered full weights."""
        steps = 0
        cls = type(model)
        # With lora_r: a fresh adapter for this round, merged into `model` when training ends.
        with lora_adapter(model, self.recipe, seed=self.recipe.seed + lineage + k) as trained:
            for i, (recipe, rows) in enumerate(self.training_stages(k, data)):
                if i and not lineage:
                    self.log(f"[round 0/{recipe.num_rounds}] base stage {i + 1}: {recipe.base_steps} steps more "
                             "from its weights")
                recipe = dataclasses.replace(recipe, seed=recipe.seed + lineage) if lineage else recipe
                tracked = [self.tracker.callback(self.steps_so_far() + steps)] if self.tracker and not lineage else []
                trainer = make_trainer(trained, self.tokenizer, tokenize(rows, self.tokenizer), recipe, k,
                                       str(self.out / ".trainer"), callbacks=tracked)
                result = trainer.train()
                steps += result.global_step
        if trainer.is_fsdp_enabled:
            # Every process gathers the full weights into a plain model: labeling, evaluation and saving read
            # them, and the next round's Trainer shards that model afresh (never one already sharded).
            model = unsharded_model(trainer.model, cls, self.state.device)
            if not lineage:
                self.log(f"FSDP: round {k}'s full weights gathered from {self.state.num_processes} processes")
        # Under DDP each process reports the loss of its own rows: the mean over processes is the batch's.
        result = result._replace(global_step=steps, training_loss=mean_over_processes(result.training_loss))
        return trainer, result, model

    def run_round(self, k: int):
        """One round of the method: the data (ground truth in round 0, then self-labeled and filtered), the
        training of every lineage, the evaluation, the record; then the round is saved and published."""
        start = time.time()
        self.timed = PhaseTimes()
        data, begun = self.round_data(k)
        with self.timed("train"):
            trainer, trained = self.train_lineages(k, data)
        with self.timed("evaluate"):
            scored = self.evaluate(full=self.is_last_round(k, begun["stage"]))
        record = RoundRecord(round=k, **begun, **scored, **trained, wall_seconds=round(time.time() - start, 1))
        record.stopped = self.stop_decision(self.summary + [record])
        if self.law is not None:
            record.prediction = prediction(self.law, record, self.recipe.num_rounds - k)
        trainer.log(self.trainer_metrics(record))
        self.finish_round(k, data, record)

    def round_data(self, k: int) -> tuple[Dataset, dict]:
        """Round k's training rows and the first fields of its record (levels, labels, stage, probe)."""
        r = self.recipe
        if k == 0:
            return self.base_data(), {"levels_trained": f"{r.base_min_level}-{r.base_max_level}", "labels": None,
                                      "stage": 0}
        with self.timed("probe"):
            stages, probe = self.next_stages(k)
        levels = [level for s in stages for level in self.task.round_levels(r.base_max_level, s)]
        data, label_stats = self.self_labeled_data(k, levels)
        if label_stats.corruption is not None:
            c = label_stats.corruption
            self.log(f"[round {k}/{r.num_rounds}] corrupted {c['corrupted']}/{label_stats.kept} kept labels "
                     f"({c['mode']}, fraction {c['fraction']})")
        # stage: the highest stage trained so far (si_hf.schedule); a stage that kept too little is labeled again
        stage = stages[-1]
        if label_stats.kept < r.min_kept_fraction * label_stats.labeled:
            stage = self.stage
            self.log(f"[round {k}/{r.num_rounds}] kept {label_stats.kept}/{label_stats.labeled} labels, under "
                     f"min_kept_fraction={r.min_kept_fraction}: the next round labels {label_stats.level} again")
        return data, {"levels_trained": label_stats.level, "labels": label_stats, "stage": stage, "probe": probe}

    def train_lineages(self, k: int, data: Dataset):
        """Trains every lineage on round k's rows (each replaced by its trained model); returns the first's
        Trainer and what the record keeps of the training."""
        trainer, result, self.lineages[0] = self.train(self.model, k, data)
        seed_losses = []
        for i, m in enumerate(self.lineages[1:], 1):
            _, seed_result, self.lineages[i] = self.train(m, k, data, lineage=i)
            seed_losses.append(seed_result.training_loss)
        trained = {"train_loss": result.training_loss, "train_steps": result.global_step,
                   "seed_train_loss": seed_losses or None}  # lineages 1..
        return trainer, trained

    def is_last_round(self, k: int, stage: int) -> bool:
        """Whether round k, having trained up to `stage`, ends the run by itself (not by a rule on its scores)."""
        r = self.recipe
        return k == r.num_rounds or final_stage_reached(stage, r.final_stage)

    def stop_decision(self, summary: list[RoundRecord]) -> dict | None:
        r = self.recipe
        return stop_decision(summary, r.stop_patience, r.collapse_floor, r.final_stage)

    def evaluate(self, full: bool) -> dict:
        """The held-out evaluation of the model as it stands (the full sets when `full`, in the last round;
        else the first round_eval_size problems per level): accuracy by level, frontier."""
        r, task = self.recipe, self.task
        size = r.eval_size if (full or r.round_eval_size is None) else r.round_eval_size
        eval_sets = {level: problems[:size] for level, problems in self.eval_sets.items()}

        def run(m):
            return evaluate_levels(m, self.tokenizer, task, eval_sets, r.label_batch_size, r.labeler, r.disable_tqdm)

        def frontier(e):
            return task.frontier(e["by_level"], r.frontier_threshold, e["count_by_level"])

        def named(by_level):
            return {task.level_name(lvl): value for lvl, value in by_level.items()}

        ev = run(self.model)
        seed_evals = [run(m) for m in (self.lineages[1:] if r.eval_all_seeds else [])]
        return {
            "frontier": frontier(ev), "exact_match": ev["exact_match"],
            "accuracy_by_level": named(ev["by_level"]), "eval_size_by_level": named(ev["count_by_level"]),
            "seed_accuracy_by_level": [named(e["by_level"]) for e in seed_evals] or None,
            "seed_frontier": [frontier(e) for e in seed_evals] or None,
        }

    @staticmethod
    def trainer_metrics(record: RoundRecord) -> dict:
        """What the round adds to the Trainer's log (tensorboard): frontier, accuracies, label quality."""
        labels = record.labels
        return {
            "round": record.round, "frontier": record.frontier,
            **{f"accuracy_level_{lvl}": acc for lvl, acc in record.accuracy_by_level.items()},
            **({"label_accuracy_kept": labels.label_accuracy_kept or 0.0,
                "kept_fraction": labels.kept_fraction or 0.0} if labels else {}),
        }

    def finish_round(self, k: int, data: Dataset, record: RoundRecord):
        """Saves round k, adds it to the run (mixture, summary, progress) and publishes it."""
        self.save_round(k, data, record)
        kill_point("saved", k)  # a test hook (si_hf.killpoints)
        self.stage = record.stage
        self.rounds_data.append(data)
        self.summary.append(record)
        self.write_summary()
        if self.tracker:
            phases = {f"seconds_{name}": sec for name, sec in (record.phase_seconds or {}).items()}
            self.tracker.log_round(k, {**self.trainer_metrics(record), **phases}, step=self.steps_so_far())
        self.log(self.progress_line(record))
        if record.prediction:
            self.log(self.prediction_line(record))
        if record.stopped:
            stopped = record.stopped
            self.log(f"[round {k}/{self.recipe.num_rounds}] stopping ({stopped['rule']}): {stopped['reason']}")
        self.publish(k)

    def publish(self, k: int):
        """Pushes round k (its directory is complete) when the recipe asks for it."""
        if self.hub is not None and self.state.is_main_process:
            self.hub.publish_round(k)
        self.state.wait_for_everyone()

    def save_round(self, k: int, data: Dataset, record: RoundRecord):
        """Writes round k's directory (the main process); its record holds the time of every phase,
        the save's included (all of it but the record file itself)."""
        record.phase_seconds = self.timed.record()  # what the other processes record
        if self.state.is_main_process:
            # Written into .round-<k>.tmp; the manifest last, then renamed to round-<k> (si_hf.manifest). On an
            # error (a full disk included) the temporary directory is removed and no round-<k> appears.
            parent = parent_of(self.out, k) or (round_name(k - 1) if k else None)
            with staged_round(self.out, k, self.recipe.to_dict(), parent) as tmp:
                with self.timed("save"):
                    self._write_round(tmp, k, data, record)
                record.phase_seconds = self.timed.record()
                write_record(tmp, record)
        self.state.wait_for_everyone()

    def _write_round(self, tmp, k: int, data: Dataset, record: RoundRecord):
        self.model.save_pretrained(tmp / "model")
        self.tokenizer.save_pretrained(tmp / "model")
        for i, extra in enumerate(self.lineages[1:], 1):  # the other seed lineages
            extra.save_pretrained(tmp / "models" / f"seed-{i}")
            self.tokenizer.save_pretrained(tmp / "models" / f"seed-{i}")
        kill_point("save", k)  # a test hook (si_hf.killpoints)
        data.save_to_disk(str(tmp / "data"), num_shards=1)  # one shard even when no label was kept
        repos = {"model_repo": self.hub.model_repo, "data_repo": self.hub.data_repo} if self.hub else {}
        write_model_card(tmp / "model", self.recipe.to_dict(), self.summary + [record], k,
                         parent=parent_of(self.out, k), shown_dir=round_dir(self.out, k) / "model", **repos)

    # -- reporting -----------------------------------------------------------------------------
    def progress_line(self, rec: RoundRecord) -> str:
        R = self.recipe.num_rounds
        phases = phases_text(rec.phase_seconds or {})
        time_part = f"{rec.wall_seconds:.0f}s" + (f" ({phases})" if phases else "")
        if rec.labels:
            lab = rec.labels
            lvl = lab.level.split("&")[0]
            label_part = (f"kept {lab.kept}/{lab.labeled} | label acc {lab.label_accuracy_kept:.3f}"
                          if lab.label_accuracy_kept is not None else f"kept 0/{lab.labeled}")
            acc = rec.accuracy_by_level.get(lvl)
            acc_part = f"{acc:.3f}" if acc is not None else "not evaluated (past eval_max_level)"
            return (f"[round {rec.round}/{R}] level {lvl} | {label_part} | acc@{lvl} {acc_part}"
                    f" | frontier {rec.frontier} | {time_part}")
        return (f"[round 0/{R}] base levels {rec.levels_trained} | frontier {rec.frontier} | "
                f"exact match {rec.exact_match:.3f} | {time_part}")

    def prediction_line(self, rec: RoundRecord) -> str:
        return f"[round {rec.round}/{self.recipe.num_rounds}] the law predicts: {prediction_text(rec.prediction)}"

    def write_summary(self):
        if not self.state.is_main_process:
            return
        write_summary(self.out, self.summary)
        for name, render in SUMMARY_VIEWS.items():
            (self.out / name).write_bytes(render(self.summary))

    # -- the loop ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def holding_output_dir(self):
        """The main process holds output_dir for the whole run (si_hf.lock); every process gets the
        refusal when another run holds it."""
        lock, refusal = RunLock(self.out, log=self.log), None
        if self.state.is_main_process:
            try:
                lock.__enter__()
            except RoundError as err:
                refusal = str(err)
        if self.state.num_processes > 1:
            refusal = broadcast_object_list([refusal])[0]
        if refusal:
            raise RoundError(refusal)
        try:
            yield
        finally:
            if self.state.is_main_process:
                lock.__exit__(None, None, None)

    def prepare_output_dir(self):
        """The recipe check, leftovers of an interrupted round cleared, the rounds of `init_from` fetched
        and the Hub connected (what an earlier run could not push is pushed now)."""
        check_output_dir(self.recipe)
        self.state.wait_for_everyone()  # every process reads the saved recipe before the main one rewrites it
        if local_source(self.recipe.init_from):
            check_source(self.recipe.init_from, self.recipe)  # before anything is written
        if not imported_from(self.out):  # checked once, before the branch; loading them names any file gone since
            for source in self.recipe.lineages_from or []:
                check_lineage_source(source, self.recipe)
        for warning in recipe_warnings(self.recipe):
            self.log(f"warning: {warning}")
        if self.state.is_main_process:
            for stale in self.out.glob(".round-*.tmp"):
                shutil.rmtree(stale)
            adopt_legacy_rounds(self.out, self.recipe.to_dict(), log=self.log)  # runs older than round manifests
            (self.out / "recipe.yaml").write_text(yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        self.state.wait_for_everyone()
        if self.recipe.init_from and not imported_from(self.out):
            if self.state.is_main_process:  # a run on this machine, or a repo on the Hub
                fetch = branch_rounds if local_source(self.recipe.init_from) else import_rounds
                fetch(self.recipe.init_from, self.out, self.recipe)
            self.state.wait_for_everyone()
        if self.recipe.push_to_hub:
            self.hub = Publisher(self.recipe, self.out, log=self.log)
            if self.state.is_main_process:
                self.hub.connect().publish_missing()
            self.state.wait_for_everyone()

    def run(self):
        """Every round of the recipe not yet finished in output_dir."""
        with self.holding_output_dir():
            self.prepare_output_dir()  # first: an overwrite empties the directory the tracker writes into
            tracked = [name for name in reporters(self.recipe.report_to) if name in TRACKED]
            if tracked and self.state.is_main_process:
                self.tracker = RunTracker(self.out, tracked)  # one tracked run for the whole run (si_hf.tracking)
            try:
                return self._run()
            finally:
                if self.tracker:
                    self.tracker.close()

    def steps_so_far(self) -> int:
        """Training steps of the finished rounds: where the next round's steps continue in tracking."""
        return sum(rec.train_steps for rec in self.summary)

    def _run(self):
        model, start = self._resume()
        self.lineages = [model, *self._extra_lineages(start)]
        self.stage = self._last_stage(start)
        stopped = self.stop_decision(self.summary) if start else None
        if start > self.recipe.num_rounds:
            self.log(f"All {self.recipe.num_rounds} rounds of {self.out} are finished.")
        elif stopped:
            self.log(f"{self.out} stopped after round {start - 1} ({stopped['rule']}): {stopped['reason']}. "
                     f"Unset or change {stopped['rule']} to go on.")
            return self.summary
        elif start:
            self.log(f"{self.out}: continuing with round {start}.")
        for k in range(start, self.recipe.num_rounds + 1):
            self.run_round(k)
            if self.summary[-1].stopped:
                break
        return self.summary
