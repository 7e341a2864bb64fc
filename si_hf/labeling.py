"""Batched greedy decoding that stops at EOS, bounded by a length taken from the prompt alone.

Two backends give the same labels:

- `fast` (default): prompts are bucketed by token length, so no batch is padded; the prompt goes
  through the model once into a preallocated KV cache; each later step runs an inference-only
  decoder step (fused q/k/v and gate/up projections, attention over the cache in place, no
  concatenation) and rows that have finished are dropped from the batch.
- `generate`: transformers' `generate` on the same buckets, for comparison.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.modules import module as nn_module
from tqdm.auto import tqdm

from .data import encode_texts
from .modeling.decoding import greedy_fast


@dataclass(frozen=True)
class Label:
    """One prompt's label from the labeling model, and what the filters read of it besides."""

    prompt: str
    completion: str
    finished: bool  # the model emitted EOS within the prompt's length bound
    # The labeling model's lowest probability of any token it chose (answer and EOS); filled by
    # `si_hf.confidence.score_labels` when a recipe filters on it.
    confidence: float | None = None
    # The answer the same model's answers to shorter pieces of the prompt imply (`Task.pieces`,
    # `Task.compose`); "" when the prompt has no cut or a piece's answer did not fit; filled by
    # `si_hf.consistency.compose_labels` when a recipe filters on it.
    composed: str | None = None
    # The same model's answer with the operands swapped (`Task.swapped`); "" when it did not finish;
    # filled by `si_hf.consistency.swap_labels` when a recipe filters on it.
    swapped: str | None = None


@torch.inference_mode()
def _greedy_generate(model, input_ids: torch.Tensor, max_new: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """The reference path: transformers' `generate` with greedy decoding."""
    out = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new,
        do_sample=False,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    return out[:, input_ids.shape[1] :]


BACKENDS = {"fast": greedy_fast, "generate": _greedy_generate}


def _decode_rows(gen: torch.Tensor, bounds: list[int], eos_id: int, id_to_char: np.ndarray) -> list[tuple[str, bool]]:
    """Per row: the text before the first EOS within bound+1 tokens; without one, all bound+1 tokens
    (unfinished). Special tokens other than EOS decode to nothing."""
    gen = gen.cpu().numpy()
    width = gen.shape[1]
    limit = np.minimum(np.asarray(bounds) + 1, width)
    in_bound = np.arange(width)[None, :] < limit[:, None]
    is_eos = (gen == eos_id) & in_bound
    finished = is_eos.any(1)
    ends = np.where(finished, is_eos.argmax(1), limit)
    chars = id_to_char[gen]
    return [("".join(row[:end]), bool(fin)) for row, end, fin in zip(chars.tolist(), ends.tolist(), finished)]


def _batches(offsets: np.ndarray, batch_size: int, parts: int):
    """Row indices of each batch: rows of one token length together, in order of length, at most
    `batch_size` rows, and a bucket cut into at least `parts` batches when it has the rows for it."""
    lengths = np.diff(offsets)
    order = np.argsort(lengths, kind="stable")
    cuts = np.flatnonzero(np.diff(lengths[order])) + 1
    for bucket in np.split(order, cuts):
        size = min(batch_size, max(1, -(-len(bucket) // parts)))
        for start in range(0, len(bucket), size):
            yield bucket[start : start + size]


def _has_hooks(model) -> bool:
    """Whether any forward hook (global or on one of the model's modules) watches the model."""
    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _in_threads(fn, jobs, workers: int):
    """`map(fn, jobs)`, spread over `workers` threads that each run torch on one core (CPU only).

    Small models leave most of torch's intra-op parallelism idle (each operation is short); whole
    batches side by side keep every core busy. Python lets go of the GIL inside torch operations."""
    if workers <= 1:
        yield from map(fn, jobs)
        return
    threads = torch.get_num_threads()

    def one_core(job):
        torch.set_num_threads(1)
        return fn(job)

    try:
        with ThreadPoolExecutor(workers) as pool:
            yield from pool.map(one_core, jobs)
    finally:
        torch.set_num_threads(threads)


def greedy_label(
    model,
    tokenizer,
    prompts: list[str],
    max_answer_lens: list[int],
    batch_size: int = 1024,
    backend: str = "fast",
    desc: str = "labeling",
    disable_tqdm: bool = False,
    workers: int | None = None,
) -> list[Label]:
    """Label every prompt greedily. Prompts are bucketed by token length so no batch needs padding;
    each row may emit at most its bound plus EOS. Returns labels in the order of `prompts`.

    Memory is bounded by `batch_size` rows per worker, whatever the number of prompts. `workers`
    (fast backend on the CPU): batches decoded side by side, one core each; default: torch's
    thread count."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown labeler backend {backend!r}; choose from {sorted(BACKENDS)}")
    step = BACKENDS[backend]
    if not prompts:
        return []
    was_training = model.training
    model.eval()
    device = model.device
    if workers is None:
        workers = torch.get_num_threads()
    if backend != "fast" or device.type != "cpu" or _has_hooks(model):
        workers = 1  # hooks observe the model's calls in order (and may keep state): one batch at a time
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    specials = set(tokenizer.all_special_tokens)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    id_to_char = np.array([t if t not in specials else "" for t in tokens], dtype=object)
    values, offsets = encode_texts(tokenizer, prompts)
    bounds = np.asarray(max_answer_lens)
    batches = list(_batches(offsets, batch_size, workers))

    def label(rows):
        length = offsets[rows[0] + 1] - offsets[rows[0]]
        ids = torch.from_numpy(values[offsets[rows][:, None] + np.arange(length)].astype(np.int64)).to(device)
        return step(model, ids, int(bounds[rows].max()) + 1, eos_id, pad_id)

    results: list[Label | None] = [None] * len(prompts)
    with tqdm(total=len(prompts), desc=desc, unit="seq", disable=disable_tqdm, leave=False) as bar:
        for rows, gen in zip(batches, _in_threads(label, batches, workers)):
            for i, (text, finished) in zip(rows.tolist(), _decode_rows(gen, bounds[rows], eos_id, id_to_char)):
                results[i] = Label(prompts[i], text, finished)
            bar.update(len(rows))
    model.train(was_training)
    return results
