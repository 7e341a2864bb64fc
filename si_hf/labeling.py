"""Batched greedy decoding that stops at EOS, bounded by a length taken from the prompt alone.

Two backends give the same labels:

- `fast` (default): prompts are bucketed by token length, so no batch is padded; the prompt goes
  through the model once into a preallocated KV cache; each later step runs an inference-only
  decoder step (fused q/k/v and gate/up projections, attention over the cache in place, no
  concatenation) and rows that have finished are dropped from the batch.
- `generate`: transformers' `generate` on the same buckets, for comparison.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.modules import module as nn_module
from tqdm.auto import tqdm
from transformers.cache_utils import DynamicCache

from .data import encode_texts
from .filters import Label
from .modeling.modeling_si import SIRMSNorm, apply_rotary


class PreallocatedKVCache:
    """A KV cache of fixed capacity, written in place: no per-step concatenation of the past.

    Keys are stored transposed (batch, heads, head_dim, position) so a one-token query attends with
    one batched matrix product. Implements the part of transformers' Cache API the si-hf attention
    uses (`update`, `get_seq_length`), so the prompt can be run through the model itself.
    """

    def __init__(self, keys_t: torch.Tensor, values: torch.Tensor, length: int = 0):
        self.keys_t, self.values, self.length = keys_t, values, length
        self.last_layer = keys_t.shape[0] - 1

    @classmethod
    def empty(cls, config, batch_size: int, capacity: int, dtype, device):
        layers, heads, dim = config.num_hidden_layers, config.num_attention_heads, config.head_dim
        return cls(torch.empty((layers, batch_size, heads, dim, capacity), dtype=dtype, device=device),
                   torch.empty((layers, batch_size, heads, capacity, dim), dtype=dtype, device=device))

    def rows(self, start: int, end: int) -> "PreallocatedKVCache":
        """An empty cache writing into rows start:end of this one."""
        return PreallocatedKVCache(self.keys_t[:, start:end], self.values[:, start:end])

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        start, end = self.length, self.length + key_states.shape[2]
        self.keys_t[layer_idx, :, :, :, start:end] = key_states.transpose(2, 3)
        self.values[layer_idx, :, :, start:end] = value_states
        if layer_idx == self.last_layer:
            self.length = end
        if start == 0:
            return key_states, value_states
        return self.keys_t[layer_idx, :, :, :, :end].transpose(2, 3), self.values[layer_idx, :, :, :end]

    def keep_rows(self, rows: torch.Tensor):
        """Drop every batch row not in `rows` (finished rows), copying the cache once."""
        self.keys_t = self.keys_t.index_select(1, rows)
        self.values = self.values.index_select(1, rows)


# Prompt tokens per forward pass of the prefill: big enough for efficient matrix products, small
# enough that the activations of one pass stay in the CPU caches.
PREFILL_TOKENS = 2048


def _fused(*linears):
    """One (weight, bias) for several projections of the same input."""
    weight = torch.cat([lin.weight for lin in linears])
    bias = None if linears[0].bias is None else torch.cat([lin.bias for lin in linears])
    return weight, bias


def _norm(module):
    """The model's norm as one call: RMSNorm through the fused `F.rms_norm` (the same formula)."""
    if isinstance(module, SIRMSNorm):
        return lambda x: F.rms_norm(x, module.weight.shape, module.weight, module.variance_epsilon)
    return module


def _residual(linear):
    """`residual + linear(x)` as one matrix product that accumulates onto the residual."""
    weight_t, bias = linear.weight.t(), linear.bias
    if bias is None:
        return lambda residual, x: torch.addmm(residual, x, weight_t)
    return lambda residual, x: torch.addmm(residual, x, weight_t).add_(bias)


class _SIDecodeStep:
    """One greedy decoding step of an SIForCausalLM over a PreallocatedKVCache, for inference only.

    The same computation as the model's forward on a single new token, without the generality a
    single token does not need: q/k/v and gate/up are one matrix product each, the new key and value
    are written into the cache, the query attends to the cache with two batched products, and the
    residual additions happen inside the output projections. The LM head and the rotary embedding
    are the model's own modules.
    """

    def __init__(self, model):
        base = model.model
        self.model = model
        self.heads, self.head_dim = model.config.num_attention_heads, model.config.head_dim
        self.inner = self.heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.final_norm = _norm(base.norm)
        self.layers = []
        for layer in base.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append((
                _norm(layer.input_layernorm),
                _fused(attn.q_proj, attn.k_proj, attn.v_proj),
                _residual(attn.o_proj),
                _norm(layer.post_attention_layernorm),
                _fused(mlp.gate_proj, mlp.up_proj),
                _residual(mlp.down_proj),
            ))

    def __call__(self, tokens: torch.Tensor, cache: PreallocatedKVCache) -> torch.Tensor:
        """Logits (batch, vocab) after feeding `tokens` (batch,) at position `cache.length`."""
        base = self.model.model
        pos = cache.length
        batch = tokens.shape[0]
        rows = batch * self.heads
        hidden = base.embed_tokens(tokens)
        rotary = None
        if base.rotary_emb is not None:
            rotary = base.rotary_emb(hidden, torch.full((1, 1), pos, device=tokens.device))
        for i, (norm1, (w_qkv, b_qkv), out_proj, norm2, (w_gu, b_gu), down_proj) in enumerate(self.layers):
            qkv = F.linear(norm1(hidden), w_qkv, b_qkv).view(batch, 3, self.heads, 1, self.head_dim)
            q, k, v = qkv.unbind(1)
            if rotary is not None:
                q, k = apply_rotary(q, k, *rotary)
            keys_t, values = cache.keys_t[i], cache.values[i]
            keys_t[:, :, :, pos] = k[:, :, 0]
            values[:, :, pos] = v[:, :, 0]
            # One query per row: (batch * heads) small products over the cache, read in place.
            scores = torch.bmm(q.reshape(rows, 1, self.head_dim), keys_t.view(rows, self.head_dim, -1)[..., : pos + 1])
            out = torch.bmm(scores.mul_(self.scale).softmax(-1), values.view(rows, -1, self.head_dim)[:, : pos + 1])
            hidden = out_proj(hidden, out.view(batch, self.inner))
            gate, up = F.linear(norm2(hidden), w_gu, b_gu).chunk(2, dim=-1)
            hidden = down_proj(hidden, F.silu(gate).mul_(up))
        cache.length = pos + 1
        return self.model.lm_head(self.final_norm(hidden))


@torch.inference_mode()
def _greedy_fast(model, input_ids: torch.Tensor, max_new: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """Greedy decoding of an unpadded batch into a preallocated cache; finished rows leave the batch."""
    if getattr(model.config, "model_type", None) != "si":
        return _greedy_cached(model, input_ids, max_new, eos_id, pad_id)
    batch, prompt_len = input_ids.shape
    device = input_ids.device
    cache = PreallocatedKVCache.empty(model.config, batch, prompt_len + max_new, model.dtype, device)
    step = _SIDecodeStep(model)
    nxt = torch.empty(batch, dtype=torch.long, device=device)
    chunk = max(1, PREFILL_TOKENS // prompt_len)
    for start in range(0, batch, chunk):
        end = min(batch, start + chunk)
        logits = model(input_ids=input_ids[start:end], cache=cache.rows(start, end), use_cache=True,
                       logits_to_keep=1).logits
        nxt[start:end] = logits[:, -1].argmax(-1)
    cache.length = prompt_len
    out = torch.full((batch, max_new), pad_id, dtype=torch.long, device=device)
    out[:, 0] = nxt
    rows = torch.arange(batch, device=device)  # which output row each cache row is
    done = nxt == eos_id
    for t in range(1, max_new):
        n_done = int(done.sum())
        if n_done == len(rows):
            break
        if 2 * n_done >= len(rows):
            # Half the rows have finished: stop spending compute on them.
            alive = (~done).nonzero().squeeze(1)
            cache.keep_rows(alive)
            rows, nxt, done = rows[alive], nxt[alive], done[alive]
        nxt = step(nxt, cache).argmax(-1).masked_fill_(done, pad_id)
        done |= nxt == eos_id
        out[rows, t] = nxt
    return out


@torch.inference_mode()
def _greedy_cached(model, input_ids: torch.Tensor, max_new: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """A plain KV-cached greedy loop for models other than si-hf's."""
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
    nxt = logits[:, -1].argmax(-1)
    done = nxt == eos_id
    out = [nxt]
    for _ in range(max_new - 1):
        if bool(done.all()):
            break
        logits = model(input_ids=nxt[:, None], past_key_values=cache, use_cache=True).logits
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
