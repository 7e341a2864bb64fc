"""Problems to datasets: held-out eval sets, base data, round datasets, the mixture, the collator."""

import random

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset, DatasetInfo, Features, List, Value
from datasets.fingerprint import generate_random_fingerprint
from datasets.table import InMemoryTable

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


def round_features(task: Task) -> Features:
    """The round dataset schema; a task with pair levels (multiplication) stores `level` as [a, b]."""
    if not getattr(task, "pair_levels", False):
        return ROUND_FEATURES
    return Features({**ROUND_FEATURES, "level": List(Value("int32"), length=2)})


def level_values(problems: list[Problem]) -> list:
    return [list(p.level) if isinstance(p.level, tuple) else p.level for p in problems]


def truth_dataset(task: Task, problems: list[Problem], round_idx: int) -> Dataset:
    """Ground-truth rows (base data)."""
    prompts = [task.prompt(p) for p in problems]
    answers = [task.answer(p) for p in problems]
    return Dataset.from_dict(
        {
            "prompt": prompts,
            "completion": answers,
            "level": level_values(problems),
            "round": [round_idx] * len(problems),
            "correct": [True] * len(problems),
        },
        features=round_features(task),
    )


def base_dataset(task: Task, min_level: int, max_level: int, n: int, seed: int, exclude: set[str],
                 carry_runs: float = 0.0, equal_lengths: float = 0.0) -> Dataset:
    """n ground-truth problems of the base range; an `equal_lengths` share of them drawn as the held-out
    sets are (`Task.sample` of a uniform level), a `carry_runs` share with a planted carry chain
    (`Task.with_carry_run`). With both 0 the draws are those of a recipe without the fields."""
    rng = seeded_rng(seed, "base", task.name)

    def draw():
        if equal_lengths and rng.random() < equal_lengths:
            problem = task.sample(rng.randint(min_level, max_level), rng)
        else:
            problem = task.sample_base(min_level, max_level, rng)
        if carry_runs and rng.random() < carry_runs:
            problem = task.with_carry_run(problem, rng)
        return problem

    problems = sample_problems(task, n, draw, exclude)
    return truth_dataset(task, problems, 0)


def _cycled_indices(n_rows: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices covering the rows as evenly as possible (whole permutations, then a partial one)."""
    reps = -(-n // n_rows)
    return np.concatenate([rng.permutation(n_rows) for _ in range(reps)])[:n]


def _arrow_table(dataset: Dataset) -> pa.Table:
    if dataset._indices is not None:
        dataset = dataset.flatten_indices()
    return dataset.data.table


def _from_arrow(table: pa.Table, features: Features | None = None) -> Dataset:
    """An in-memory Dataset around an Arrow table, without a pass through Python rows."""
    if features is not None:
        table = table.cast(features.arrow_schema)
    return Dataset(InMemoryTable(table), info=DatasetInfo(features=features),
                   fingerprint=generate_random_fingerprint())


OLDER_WEIGHTINGS = ("rows", "rounds")


def mixture(newest: Dataset, older: list[Dataset], total: int, newest_fraction: float, seed: int,
            older_weighting: str = "rows") -> Dataset:
    """`total` rows: `newest_fraction` of them from the newest round, the rest from base + older rounds.

    `older_weighting` splits the rest: `rows`, in proportion to each older dataset's rows (one pool);
    `rounds`, an equal share for every older dataset that has rows (the base data counts as one), so a
    round of a few thousand labels is not drowned by a base set a hundred times its size.
    The rows and their (shuffled) order are fixed by the seed; they are gathered from the Arrow tables
    in one take."""
    if older_weighting not in OLDER_WEIGHTINGS:
        raise ValueError(f"older_weighting must be one of {OLDER_WEIGHTINGS}, not {older_weighting!r}")
    rng = np.random.default_rng(seed)
    pool_len = sum(len(d) for d in older)
    n_new = round(total * newest_fraction) if len(newest) else 0
    if pool_len == 0:
        n_new = total
    parts = []
    if n_new:
        parts.append(_cycled_indices(len(newest), n_new, rng))
    n_old = total - n_new
    if n_old and older_weighting == "rows":
        parts.append(len(newest) + _cycled_indices(pool_len, n_old, rng))
    elif n_old:
        offsets = np.cumsum([len(newest)] + [len(d) for d in older])[:-1]
        used = [(off, len(d)) for off, d in zip(offsets, older) if len(d)]
        shares = [n_old // len(used) + (i < n_old % len(used)) for i in range(len(used))]
        parts.extend(off + _cycled_indices(n_rows, share, rng) for (off, n_rows), share in zip(used, shares) if share)
    # Rows of [newest, *older] in a seeded random order (what Dataset.shuffle(seed=seed) would give).
    order = np.concatenate(parts)[np.random.default_rng(seed).permutation(total)]
    tables = [_arrow_table(d).select(newest.column_names) for d in [newest, *older] if len(d)]
    return _from_arrow(pa.concat_tables(tables).take(order), newest.features)


def _char_ids(tokenizer) -> np.ndarray | None:
    """A byte -> token id table when the tokenizer writes `<bos>` and then one token per ASCII
    character (as si-hf's character tokenizer does), else None."""
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_tokens)
    chars = [t for t in vocab if t not in special]
    ascii_chars = all(len(c) == 1 and ord(c) < 128 for c in chars)
    if None in (tokenizer.unk_token_id, tokenizer.bos_token_id) or not ascii_chars:
        return None
    table = np.full(128, tokenizer.unk_token_id, dtype=np.int32)
    for c in chars:
        table[ord(c)] = vocab[c]
    sample = "".join(chars) + "<>x"
    expected = [tokenizer.bos_token_id, *table[np.frombuffer(sample.encode(), np.uint8)].tolist()]
    return table if tokenizer(sample)["input_ids"] == expected else None


def encode_texts(tokenizer, texts: list[str], eos: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`<bos> text` (and `<eos>` with `eos`) for every text, as flat token ids and row offsets.

    A table lookup over all texts at once for si-hf's character tokenizer; any other tokenizer (or
    text holding an added token such as `<eos>`, which the tokenizer reads whole) encodes row by row."""
    end = [tokenizer.eos_token_id] if eos else []
    table = _char_ids(tokenizer)
    joined = "".join(texts)
    raw = joined.encode()
    text_lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    if table is None or len(raw) != len(joined) or any(t in joined for t in tokenizer.get_added_vocab()):
        rows = [row + end for row in tokenizer(texts)["input_ids"]]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(row) for row in rows], out=offsets[1:])
        return np.fromiter((t for row in rows for t in row), dtype=np.int32, count=offsets[-1]), offsets
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(text_lens + 1 + len(end), out=offsets[1:])
    values = np.empty(offsets[-1], dtype=np.int32)
    is_text = np.ones(offsets[-1], dtype=bool)
    is_text[offsets[:-1]] = False
    values[offsets[:-1]] = tokenizer.bos_token_id
    if end:
        is_text[offsets[1:] - 1] = False
        values[offsets[1:] - 1] = end[0]
    values[is_text] = table[np.frombuffer(raw, dtype=np.uint8)]
    return values, offsets


def _encode_rows(tokenizer, prompts: list[str], completions: list[str]):
    """(values, offsets, prompt_len) of <bos> prompt completion <eos> for every row, as flat arrays."""
    values, offsets = encode_texts(tokenizer, [p + c for p, c in zip(prompts, completions)], eos=True)
    _, prompt_offsets = encode_texts(tokenizer, prompts)
    return values, offsets, np.diff(prompt_offsets).astype(np.int32)


def tokenize(dataset: Dataset, tokenizer) -> Dataset:
    """Add `input_ids` (<bos> prompt completion <eos>), `prompt_len` (tokens not trained on), `length`.

    Vectorized for si-hf's character tokenizer (a table lookup over all rows at once, checked against
    the tokenizer itself); any other tokenizer encodes the rows itself."""
    table = _arrow_table(dataset)
    values, offsets, prompt_len = _encode_rows(tokenizer, table.column("prompt").to_pylist(),
                                               table.column("completion").to_pylist())
    table = table.append_column("input_ids", pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values)))
    table = table.append_column("prompt_len", pa.array(prompt_len, pa.int32()))
    table = table.append_column("length", pa.array(np.diff(offsets), pa.int32()))
    return _from_arrow(table)


# Per-piece cost of the length-split batches, in padded tokens: a piece costs what this many more
# tokens of computation would (a forward and backward over a few more, smaller matrices). Measured on
# the tiny copy mixture (CPU): 64-512 all gave about the same step time, 1.4x faster than one piece.
PIECE_COST_TOKENS = 256


def split_by_length(lengths, piece_cost: int = PIECE_COST_TOKENS) -> list[tuple[int, int, int]]:
    """Cut rows sorted by length (ascending) into pieces (start, end, width) that minimize the padded
    tokens computed, sum of (rows x longest row) per piece, plus `piece_cost` per piece."""
    lengths = np.asarray(lengths)
    # Only cuts between two different lengths can help.
    ends = np.flatnonzero(np.diff(lengths)) + 1
    ends = np.append(ends, len(lengths)).tolist()
    best = [0.0]
    back = [0]
    for j, end in enumerate(ends):
        width = int(lengths[end - 1])
        cost, arg = min((best[i] + (end - (ends[i - 1] if i else 0)) * width + piece_cost, i) for i in range(j + 1))
        best.append(cost)
        back.append(arg)
    pieces = []
    j = len(ends)
    while j:
        i = back[j]
        start = ends[i - 1] if i else 0
        pieces.append((start, ends[j - 1], int(lengths[ends[j - 1] - 1])))
        j = i
    return pieces[::-1]


class PromptMaskingCollator:
    """Right-pads a batch; labels are -100 on the prompt and on padding (loss on answer + EOS only).

    With `split_pieces`, rows are sorted by length and the batch also carries `pieces`: row ranges
    that LengthSplitTrainer runs one by one, each padded only to its own longest row. The batch, its
    loss and gradient are unchanged; less padding is computed."""

    def __init__(self, pad_token_id: int, split_pieces: bool = False, piece_cost: int = PIECE_COST_TOKENS):
        self.pad_token_id = pad_token_id
        self.split_pieces = split_pieces
        self.piece_cost = piece_cost

    def __call__(self, features):
        lengths = np.array([len(f["input_ids"]) for f in features])
        order = np.argsort(lengths, kind="stable") if self.split_pieces else np.arange(len(features))
        width = lengths.max()
        ids = np.full((len(features), width), self.pad_token_id, dtype=np.int64)
        labels = np.full((len(features), width), -100, dtype=np.int64)
        for row, i in enumerate(order):
            f, n = features[i], lengths[i]
            ids[row, :n] = f["input_ids"]
            labels[row, f["prompt_len"] : n] = ids[row, f["prompt_len"] : n]
        batch = {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}
        if self.split_pieces:
            batch["pieces"] = split_by_length(lengths[order], self.piece_cost)
        return batch
