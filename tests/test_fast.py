"""The fast paths give what the plain ones give: labels equal `generate`'s, vectorized data preparation
equals the tokenizer and `datasets`, length-split batches equal one padded batch."""

import random

import numpy as np
import pytest
import torch
from datasets import Dataset, concatenate_datasets

from si_hf import labeling
from si_hf.data import (
    PromptMaskingCollator,
    _encode_rows,
    _cycled_indices,
    mixture,
    split_by_length,
    tokenize,
    truth_dataset,
)
from si_hf.labeling import greedy_label
from si_hf.tasks import get_task


def _prompts(name, levels, n, seed=0):
    task = get_task(name)
    rng = random.Random(seed)
    prompts = [task.prompt(task.sample(rng.choice(levels), rng)) for _ in range(n)]
    return prompts, [task.max_answer_len(p) for p in prompts]


def _both(model, tokenizer, prompts, bounds, batch_size=16):
    fast = greedy_label(model, tokenizer, prompts, bounds, batch_size=batch_size, backend="fast", disable_tqdm=True)
    ref = greedy_label(model, tokenizer, prompts, bounds, batch_size=batch_size, backend="generate",
                       disable_tqdm=True)
    return fast, ref


def _eos_prone(model, tokenizer, scale=3.0, seed=0):
    """Make EOS likely but not certain: rows then finish at many different steps."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = model.lm_head.weight
        w[tokenizer.eos_token_id] = torch.randn(w.shape[1], generator=g) * scale * w.std()
    return model


# -- labeling ------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    {},
    {"position_encoding": "rope"},
    {"norm_type": "layernorm", "attention_bias": True, "mlp_bias": True},
    {"head_dim": 12, "num_hidden_layers": 3},
], ids=["nope", "rope", "layernorm-biases", "head_dim"])
@pytest.mark.parametrize("name", ["copy", "reverse_addition"])
def test_fast_equals_generate_across_configs(make_model, tokenizer, overrides, name):
    model = _eos_prone(make_model(initializer_range=0.2, **overrides), tokenizer)
    prompts, bounds = _prompts(name, [1, 2, 4, 6, 9], 80)
    fast, ref = _both(model, tokenizer, prompts, bounds, batch_size=32)
    assert fast == ref
    finished = [lab.finished for lab in fast]
    assert any(finished) and not all(finished)


def test_finished_rows_leave_the_batch_and_labels_stay_equal(make_model, tokenizer, monkeypatch):
    model = _eos_prone(make_model(initializer_range=0.2), tokenizer, scale=4.0)
    prompts, bounds = _prompts("copy", [12], 64)
    kept = []
    original = labeling.PreallocatedKVCache.keep_rows

    def spy(self, rows):
        kept.append(len(rows))
        return original(self, rows)

    monkeypatch.setattr(labeling.PreallocatedKVCache, "keep_rows", spy)
    fast, ref = _both(model, tokenizer, prompts, bounds, batch_size=64)
    assert fast == ref
    assert kept and min(kept) < 64  # finished rows really were dropped mid-decoding
    assert len({len(lab.completion) for lab in fast if lab.finished}) > 2


def test_prefill_in_chunks_equals_one_pass(make_model, tokenizer, monkeypatch):
    model = _eos_prone(make_model(initializer_range=0.2, position_encoding="rope"), tokenizer)
    prompts, bounds = _prompts("reverse_addition", [3, 5], 50)
    whole = greedy_label(model, tokenizer, prompts, bounds, batch_size=64, disable_tqdm=True)
    monkeypatch.setattr(labeling, "PREFILL_TOKENS", 20)  # a few rows per prefill pass
    chunked = greedy_label(model, tokenizer, prompts, bounds, batch_size=64, disable_tqdm=True)
    assert chunked == whole
    assert chunked == greedy_label(model, tokenizer, prompts, bounds, batch_size=64, backend="generate",
                                   disable_tqdm=True)


def test_fast_equals_generate_on_a_trained_model(trained_copy_model, tokenizer):
    prompts, bounds = _prompts("copy", [2, 4, 5, 6, 7], 200, seed=5)
    fast, ref = _both(trained_copy_model, tokenizer, prompts, bounds, batch_size=64)
    assert fast == ref


def test_batches_side_by_side_give_the_same_labels(make_model, tokenizer):
    model = _eos_prone(make_model(initializer_range=0.2), tokenizer)
    prompts, bounds = _prompts("reverse_addition", [2, 3, 5], 120, seed=2)
    one = greedy_label(model, tokenizer, prompts, bounds, batch_size=16, workers=1, disable_tqdm=True)
    threads = torch.get_num_threads()
    two = greedy_label(model, tokenizer, prompts, bounds, batch_size=16, workers=2, disable_tqdm=True)
    assert torch.get_num_threads() == threads  # restored
    assert two == one
    assert one == greedy_label(model, tokenizer, prompts, bounds, batch_size=16, backend="generate",
                               disable_tqdm=True)


def test_a_model_with_hooks_is_labeled_one_batch_at_a_time(scripted_model, tokenizer):
    """The scripted test model counts its steps in a forward hook: batches must not interleave."""
    model = scripted_model(["0", "0", "<eos>"])
    prompts = [f"{i:02d}=" for i in range(40)] + [f"{i:03d}=" for i in range(40)]
    labels = greedy_label(model, tokenizer, prompts, [3] * 80, batch_size=4, workers=2, disable_tqdm=True)
    assert all(lab.completion == "00" and lab.finished for lab in labels)


def test_decode_step_matches_the_model_forward(make_model):
    """One inference step over the preallocated cache gives the model's own logits for that token."""
    for overrides in ({}, {"position_encoding": "rope"}, {"attention_bias": True, "mlp_bias": True}):
        model = make_model(initializer_range=0.2, **overrides)
        ids = torch.randint(4, 20, (5, 9))
        with torch.inference_mode():
            full = model(input_ids=ids, use_cache=False).logits[:, -1]
            cache = labeling.PreallocatedKVCache.empty(model.config, 5, 12, torch.float32, "cpu")
            model(input_ids=ids[:, :-1], cache=cache, use_cache=True)
            step = labeling._SIDecodeStep(model)(ids[:, -1], cache)
        torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)
        assert cache.length == 9


# -- data ----------------------------------------------------------------------------------------

def _rows(task, level, n, round_idx, seed):
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
    base = _rows(task, 3, 300, 0, seed=0)
    older = [_rows(task, 4, 70, 1, seed=1).select(range(10, 60)), _rows(task, 5, 40, 2, seed=2)]
    newest = _rows(task, 6, 90, 3, seed=3)
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
    ds = concatenate_datasets([_rows(task, 4, 50, 1, seed=0), _rows(task, 1, 5, 1, seed=1)])
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
