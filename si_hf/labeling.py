"""Batched greedy decoding that stops at EOS, bounded by a length taken from the prompt alone."""

from collections import defaultdict

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import DynamicCache

from .filters import Label


def _decode_row(row: list[int], bound: int, eos_id: int, id_to_token: list[str]) -> tuple[str, bool]:
    """Text before the first EOS within bound+1 tokens; without one, all bound+1 tokens, unfinished."""
    row = row[: bound + 1]
    if eos_id in row:
        return "".join(id_to_token[t] for t in row[: row.index(eos_id)]), True
    return "".join(id_to_token[t] for t in row), False


class PreallocatedKVCache:
    """A KV cache of fixed capacity, written in place: no per-step concatenation of the past.

    Implements the part of transformers' Cache API the si-hf attention uses (`update`, `get_seq_length`).
    """

    def __init__(self, config, batch_size: int, capacity: int, dtype, device):
        shape = (config.num_hidden_layers, batch_size, config.num_attention_heads, capacity, config.head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.last_layer = config.num_hidden_layers - 1
        self.length = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        start, end = self.length, self.length + key_states.shape[2]
        self.keys[layer_idx, :, :, start:end] = key_states
        self.values[layer_idx, :, :, start:end] = value_states
        if layer_idx == self.last_layer:
            self.length = end
        return self.keys[layer_idx, :, :, :end], self.values[layer_idx, :, :, :end]


def _make_cache(model, input_ids: torch.Tensor, max_new: int):
    if getattr(model.config, "model_type", None) == "si":
        return PreallocatedKVCache(model.config, input_ids.shape[0], input_ids.shape[1] + max_new, model.dtype,
                                   input_ids.device)
    return DynamicCache(config=model.config)


@torch.inference_mode()
def _greedy_fast(model, input_ids: torch.Tensor, max_new: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """KV-cached greedy loop over an unpadded batch; stops once every row has emitted EOS."""
    cache = _make_cache(model, input_ids, max_new)
    logits = model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1).logits
    nxt = logits[:, -1].argmax(-1)
    done = nxt == eos_id
    out = [nxt]
    for _ in range(max_new - 1):
        if bool(done.all()):
            break
        logits = model(input_ids=nxt[:, None], cache=cache, use_cache=True).logits
        nxt = logits[:, -1].argmax(-1).masked_fill(done, pad_id)
        done |= nxt == eos_id
        out.append(nxt)
    return torch.stack(out, dim=1)


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


BACKENDS = {"fast": _greedy_fast, "generate": _greedy_generate}


def greedy_label(
    model,
    tokenizer,
    prompts: list[str],
    max_answer_lens: list[int],
    batch_size: int = 1024,
    backend: str = "fast",
    desc: str = "labeling",
    disable_tqdm: bool = False,
) -> list[Label]:
    """Label every prompt greedily. Prompts are bucketed by token length so no batch needs padding;
    each row may emit at most its bound plus EOS. Returns labels in the order of `prompts`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown labeler backend {backend!r}; choose from {sorted(BACKENDS)}")
    step = BACKENDS[backend]
    if not prompts:
        return []
    was_training = model.training
    model.eval()
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    id_to_token = [t if t not in tokenizer.all_special_tokens else "" for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    buckets = defaultdict(list)
    for i, ids in enumerate(encoded):
        buckets[len(ids)].append(i)
    results: list[Label | None] = [None] * len(prompts)
    device = model.device
    with tqdm(total=len(prompts), desc=desc, unit="seq", disable=disable_tqdm, leave=False) as bar:
        for length in sorted(buckets):
            idx = buckets[length]
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                ids = torch.tensor([encoded[i] for i in chunk], device=device)
                bounds = [max_answer_lens[i] for i in chunk]
                gen = step(model, ids, max(bounds) + 1, eos_id, pad_id).tolist()
                for i, row, bound in zip(chunk, gen, bounds):
                    text, finished = _decode_row(row, bound, eos_id, id_to_token)
                    results[i] = Label(prompts[i], text, finished)
                bar.update(len(chunk))
    model.train(was_training)
    return results
