"""Greedy labeling: the fast KV-cache loop equals `generate` (across configs, with finished rows
leaving the batch, chunked prefill, batches side by side), order, the length bound, EOS."""

import random

import pytest
import torch

from si_hf.labeling import Label, greedy_label
from si_hf.modeling import decoding
from si_hf.tasks import get_task


def _prompts(name, levels, n, seed=0):
    task = get_task(name)
    rng = random.Random(seed)
    prompts = [task.prompt(task.sample(rng.choice(levels), rng)) for _ in range(n)]
    return task, prompts, [task.max_answer_len(p) for p in prompts]


def _label(model, tokenizer, prompts, bounds, **kwargs):
    return greedy_label(model, tokenizer, prompts, bounds, disable_tqdm=True, **kwargs)


@pytest.mark.parametrize("name", ["copy", "reverse_addition"])
@pytest.mark.parametrize("position_encoding", ["nope", "rope", "alibi"])
def test_fast_equals_generate_random_model(make_model, tokenizer, name, position_encoding):
    model = make_model(position_encoding=position_encoding, initializer_range=0.2)
    task, prompts, bounds = _prompts(name, [1, 2, 3, 5, 8], 60)
    assert len({len(p) for p in prompts}) > 3  # several length buckets
    fast = _label(model, tokenizer, prompts, bounds, backend="fast", batch_size=7)
    ref = _label(model, tokenizer, prompts, bounds, backend="generate", batch_size=7)
    assert fast == ref
    assert all(isinstance(lab, Label) for lab in fast)


def test_fast_equals_generate_trained_model(trained_copy_model, tokenizer):
    task, prompts, bounds = _prompts("copy", [1, 2, 3, 4, 5, 6], 150, seed=1)
    fast = _label(trained_copy_model, tokenizer, prompts, bounds, backend="fast", batch_size=16)
    ref = _label(trained_copy_model, tokenizer, prompts, bounds, backend="generate", batch_size=16)
    assert fast == ref
    # The comparison is meaningful: rows finish at different steps, some never do, some are right.
    finished = [lab.finished for lab in fast]
    assert any(finished) and not all(finished)
    assert len({len(lab.completion) for lab in fast if lab.finished}) > 1
    assert any(lab.completion == task.answer(task.parse(lab.prompt)) for lab in fast)


def test_batch_size_does_not_change_labels(trained_copy_model, tokenizer):
    _, prompts, bounds = _prompts("copy", [1, 2, 3, 4, 5], 80, seed=2)
    one_batch = _label(trained_copy_model, tokenizer, prompts, bounds, batch_size=1024)
    small = _label(trained_copy_model, tokenizer, prompts, bounds, batch_size=3)
    assert one_batch == small


@pytest.mark.parametrize("backend", ["fast", "generate"])
def test_labels_in_input_order(trained_copy_model, tokenizer, backend):
    _, prompts, bounds = _prompts("copy", [1, 2, 3, 4, 5], 60, seed=3)
    labels = _label(trained_copy_model, tokenizer, prompts, bounds, backend=backend, batch_size=8)
    assert [lab.prompt for lab in labels] == prompts
    order = list(range(len(prompts)))
    random.Random(0).shuffle(order)
    shuffled = _label(trained_copy_model, tokenizer, [prompts[i] for i in order], [bounds[i] for i in order],
                      backend=backend, batch_size=8)
    assert shuffled == [labels[i] for i in order]


@pytest.mark.parametrize("backend", ["fast", "generate"])
def test_bound_is_respected_without_eos(scripted_model, tokenizer, backend):
    model = scripted_model(["7"])  # never emits EOS
    prompts = ["12=", "34=", "56=", "1234=", "9="]
    bounds = [1, 2, 5, 4, 0]  # rows of one length bucket may have different bounds
    labels = _label(model, tokenizer, prompts, bounds, backend=backend, batch_size=2)
    for lab, bound in zip(labels, bounds):
        assert lab.completion == "7" * (bound + 1)  # the bound, plus the EOS slot
        assert lab.finished is False


@pytest.mark.parametrize("backend", ["fast", "generate"])
@pytest.mark.parametrize("bound,completion,finished", [
    (0, "1", False),
    (1, "12", False),   # EOS would be the third token: past bound + 1
    (2, "12", True),    # EOS exactly in the last allowed slot
    (5, "12", True),
])
def test_eos_within_bound(scripted_model, tokenizer, backend, bound, completion, finished):
    model = scripted_model(["1", "2", "<eos>", "9"])
    [lab] = _label(model, tokenizer, ["55="], [bound], backend=backend)
    assert lab == Label("55=", completion, finished)
    assert len(lab.completion) <= bound + 1


@pytest.mark.parametrize("backend", ["fast", "generate"])
def test_trained_model_completions_respect_bounds(trained_copy_model, tokenizer, backend):
    task, prompts, bounds = _prompts("copy", [1, 3, 5, 7], 60, seed=4)
    for lab, bound in zip(_label(trained_copy_model, tokenizer, prompts, bounds, backend=backend), bounds):
        assert len(lab.completion) <= bound + 1
        if not lab.finished:
            assert len(lab.completion) == bound + 1


def test_fast_loop_stops_when_every_row_is_done(scripted_model, tokenizer):
    model = scripted_model(["<eos>"])
    calls = []
    model.model.register_forward_pre_hook(lambda *a: calls.append(1))
    labels = _label(model, tokenizer, ["1=", "2=", "3=", "12345="], [1, 1, 1, 5], backend="fast")
    assert all(lab.finished and lab.completion == "" for lab in labels)
    assert len(calls) == 2  # one prefill per length bucket, no further steps


def test_training_mode_is_restored(make_model, tokenizer):
    model = make_model().train()
    _label(model, tokenizer, ["1="], [1])
    assert model.training
    model.eval()
    _label(model, tokenizer, ["1="], [1])
    assert not model.training


def test_unknown_backend(make_model, tokenizer):
    with pytest.raises(ValueError, match="backend"):
        greedy_label(make_model(), tokenizer, ["1="], [1], backend="beam")


@pytest.mark.parametrize("special", ["<bos>", "<pad>", "<unk>"])
def test_special_tokens_inside_a_completion_fail_the_length_filter(scripted_model, tokenizer, special):
    """A stray special token inside an answer never yields a kept (or exactly matching) label."""
    from si_hf.filters import length_filter

    task = get_task("copy")
    model = scripted_model(["1", special, "2", "<eos>"])
    [lab] = _label(model, tokenizer, ["123="], [task.max_answer_len("123=")])
    assert lab.completion != "123"
    assert length_filter(task, [lab]) == [False]


# -- the fast loop equals generate -----------------------------------------------------------------

def _prompts_and_bounds(name, levels, n, seed=0):
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


@pytest.mark.parametrize("overrides", [
    {},
    {"position_encoding": "rope"},
    {"norm_type": "layernorm", "attention_bias": True, "mlp_bias": True},
    {"head_dim": 12, "num_hidden_layers": 3},
], ids=["nope", "rope", "layernorm-biases", "head_dim"])
@pytest.mark.parametrize("name", ["copy", "reverse_addition"])
def test_fast_equals_generate_across_configs(make_model, tokenizer, overrides, name):
    model = _eos_prone(make_model(initializer_range=0.2, **overrides), tokenizer)
    prompts, bounds = _prompts_and_bounds(name, [1, 2, 4, 6, 9], 80)
    fast, ref = _both(model, tokenizer, prompts, bounds, batch_size=32)
    assert fast == ref
    finished = [lab.finished for lab in fast]
    assert any(finished) and not all(finished)


def test_finished_rows_leave_the_batch_and_labels_stay_equal(make_model, tokenizer, monkeypatch):
    model = _eos_prone(make_model(initializer_range=0.2), tokenizer, scale=4.0)
    prompts, bounds = _prompts_and_bounds("copy", [12], 64)
    kept = []
    original = decoding.PreallocatedKVCache.keep_rows

    def spy(self, rows):
        kept.append(len(rows))
        return original(self, rows)

    monkeypatch.setattr(decoding.PreallocatedKVCache, "keep_rows", spy)
    fast, ref = _both(model, tokenizer, prompts, bounds, batch_size=64)
    assert fast == ref
    assert kept and min(kept) < 64  # finished rows really were dropped mid-decoding
    assert len({len(lab.completion) for lab in fast if lab.finished}) > 2


def test_prefill_in_chunks_equals_one_pass(make_model, tokenizer, monkeypatch):
    model = _eos_prone(make_model(initializer_range=0.2, position_encoding="rope"), tokenizer)
    prompts, bounds = _prompts_and_bounds("reverse_addition", [3, 5], 50)
    whole = greedy_label(model, tokenizer, prompts, bounds, batch_size=64, disable_tqdm=True)
    monkeypatch.setattr(decoding, "PREFILL_TOKENS", 20)  # a few rows per prefill pass
    chunked = greedy_label(model, tokenizer, prompts, bounds, batch_size=64, disable_tqdm=True)
    assert chunked == whole
    assert chunked == greedy_label(model, tokenizer, prompts, bounds, batch_size=64, backend="generate",
                                   disable_tqdm=True)


def test_fast_equals_generate_on_a_trained_model(trained_copy_model, tokenizer):
    prompts, bounds = _prompts_and_bounds("copy", [2, 4, 5, 6, 7], 200, seed=5)
    fast, ref = _both(trained_copy_model, tokenizer, prompts, bounds, batch_size=64)
    assert fast == ref


def test_batches_side_by_side_give_the_same_labels(make_model, tokenizer):
    model = _eos_prone(make_model(initializer_range=0.2), tokenizer)
    prompts, bounds = _prompts_and_bounds("reverse_addition", [2, 3, 5], 120, seed=2)
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
            cache = decoding.PreallocatedKVCache.empty(model.config, 5, 12, torch.float32, "cpu")
            model(input_ids=ids[:, :-1], cache=cache, use_cache=True)
            step = decoding.SIDecodeStep(model)(ids[:, -1], cache)
        torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)
        assert cache.length == 9
