"""Datasets: tokenization, the prompt-masking collator, held-out eval sets, sampling, the mixture; the
fast paths equal the plain ones (vectorized tokenization and mixture, length-split batches)."""

import random
import re
from collections import Counter

import numpy as np
import pytest
import torch
from datasets import Dataset, concatenate_datasets

from si_hf.data import (
    ROUND_FEATURES,
    PromptMaskingCollator,
    _cycled_indices,
    _encode_rows,
    base_dataset,
    eval_problems,
    mixture,
    sample_problems,
    seeded_rng,
    split_by_length,
    tokenize,
    truth_dataset,
)
from si_hf.tasks import get_task


def _ids(tokenizer, text):
    return [tokenizer.convert_tokens_to_ids(c) for c in text]


# -- tokenize and collate ------------------------------------------------------------------------

def test_tokenize_adds_bos_eos_and_prompt_len(tokenizer):
    ds = Dataset.from_dict({"prompt": ["12=", "54321+789="], "completion": ["12", "233310"]})
    out = tokenize(ds, tokenizer)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert out[0]["input_ids"] == [bos, *_ids(tokenizer, "12=12"), eos]
    assert out[0]["prompt_len"] == 4  # <bos> 1 2 =
    assert out[1]["input_ids"] == [bos, *_ids(tokenizer, "54321+789=233310"), eos]
    assert out[1]["prompt_len"] == 11
    assert {"prompt", "completion", "input_ids", "prompt_len"} <= set(out.column_names)


def test_collator_masks_prompt_and_padding(tokenizer):
    pad = tokenizer.pad_token_id
    features = [
        {"input_ids": [1, 5, 6, 17, 5, 6, 2], "prompt_len": 4},
        {"input_ids": [1, 7, 17, 7, 2], "prompt_len": 3},
    ]
    batch = PromptMaskingCollator(pad)(features)
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].dtype == torch.long and batch["labels"].dtype == torch.long
    assert torch.equal(batch["input_ids"], torch.tensor([
        [1, 5, 6, 17, 5, 6, 2],
        [1, 7, 17, 7, 2, pad, pad],
    ]))
    assert torch.equal(batch["labels"], torch.tensor([
        [-100, -100, -100, -100, 5, 6, 2],
        [-100, -100, -100, 7, 2, -100, -100],
    ]))


def test_collator_on_tokenized_rows_trains_answer_and_eos_only(tokenizer):
    ds = tokenize(Dataset.from_dict({"prompt": ["123=", "9="], "completion": ["321", "9"]}), tokenizer)
    batch = PromptMaskingCollator(tokenizer.pad_token_id)([ds[0], ds[1]])
    labels = batch["labels"]
    for row, completion in enumerate(["321", "9"]):
        kept = [t for t in labels[row].tolist() if t != -100]
        assert kept == _ids(tokenizer, completion) + [tokenizer.eos_token_id]


# -- held-out eval sets --------------------------------------------------------------------------

@pytest.mark.parametrize("name,level,size,expected", [
    ("copy", 1, 1000, 5),              # 10 problems exist: at most half are held out
    ("copy", 2, 1000, 50),
    ("copy", 3, 30, 30),
    ("reverse", 1, 3, 3),
    ("reverse_addition", 1, 1000, 40),  # 81 problems exist
    ("reverse_addition", 4, 200, 200),
])
def test_eval_problems_sizes(name, level, size, expected):
    task = get_task(name)
    problems = eval_problems(task, level, size, seed=0)
    prompts = [task.prompt(p) for p in problems]
    assert len(problems) == expected
    assert len(set(prompts)) == expected  # distinct
    assert all(p.level == level for p in problems)
    assert len(problems) <= max(1, task.num_problems(level) // 2)


def test_eval_problems_deterministic_and_seeded():
    task = get_task("reverse_addition")
    a = eval_problems(task, 5, 100, seed=0)
    assert a == eval_problems(task, 5, 100, seed=0)
    assert a != eval_problems(task, 5, 100, seed=1)
    assert a != eval_problems(task, 6, 100, seed=0)
    # a smaller eval set is not required to be a prefix, but the set for a level must not depend on
    # which other levels are built or in which order
    eval_problems(task, 3, 100, seed=0)
    assert a == eval_problems(task, 5, 100, seed=0)


def test_seeded_rng_depends_on_seed_and_purpose():
    assert seeded_rng(0, "a", 1).random() == seeded_rng(0, "a", 1).random()
    assert seeded_rng(0, "a", 1).random() != seeded_rng(1, "a", 1).random()
    assert seeded_rng(0, "a", 1).random() != seeded_rng(0, "a", 2).random()


@pytest.mark.parametrize("name", ["copy", "reverse", "reverse_addition"])
def test_base_and_round_data_exclude_eval_prompts(name):
    task = get_task(name)
    held = {task.prompt(p) for level in range(1, 5) for p in eval_problems(task, level, 50, seed=0)}
    base = base_dataset(task, 1, 3, 2000, seed=0, exclude=held)
    assert len(base) == 2000
    assert set(base["prompt"]).isdisjoint(held)
    assert set(base["round"]) == {0} and all(base["correct"])
    assert base.features == ROUND_FEATURES
    for row in base.select(range(50)):
        problem = task.parse(row["prompt"])
        assert row["completion"] == task.answer(problem) and row["level"] == problem.level

    rng = seeded_rng(0, "label", task.name, 1)
    drawn = sample_problems(task, 1000, lambda: task.sample(2, rng), held)
    assert len(drawn) == 1000
    assert {task.prompt(p) for p in drawn}.isdisjoint(held)
    assert all(p.level == 2 for p in drawn)


def test_copy_level_1_base_uses_only_the_other_half():
    task = get_task("copy")
    held = {task.prompt(p) for p in eval_problems(task, 1, 1000, seed=0)}
    assert len(held) == 5
    base = base_dataset(task, 1, 1, 500, seed=0, exclude=held)
    assert len(set(base["prompt"])) == 5
    assert set(base["prompt"]) | held == {f"{d}=" for d in range(10)}


def test_base_dataset_deterministic():
    task = get_task("reverse_addition")
    a = base_dataset(task, 1, 4, 300, seed=3, exclude=set())
    b = base_dataset(task, 1, 4, 300, seed=3, exclude=set())
    assert a["prompt"] == b["prompt"]
    assert a["prompt"] != base_dataset(task, 1, 4, 300, seed=4, exclude=set())["prompt"]


def test_sample_problems_gives_up_when_everything_is_held_out():
    task = get_task("copy")
    everything = {f"{d}=" for d in range(10)}
    rng = seeded_rng(0, "x")
    with pytest.raises(RuntimeError, match="held-out"):
        sample_problems(task, 5, lambda: task.sample(1, rng), everything)


# -- the mixture ---------------------------------------------------------------------------------

def _rows(task, level, n, round_idx, seed):
    rng = seeded_rng(seed, "mix", level)
    return truth_dataset(task, [task.sample(level, rng) for _ in range(n)], round_idx)


@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.0, 1.0])
def test_mixture_counts(fraction):
    task = get_task("copy")
    base = _rows(task, 3, 30, 0, seed=0)
    older = _rows(task, 4, 7, 1, seed=1)
    newest = _rows(task, 5, 10, 2, seed=2)
    mixed = mixture(newest, [base, older], total=200, newest_fraction=fraction, seed=0)
    assert len(mixed) == 200
    rounds = Counter(mixed["round"])
    assert rounds[2] == round(200 * fraction)
    assert rounds[0] + rounds[1] == 200 - round(200 * fraction)
    if fraction == 0.5:
        # newest rows are spread evenly (each of the 10 appears exactly 10 times)
        assert set(Counter(p for p, r in zip(mixed["prompt"], mixed["round"]) if r == 2).values()) == {10}
        # the older pool (37 rows) is covered evenly too: every row 2 or 3 times
        per_row = Counter((p, r) for p, r in zip(mixed["prompt"], mixed["round"]) if r < 2)
        assert len(per_row) == len({(p, 0) for p in base["prompt"]} | {(p, 1) for p in older["prompt"]})
        assert max(per_row.values()) - min(per_row.values()) <= 1
        assert rounds[1] in (18, 19, 20, 21)


def test_mixture_is_shuffled_and_deterministic():
    task = get_task("copy")
    base = _rows(task, 3, 50, 0, seed=0)
    newest = _rows(task, 5, 50, 1, seed=2)
    a = mixture(newest, [base], total=100, newest_fraction=0.5, seed=0)
    b = mixture(newest, [base], total=100, newest_fraction=0.5, seed=0)
    c = mixture(newest, [base], total=100, newest_fraction=0.5, seed=1)
    assert a["prompt"] == b["prompt"]
    assert a["prompt"] != c["prompt"]
    first_half = a["round"][:50]
    assert 0 < sum(first_half) < 50  # interleaved, not newest-then-older


def test_mixture_with_an_empty_newest_round_uses_the_pool():
    task = get_task("copy")
    base = _rows(task, 3, 20, 0, seed=0)
    empty = truth_dataset(task, [], 1)
    mixed = mixture(empty, [base], total=64, newest_fraction=0.5, seed=0)
    assert len(mixed) == 64 and set(mixed["round"]) == {0}


def test_mixture_without_older_data_uses_the_newest_only():
    task = get_task("copy")
    newest = _rows(task, 3, 20, 1, seed=0)
    mixed = mixture(newest, [], total=64, newest_fraction=0.5, seed=0)
    assert len(mixed) == 64 and set(mixed["round"]) == {1}


def test_mixture_rounds_weighting_gives_every_older_dataset_an_equal_share():
    task = get_task("copy")
    base = _rows(task, 3, 300, 0, seed=0)
    first = _rows(task, 4, 7, 1, seed=1)
    empty = truth_dataset(task, [], 2)
    second = _rows(task, 5, 11, 3, seed=2)
    newest = _rows(task, 6, 10, 4, seed=3)
    mixed = mixture(newest, [base, first, empty, second], total=201, newest_fraction=0.5, seed=0,
                    older_weighting="rounds")
    rounds = Counter(mixed["round"])
    assert rounds[4] == 100 and rounds[2] == 0
    # 101 older rows over the three older datasets that have rows: 34, 34, 33 (by rows it would be ~95/2/3)
    assert sorted((rounds[0], rounds[1], rounds[3])) == [33, 34, 34]
    # a small round is cycled evenly: each of round 1's 7 rows appears 4 or 5 times (33 or 34 draws)
    per_row = Counter(p for p, r in zip(mixed["prompt"], mixed["round"]) if r == 1)
    assert len(per_row) == 7 and max(per_row.values()) - min(per_row.values()) <= 1
    again = mixture(newest, [base, first, empty, second], total=201, newest_fraction=0.5, seed=0,
                    older_weighting="rounds")
    assert mixed["prompt"] == again["prompt"]
    with pytest.raises(ValueError, match="older_weighting"):
        mixture(newest, [base], total=10, newest_fraction=0.5, seed=0, older_weighting="levels")


# -- the fast paths equal the plain ones -----------------------------------------------------------

def _random_rows(task, level, n, round_idx, seed):
    rng = random.Random(seed)
    return truth_dataset(task, [task.sample(level, rng) for _ in range(n)], round_idx)


def _mixture_with_datasets(newest, older, total, newest_fraction, seed):
    """The mixture written with plain `datasets` operations (select, concatenate, shuffle)."""
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


@pytest.mark.parametrize("fraction", [0.5, 0.3, 1.0])
def test_mixture_equals_the_datasets_version(fraction):
    task = get_task("reverse_addition")
    base = _random_rows(task, 3, 300, 0, seed=0)
    older = [_random_rows(task, 4, 70, 1, seed=1).select(range(10, 60)), _random_rows(task, 5, 40, 2, seed=2)]
    newest = _random_rows(task, 6, 90, 3, seed=3)
    for args in [(newest, [base, *older]), (newest, []), (truth_dataset(task, [], 3), [base])]:
        fast = mixture(*args, total=500, newest_fraction=fraction, seed=7)
        plain = _mixture_with_datasets(*args, total=500, newest_fraction=fraction, seed=7)
        assert fast.to_dict() == plain.to_dict()
        assert fast.features == plain.features


def _assert_tokenized_like_the_tokenizer(out, tokenizer):
    eos = tokenizer.eos_token_id
    for row in out:
        assert row["input_ids"] == tokenizer(row["prompt"] + row["completion"])["input_ids"] + [eos]
        assert row["prompt_len"] == len(tokenizer(row["prompt"])["input_ids"])
        assert row["length"] == len(row["input_ids"])


def test_vectorized_tokenize_equals_the_tokenizer(tokenizer):
    from si_hf.data import _char_ids

    assert _char_ids(tokenizer) is not None  # si-hf's tokenizer takes the vectorized path
    task = get_task("reverse_addition")
    ds = concatenate_datasets([_random_rows(task, 4, 50, 1, seed=0), _random_rows(task, 1, 5, 1, seed=1)])
    out = tokenize(ds.select(range(3, 52)), tokenizer)
    assert len(out) == 49
    _assert_tokenized_like_the_tokenizer(out, tokenizer)
    # Text that is a special token is read as that token, as the tokenizer reads it.
    odd = Dataset.from_dict({"prompt": ["12=", "9=", "1?="], "completion": ["1<eos>2", "", "<pad>"]})
    _assert_tokenized_like_the_tokenizer(tokenize(odd, tokenizer), tokenizer)


def test_tokenize_falls_back_to_the_tokenizer(tokenizer, monkeypatch):
    ds = Dataset.from_dict({"prompt": ["12=", "345+67="], "completion": ["12", "8001"]})
    fast = tokenize(ds, tokenizer).to_dict()
    monkeypatch.setattr("si_hf.data._char_ids", lambda tok: None)
    assert tokenize(ds, tokenizer).to_dict() == fast
    values, offsets, prompt_len = _encode_rows(tokenizer, ["é="], ["1"])  # not ASCII: the tokenizer's own way
    assert values.tolist() == tokenizer("é=1")["input_ids"] + [tokenizer.eos_token_id]
    assert prompt_len.tolist() == [3]


# -- length-split batches ------------------------------------------------------------------------

def _brute_force(lengths, cost):
    n = len(lengths)
    best = None
    for mask in range(1 << (n - 1)):
        cuts = [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        start, total = 0, 0
        for end in cuts:
            total += (end - start) * lengths[end - 1] + cost
            start = end
        best = total if best is None else min(best, total)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_split_by_length_is_optimal_and_covers_every_row(seed):
    rng = random.Random(seed)
    lengths = sorted(rng.choice([3, 4, 5, 9, 10, 20, 21, 40]) for _ in range(rng.randint(1, 11)))
    cost = rng.choice([0, 5, 30, 1000])
    pieces = split_by_length(lengths, cost)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    assert all(width == lengths[end - 1] for _, end, width in pieces)
    assert sum((end - start) * width + cost for start, end, width in pieces) == _brute_force(lengths, cost)


def test_collator_pieces_hold_the_same_rows(tokenizer):
    task = get_task("copy")
    rng = random.Random(0)
    problems = [task.sample(rng.choice([1, 2, 8, 9, 15]), rng) for _ in range(40)]
    ds = tokenize(Dataset.from_dict({"prompt": [task.prompt(p) for p in problems],
                                     "completion": [task.answer(p) for p in problems]}), tokenizer)
    features = list(ds)
    plain = PromptMaskingCollator(tokenizer.pad_token_id)(features)
    split = PromptMaskingCollator(tokenizer.pad_token_id, split_pieces=True, piece_cost=16)(features)
    assert len(split["pieces"]) > 1
    as_rows = lambda ids, labels: sorted(zip(map(tuple, ids.tolist()), map(tuple, labels.tolist())))  # noqa: E731
    assert as_rows(split["input_ids"], split["labels"]) == as_rows(plain["input_ids"], plain["labels"])
    for start, end, width in split["pieces"]:
        assert (split["input_ids"][start:end, width:] == tokenizer.pad_token_id).all()
        assert (split["labels"][start:end, width:] == -100).all()


def test_length_split_trainer_equals_padded_batches(make_model, tokenizer, tmp_path):
    """Same data, seed and schedule: the losses of length-split and padded batches agree step by step."""
    from si_hf.config import Recipe
    from si_hf.training import make_trainer

    task = get_task("copy")
    rng = random.Random(0)
    problems = [task.sample(rng.choice([1, 2, 3, 7, 8, 12]), rng) for _ in range(32 * 12)]
    ds = tokenize(Dataset.from_dict({"prompt": [task.prompt(p) for p in problems],
                                     "completion": [task.answer(p) for p in problems]}), tokenizer)
    recipe = Recipe(task="copy", batch_size=32, round_steps=12, round_warmup_steps=2, round_decay_steps=4,
                    learning_rate=3e-3, logging_steps=1, disable_tqdm=True, report_to="none")
    histories = {}
    for split in (True, False):
        model = make_model(seed=3, hidden_size=64, intermediate_size=128).train()
        trainer = make_trainer(model, tokenizer, ds, recipe, 1, str(tmp_path / str(split)))
        trainer.data_collator.split_pieces = split
        trainer.train()
        histories[split] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        histories[split, "weights"] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert len(histories[True]) == 12
    np.testing.assert_allclose(histories[True], histories[False], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(histories[True, "weights"], histories[False, "weights"], atol=1e-4, rtol=1e-4)


def test_a_round_that_kept_no_label_reads_back_as_the_readme_says(tmp_path):
    """Published as the Hub publisher writes it (load_from_disk(...).to_parquet): load_dataset refuses
    the empty split, the README's direct read gives 0 rows with the round's columns."""
    import pyarrow.parquet as pq
    from datasets import load_dataset, load_from_disk

    Dataset.from_dict({name: [] for name in ROUND_FEATURES}, features=ROUND_FEATURES).save_to_disk(
        tmp_path / "data", num_shards=1)  # as the loop saves it
    path = tmp_path / "train-00000-of-00001.parquet"
    load_from_disk(str(tmp_path / "data")).to_parquet(str(path))
    data = Dataset(pq.read_table(path))
    assert data.num_rows == 0 and data.column_names == list(ROUND_FEATURES)
    with pytest.raises(ValueError, match="corresponds to no data"):
        load_dataset("parquet", data_files={"train": str(path)}, split="train", cache_dir=str(tmp_path / "cache"))


def _has_carry_chain(prompt: str, k: int) -> bool:
    a, b = prompt[:-1].split("+")
    pair_sums = " ".join(str(int(x) + int(y)) for x, y in zip(reversed(a), reversed(b)))
    return " ".join(["9"] * k) in pair_sums


def test_base_carry_runs_plant_chains_in_a_share_and_leave_the_default_draws_alone():
    task = get_task("forward_addition")
    plain = base_dataset(task, 1, 8, 2000, seed=0, exclude=set())
    assert plain["prompt"] == base_dataset(task, 1, 8, 2000, seed=0, exclude=set(), carry_runs=0.0)["prompt"]
    planted = base_dataset(task, 1, 8, 2000, seed=0, exclude=set(), carry_runs=0.5)

    def with_long_runs(ds):  # sums with 3+ pairs in a row summing to 9: ~1% of random ones
        return sum(_has_carry_chain(prompt, 3) for prompt in ds["prompt"])

    assert with_long_runs(planted) > 5 * with_long_runs(plain)
    for row in planted.select(range(200)):
        problem = task.parse(row["prompt"])
        assert row["completion"] == task.answer(problem) and row["level"] == problem.level


@pytest.mark.parametrize("task_name", ["forward_addition", "multiplication"])
def test_base_equal_lengths_draws_a_share_as_the_held_out_sets_do(task_name):
    task = get_task(task_name)
    plain = base_dataset(task, 1, 6, 3000, seed=0, exclude=set())
    assert plain["prompt"] == base_dataset(task, 1, 6, 3000, seed=0, exclude=set(), equal_lengths=0.0)["prompt"]

    def equal_share(ds):
        lengths = [[len(x) for x in re.split(r"[+*]", prompt[:-1])] for prompt in ds["prompt"]]
        return sum(la == lb for la, lb in lengths) / len(lengths)

    # Lengths drawn apart from 1-6 agree one time in six; with half drawn equal, 1/2 + 1/2 * 1/6 = 7/12.
    assert abs(equal_share(plain) - 1 / 6) < 0.03
    assert abs(equal_share(base_dataset(task, 1, 6, 3000, seed=0, exclude=set(), equal_lengths=0.5)) - 7 / 12) < 0.03
    assert equal_share(base_dataset(task, 1, 6, 500, seed=0, exclude=set(), equal_lengths=1.0)) == 1.0
