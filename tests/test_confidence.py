"""The confidence filter: scores recovered by one teacher-forced pass equal generate's own step scores."""

import random

import pytest
import torch

from si_hf.confidence import score_labels
from si_hf.filters import apply_filters, confidence_filter
from si_hf.labeling import Label, greedy_label
from si_hf.tasks import get_task


def test_scores_equal_generate_step_probabilities(trained_copy_model, tokenizer):
    task = get_task("copy")
    rng = random.Random(3)
    prompts = [task.prompt(task.sample(rng.randint(1, 6), rng)) for _ in range(40)]
    labels = score_labels(trained_copy_model, tokenizer,
                          greedy_label(trained_copy_model, tokenizer, prompts,
                                       [task.max_answer_len(p) for p in prompts], disable_tqdm=True))
    finished = [lab for lab in labels if lab.finished]
    assert finished, "the trained model should finish some labels"
    for lab in finished[:10]:
        ids = tokenizer([lab.prompt], return_tensors="pt").input_ids
        out = trained_copy_model.generate(ids, max_new_tokens=len(lab.completion) + 1, do_sample=False,
                                          output_scores=True, return_dict_in_generate=True,
                                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        chosen = out.sequences[0, ids.shape[1]:]
        probs = [torch.softmax(s[0].float(), -1)[t].item() for s, t in zip(out.scores, chosen)]
        assert lab.confidence == pytest.approx(min(probs), rel=1e-4, abs=1e-6)
    assert all(lab.confidence == 0.0 for lab in labels if not lab.finished)


def test_confidence_filter_keeps_confident_finished_labels():
    task = get_task("copy")
    labels = [Label("12=", "12", True, 0.95), Label("34=", "34", True, 0.5), Label("56=", "5", False, 0.99)]
    assert confidence_filter(task, labels, threshold=0.9) == [True, False, False]
    keep, stats = apply_filters(task, labels, ["length", "confidence:threshold=0.9"])
    assert keep == [True, False, False]
    assert stats[1] == {"filter": "confidence:threshold=0.9", "in": 2, "out": 1}


def test_confidence_filter_refuses_unscored_labels():
    with pytest.raises(ValueError, match="score_labels"):
        confidence_filter(get_task("copy"), [Label("1=", "1", True)])
    with pytest.raises(ValueError, match="threshold"):
        confidence_filter(get_task("copy"), [Label("1=", "1", True, 1.0)], threshold=1.5)
