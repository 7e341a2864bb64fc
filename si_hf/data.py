"""Problems to datasets: held-out eval sets, base data, round datasets, the mixture, the collator."""

import random

import numpy as np
import torch
from datasets import Dataset, Features, Value, concatenate_datasets

from .tasks import Problem, Task

ROUND_FEATURES = Features(
    {
        "prompt": Value("string"),
        "completion": Value("string"),
        "level": Value("int32"),
        "round": Value("int32"),
        # Analysis only: whether the completion equals the true answer. Never used to filter.
        "correct": Value("bool"),
    }
)


def seeded_rng(seed: int, *purpose) -> random.Random:
    """An RNG fixed by the seed and a purpose, independent of workers, processes and call order."""
    return random.Random("/".join(str(p) for p in (seed, *purpose)))


def eval_problems(task: Task, level: int, size: int, seed: int) -> list[Problem]:
    """The fixed held-out set of a level: distinct problems, at most half of all that exist."""
    n = max(1, min(size, task.num_problems(level) // 2))
    rng = seeded_rng(seed, "eval", task.name, level)
    chosen: dict[str, Problem] = {}
    while len(chosen) < n:
        problem = task.sample(level, rng)
        chosen.setdefault(task.prompt(problem), problem)
    return list(chosen.values())


def sample_problems(task: Task, n: int, draw, exclude: set[str]) -> list[Problem]:
    """n problems from `draw()`, none of whose prompts is in `exclude` (the held-out prompts)."""
    out = []
    misses = 0
    while len(out) < n:
        problem = draw()
        if task.prompt(problem) in exclude:
            misses += 1
            if misses > 100 * n + 1000:
                raise RuntimeError(f"{task.name}: cannot draw problems outside the held-out set")
            continue
        out.append(problem)
    return out


def truth_dataset(task: Task, problems: list[Problem], round_idx: int) -> Dataset:
    """Ground-truth rows (base data)."""
    prompts = [task.prompt(p) for p in problems]
    answers = [task.answer(p) for p in problems]
    return Dataset.from_dict(
        {
            "prompt": prompts,
            "completion": answers,
            "level": [p.level for p in problems],
            "round": [round_idx] * len(problems),
            "correct": [True] * len(problems),
        },
        features=ROUND_FEATURES,
    )


def base_dataset(task: Task, min_level: int, max_level: int, n: int, seed: int, exclude: set[str]) -> Dataset:
    rng = seeded_rng(seed, "base", task.name)
    problems = sample_problems(task, n, lambda: task.sample_base(min_level, max_level, rng), exclude)
    return truth_dataset(task, problems, 0)


def _cycled_indices(n_rows: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices covering the rows as evenly as possible (whole permutations, then a partial one)."""
    reps = -(-n // n_rows)
    return np.concatenate([rng.permutation(n_rows) for _ in range(reps)])[:n]


def mixture(newest: Dataset, older: list[Dataset], total: int, newest_fraction: float, seed: int) -> Dataset:
    """`total` rows: `newest_fraction` of them from the newest round, the rest from base + older rounds."""
    rng = np.random.default_rng(seed)
    pool = concatenate_datasets(older) if older else None
    n_new = round(total * newest_fraction) if len(newest) else 0
    if pool is None or len(pool) == 0:
        n_new = total
    parts = []
    if n_new:
        parts.append(newest.select(_cycled_indices(len(newest), n_new, rng)))
    if total - n_new:
        parts.append(pool.select(_cycled_indices(len(pool), total - n_new, rng)))
    return concatenate_datasets(parts).shuffle(seed=seed).flatten_indices()


def tokenize(dataset: Dataset, tokenizer) -> Dataset:
    """Add `input_ids` (<bos> prompt completion <eos>), `prompt_len` (tokens not trained on), `length`."""
    eos = tokenizer.eos_token_id

    def encode(batch):
        prompts = tokenizer(batch["prompt"])["input_ids"]
        full = tokenizer([p + c for p, c in zip(batch["prompt"], batch["completion"])])["input_ids"]
        input_ids = [ids + [eos] for ids in full]
        return {"input_ids": input_ids, "prompt_len": [len(p) for p in prompts], "length": [len(i) for i in input_ids]}

    return dataset.map(encode, batched=True, batch_size=4096, desc="tokenizing")


class PromptMaskingCollator:
    """Right-pads a batch; labels are -100 on the prompt and on padding (loss on answer + EOS only)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features):
        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        ids = np.full((len(features), width), self.pad_token_id, dtype=np.int64)
        labels = np.full((len(features), width), -100, dtype=np.int64)
        for row, (f, n) in enumerate(zip(features, lengths)):
            ids[row, :n] = f["input_ids"]
            labels[row, f["prompt_len"] : n] = f["input_ids"][f["prompt_len"] :]
        return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}
