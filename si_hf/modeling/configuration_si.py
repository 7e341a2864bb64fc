"""Configuration of the si-hf decoder (self-contained: travels to the Hub as remote code)."""

from transformers import PretrainedConfig

AUTO_MAP = {
    "AutoConfig": "configuration_si.SIConfig",
    "AutoModel": "modeling_si.SIModel",
    "AutoModelForCausalLM": "modeling_si.SIForCausalLM",
}

POSITION_ENCODINGS = ("nope", "rope", "alibi")


class SIConfig(PretrainedConfig):
    r"""
    A LLaMA-style decoder for algorithmic tasks: SwiGLU MLP, pre-normalization, no biases by default,
    untied embeddings and, by default, no positional encoding at all (NoPE).

    Args:
        vocab_size: number of tokens.
        hidden_size: width of the residual stream.
        intermediate_size: width of the SwiGLU MLP.
        num_hidden_layers: number of decoder layers.
        num_attention_heads: attention heads; `head_dim` defaults to `hidden_size // num_attention_heads`.
        head_dim: width of one attention head.
        position_encoding: `"nope"` (causal attention alone carries position), `"rope"`, or `"alibi"`
            (a fixed penalty on attention that grows with distance, one slope per head; no parameters).
        rope_theta: base of the rotary frequencies when `position_encoding="rope"`.
        max_position_embeddings: longest sequence the model is sized for (informational under NoPE).
        norm_type: `"rmsnorm"` or `"layernorm"`.
        rms_norm_eps: epsilon of the normalization layers.
        attention_bias / mlp_bias: add biases to the attention and MLP projections.
        initializer_range: standard deviation of the normal initialization.
    """

    model_type = "si"
    keys_to_ignore_at_inference = ["cache"]

    def __init__(self, vocab_size=32, hidden_size=384, intermediate_size=1536, num_hidden_layers=6,
                 num_attention_heads=6, head_dim=None, position_encoding="nope", rope_theta=10000.0,
                 max_position_embeddings=2048, norm_type="rmsnorm", rms_norm_eps=1e-6, attention_bias=False,
                 mlp_bias=False, initializer_range=0.02, use_cache=True, pad_token_id=0, bos_token_id=1,
                 eos_token_id=2, tie_word_embeddings=False, **kwargs):
        if position_encoding not in POSITION_ENCODINGS:
            raise ValueError(f"position_encoding must be one of {POSITION_ENCODINGS}, got {position_encoding!r}")
        if norm_type not in ("rmsnorm", "layernorm"):
            raise ValueError(f"norm_type must be 'rmsnorm' or 'layernorm', got {norm_type!r}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.head_dim = head_dim if head_dim is not None else hidden_size // num_attention_heads
        self.position_encoding = position_encoding
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.norm_type = norm_type
        self.rms_norm_eps = rms_norm_eps
        self.attention_bias = attention_bias
        self.mlp_bias = mlp_bias
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        # The remote code of both heads (save_pretrained records only the saved model's own class).
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
