"""The fast greedy decoder of si-hf's model: the prompt goes through the model once into a
preallocated KV cache; each later step runs an inference-only decoder step (fused q/k/v and gate/up
projections, attention over the cache in place, no concatenation) and rows that have finished leave
the batch. Its outputs equal the model's own forward pass token for token (tests/test_labeling.py).
"""

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache

from .modeling_si import SIRMSNorm, alibi_slopes, apply_rotary


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


class SIDecodeStep:
    """One greedy decoding step of an SIForCausalLM over a PreallocatedKVCache, for inference only.

    The same computation as the model's forward on a single new token, without the generality a
    single token does not need: q/k/v and gate/up are one matrix product each, the new key and value
    are written into the cache, the query attends to the cache with two batched products, and the
    residual additions happen inside the output projections. The LM head and the rotary embedding
    are the model's own modules; ALiBi's bias is added to the scores as the model's mask adds it.
    """

    def __init__(self, model):
        base = model.model
        self.model = model
        self.heads, self.head_dim = model.config.num_attention_heads, model.config.head_dim
        self.inner = self.heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.slopes = alibi_slopes(self.heads)[:, None] if model.config.position_encoding == "alibi" else None
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
        alibi = None
        if self.slopes is not None:  # the same bias for every row: minus slope x distance to each key
            alibi = (-self.slopes.to(tokens.device) * torch.arange(pos, -1, -1, device=tokens.device)).to(hidden.dtype)
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
            scores.mul_(self.scale)
            if alibi is not None:
                scores.view(batch, self.heads, -1).add_(alibi)
            out = torch.bmm(scores.softmax(-1), values.view(rows, -1, self.head_dim)[:, : pos + 1])
            hidden = out_proj(hidden, out.view(batch, self.inner))
            gate, up = F.linear(norm2(hidden), w_gu, b_gu).chunk(2, dim=-1)
            hidden = down_proj(hidden, F.silu(gate).mul_(up))
        cache.length = pos + 1
        return self.model.lm_head(self.final_norm(hidden))


@torch.inference_mode()
def greedy_fast(model, input_ids: torch.Tensor, max_new: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """Greedy decoding of an unpadded batch into a preallocated cache; finished rows leave the batch."""
    if getattr(model.config, "model_type", None) != "si":
        return greedy_cached(model, input_ids, max_new, eos_id, pad_id)
    batch, prompt_len = input_ids.shape
    device = input_ids.device
    cache = PreallocatedKVCache.empty(model.config, batch, prompt_len + max_new, model.dtype, device)
    step = SIDecodeStep(model)
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
def greedy_cached(model, input_ids: torch.Tensor, max_new: int, eos_id: int, pad_id: int) -> torch.Tensor:
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
