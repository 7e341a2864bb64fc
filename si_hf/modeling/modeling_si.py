"""The si-hf decoder: SwiGLU, pre-norm, NoPE by default (self-contained: torch + transformers only)."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_si import SIConfig


class SIRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        dtype = hidden_states.dtype
        hidden_states = hidden_states.float()
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(dtype)


def make_norm(config):
    if config.norm_type == "layernorm":
        return nn.LayerNorm(config.hidden_size, eps=config.rms_norm_eps, bias=config.mlp_bias)
    return SIRMSNorm(config.hidden_size, eps=config.rms_norm_eps)


def rope_inv_freq(config):
    return 1.0 / (config.rope_theta ** (torch.arange(0, config.head_dim, 2, dtype=torch.float) / config.head_dim))


class SIRotaryEmbedding(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)

    @torch.no_grad()
    def forward(self, x, position_ids):
        freqs = position_ids[:, :, None].float() * self.inv_freq[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class SIAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        inner = self.num_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, inner, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, inner, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, inner, bias=config.attention_bias)
        self.o_proj = nn.Linear(inner, config.hidden_size, bias=config.attention_bias)

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None, cache=None):
        bsz, q_len, _ = hidden_states.shape
        shape = (bsz, q_len, self.num_heads, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        if position_embeddings is not None:
            q, k = apply_rotary(q, k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        kv_len = k.shape[2]
        if attention_mask is None and (q_len == 1 or q_len == kv_len):
            # No padding: plain causal attention (a single query attends to the whole cache).
            out = F.scaled_dot_product_attention(q, k, v, is_causal=q_len > 1)
        else:
            if attention_mask is None:
                # Several new tokens after a cache: causal mask aligned to the bottom-right.
                attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=q.device).tril(kv_len - q_len)
            if attention_mask.is_floating_point():  # ALiBi's bias, in the dtype autocast gives q
                attention_mask = attention_mask.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        return self.o_proj(out.transpose(1, 2).reshape(bsz, q_len, -1))


class SIMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SIDecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.input_layernorm = make_norm(config)
        self.self_attn = SIAttention(config, layer_idx)
        self.post_attention_layernorm = make_norm(config)
        self.mlp = SIMLP(config)

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None, cache=None):
        hidden_states = hidden_states + self.self_attn(
            self.input_layernorm(hidden_states), attention_mask, position_embeddings, cache
        )
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class SIPreTrainedModel(PreTrainedModel):
    config_class = SIConfig
    config: SIConfig
    base_model_prefix = "model"
    _no_split_modules = ["SIDecoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        if isinstance(module, SIRotaryEmbedding):
            # A non-persistent buffer is re-created empty by from_pretrained; refill it.
            with torch.no_grad():
                module.inv_freq.copy_(rope_inv_freq(self.config))
            return
        super()._init_weights(module)


def build_attention_mask(attention_mask, q_len, past_len):
    """Boolean (batch, 1, q, kv) mask from a 2D padding mask; None when nothing is padded."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    kv_len = past_len + q_len
    keys = torch.arange(kv_len, device=attention_mask.device)
    queries = torch.arange(past_len, kv_len, device=attention_mask.device)
    causal = keys[None, :] <= queries[:, None]
    mask = causal[None, :, :] & attention_mask[:, None, -kv_len:].bool()
    # A padding query sees nothing else; let it see itself so attention stays finite.
    mask = mask | (keys[None, :] == queries[:, None])[None]
    return mask[:, None]


def alibi_slopes(num_heads):
    """ALiBi's slopes (Press et al., 2022): a geometric sequence from 2^(-8/n) down to 2^(-8), so some
    heads look mostly at the last few tokens and others across the whole sequence."""
    return torch.pow(2.0, -8.0 * torch.arange(1, num_heads + 1, dtype=torch.float) / num_heads)


def alibi_mask(attention_mask, q_len, past_len, num_heads, device):
    """Float (batch or 1, heads, q, kv) mask: minus slope x distance on the keys a query may see,
    -inf on the others. Padding is on one side and masked, so index distances are token distances."""
    kv_len = past_len + q_len
    keys = torch.arange(kv_len, device=device)
    queries = torch.arange(past_len, kv_len, device=device)
    allowed = build_attention_mask(attention_mask, q_len, past_len)
    if allowed is None:
        allowed = (keys[None, :] <= queries[:, None])[None, None]
    distance = (queries[:, None] - keys[None, :]).clamp(min=0).float()
    bias = -alibi_slopes(num_heads).to(device)[:, None, None] * distance
    return bias[None].masked_fill(~allowed, float("-inf"))


class SIModel(SIPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(SIDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = make_norm(config)
        self.rotary_emb = SIRotaryEmbedding(config) if config.position_encoding == "rope" else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        cache = cache if cache is not None else kwargs.get("past_key_values")
        hidden_states = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past_len = cache.get_seq_length() if cache is not None else 0
        q_len = hidden_states.shape[1]

        position_embeddings = None
        if self.rotary_emb is not None:
            if position_ids is None:
                if attention_mask is not None:
                    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -q_len:]
                else:
                    position_ids = torch.arange(past_len, past_len + q_len, device=hidden_states.device)[None]
            position_embeddings = self.rotary_emb(hidden_states, position_ids)

        if self.config.position_encoding == "alibi":
            mask = alibi_mask(attention_mask, q_len, past_len, self.config.num_attention_heads, hidden_states.device)
        else:
            mask = build_attention_mask(attention_mask, q_len, past_len)
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask, position_embeddings, cache if use_cache else None)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache if use_cache else None)


class SIForCausalLM(SIPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.model = SIModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep=0,
        **kwargs,
    ):
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if logits_to_keep:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache)
