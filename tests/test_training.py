"""The weight average (`ema_decay`): what the round's model is after training with it."""

import pytest
import torch
from transformers import TrainerCallback

from si_hf.config import Recipe
from si_hf.data import base_dataset, tokenize
from si_hf.errors import RecipeError
from si_hf.tasks import get_task
from si_hf.training import make_trainer


def _copy_rows(tokenizer, n):
    return tokenize(base_dataset(get_task("copy"), 1, 4, n, seed=0, exclude=set()), tokenizer)


def _recipe(**overrides):
    return Recipe(task="copy", batch_size=16, round_steps=8, round_warmup_steps=1, round_decay_steps=2,
                  learning_rate=3e-3, logging_steps=1, disable_tqdm=True, report_to="none", **overrides)


class RecordWeights(TrainerCallback):
    """Keeps the weights after every optimizer step (it runs before the average's)."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.steps.append([p.detach().clone() for p in model.parameters()])


def test_the_round_ends_with_the_warmed_up_average_of_its_steps(make_model, tokenizer, tmp_path):
    model = make_model(seed=1, hidden_size=64, intermediate_size=128).train()
    record = RecordWeights()
    trainer = make_trainer(model, tokenizer, _copy_rows(tokenizer, 16 * 8), _recipe(ema_decay=0.5), 1,
                           str(tmp_path), callbacks=[record])
    trainer.train()
    assert len(record.steps) == 8
    expected = [w.clone() for w in record.steps[0]]
    for n, weights in enumerate(record.steps[1:], start=1):
        decay = min(0.5, (1 + n) / (10 + n))
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights)]
    final = list(model.parameters())
    for got, want, last in zip(final, expected, record.steps[-1]):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(got, last) for got, last in zip(final, record.steps[-1]))


def test_without_ema_decay_the_round_ends_with_its_last_weights(make_model, tokenizer, tmp_path):
    model = make_model(seed=1, hidden_size=64, intermediate_size=128).train()
    record = RecordWeights()
    make_trainer(model, tokenizer, _copy_rows(tokenizer, 16 * 8), _recipe(), 1, str(tmp_path),
                 callbacks=[record]).train()
    for got, last in zip(model.parameters(), record.steps[-1]):
        assert torch.equal(got.detach(), last)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_ema_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(RecipeError, match="ema_decay"):
        _recipe(ema_decay=decay).validate()


def test_ema_decay_under_fsdp_is_refused_by_name(make_model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(RecipeError, match="ema_decay.*FSDP"):
        make_trainer(make_model(), tokenizer, _copy_rows(tokenizer, 16), _recipe(ema_decay=0.9), 1, str(tmp_path))
