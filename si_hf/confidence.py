"""The labeling model's confidence in its own labels: one teacher-forced pass over each label.

Greedy decoding picks the most probable token at each step; the probability it had is recovered
exactly by running prompt + completion + EOS through the model once. A label's confidence is the
lowest such probability over its completion and EOS (unfinished labels get 0).
"""

import dataclasses
from collections import defaultdict

import torch

from .labeling import Label


@torch.inference_mode()
def score_labels(model, tokenizer, labels: list[Label], batch_size: int = 512) -> list[Label]:
    """The labels with `confidence` filled in, in the same order."""
    was_training = model.training
    model.eval()
    eos = tokenizer.eos_token_id
    prompts = tokenizer([lab.prompt for lab in labels])["input_ids"]
    fulls = tokenizer([lab.prompt + lab.completion for lab in labels])["input_ids"]
    scores = [0.0] * len(labels)
    buckets = defaultdict(list)
    for i, lab in enumerate(labels):
        if lab.finished:
            buckets[(len(prompts[i]), len(fulls[i]))].append(i)
    for (prompt_len, full_len), idx in buckets.items():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            ids = torch.tensor([fulls[i] + [eos] for i in chunk], device=model.device)
            logits = model(input_ids=ids, use_cache=False).logits[:, prompt_len - 1 : -1].float()
            chosen = logits.log_softmax(-1).gather(-1, ids[:, prompt_len:, None]).squeeze(-1)
            for i, lowest in zip(chunk, chosen.min(dim=1).values.exp().tolist()):
                scores[i] = lowest
    model.train(was_training)
    return [dataclasses.replace(lab, confidence=score) for lab, score in zip(labels, scores)]
