"""SIConfig / SIModel / SIForCausalLM: training signal, generation, padding, caching, save and load."""

import os

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.cache_utils import DynamicCache

import si_hf  # noqa: F401  (registers the Auto classes)
from si_hf import SIConfig, SIForCausalLM, SIModel
from si_hf.modeling.modeling_si import alibi_mask, alibi_slopes

PROMPTS = ["7=", "123=", "4567890=", "12+345="]


def _batch(tokenizer, prompts):
    return tokenizer(prompts, padding=True, return_tensors="pt")


@pytest.mark.parametrize("position_encoding", ["nope", "rope", "alibi"])
@pytest.mark.parametrize("norm_type", ["rmsnorm", "layernorm"])
def test_forward_backward(make_model, tokenizer, position_encoding, norm_type):
    model = make_model(position_encoding=position_encoding, norm_type=norm_type).train()
    ids = tokenizer(["123=123", "45=45"], padding=True, return_tensors="pt")["input_ids"]
    labels = ids.clone()
    labels[:, :3] = -100
    out = model(input_ids=ids, labels=labels)
    assert out.logits.shape == (2, ids.shape[1], len(tokenizer))
    assert torch.isfinite(out.loss)
    # The loss is the shifted next-token cross entropy, ignoring -100.
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]).float(),
                               labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"


def test_config_defaults_and_validation():
    cfg = SIConfig()
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (
        6, 384, 6, 1536)
    assert cfg.head_dim == 64 and cfg.position_encoding == "nope" and not cfg.tie_word_embeddings
    assert SIConfig(hidden_size=32, num_attention_heads=4).head_dim == 8
    with pytest.raises(ValueError, match="position_encoding"):
        SIConfig(position_encoding="fire")
    with pytest.raises(ValueError, match="norm_type"):
        SIConfig(norm_type="batchnorm")


def test_no_biases_untied_no_position_params(make_model):
    model = make_model()
    assert not any(name.endswith(".bias") for name, _ in model.named_parameters())
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert model.model.rotary_emb is None
    assert make_model(position_encoding="rope").model.rotary_emb is not None


def test_logits_to_keep(make_model, tokenizer):
    model = make_model()
    ids = tokenizer(["123="], return_tensors="pt")["input_ids"]
    full = model(input_ids=ids, use_cache=False).logits
    last = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits
    assert last.shape == (1, 1, len(tokenizer))
    torch.testing.assert_close(last[:, 0], full[:, -1])


@pytest.mark.parametrize("position_encoding", ["nope", "rope", "alibi"])
def test_generate_cache_matches_no_cache(make_model, tokenizer, position_encoding):
    model = make_model(position_encoding=position_encoding, initializer_range=0.2)
    batch = _batch(tokenizer, PROMPTS)
    q_lens = []
    hook = model.model.register_forward_pre_hook(
        lambda mod, args, kwargs: q_lens.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        cached = model.generate(**batch, max_new_tokens=12, min_new_tokens=12, do_sample=False, use_cache=True,
                                pad_token_id=tokenizer.pad_token_id)
        # The cache really is used: after the prompt, one token per step.
        assert q_lens[0] == batch["input_ids"].shape[1] and set(q_lens[1:]) == {1}
        q_lens.clear()
        uncached = model.generate(**batch, max_new_tokens=12, min_new_tokens=12, do_sample=False, use_cache=False,
                                  pad_token_id=tokenizer.pad_token_id)
        assert q_lens[-1] > q_lens[0]  # without a cache the whole sequence is fed again
    finally:
        hook.remove()
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("position_encoding", ["nope", "rope", "alibi"])
def test_left_padding_matches_unpadded(make_model, tokenizer, position_encoding):
    model = make_model(position_encoding=position_encoding, initializer_range=0.2)
    batch = _batch(tokenizer, PROMPTS)
    assert tokenizer.padding_side == "left"
    assert (batch["attention_mask"] == 0).any()  # the batch really is padded
    width = batch["input_ids"].shape[1]
    padded_logits = model(**batch, use_cache=False).logits
    # min_new_tokens: every row decodes all 10 steps (no row stops early at EOS)
    padded_gen = model.generate(**batch, max_new_tokens=10, min_new_tokens=10, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)[:, width:]
    for row, prompt in enumerate(PROMPTS):
        alone = tokenizer([prompt], return_tensors="pt")
        n = alone["input_ids"].shape[1]
        logits = model(**alone, use_cache=False).logits
        torch.testing.assert_close(padded_logits[row, width - n:], logits[0], atol=1e-5, rtol=1e-5)
        gen = model.generate(**alone, max_new_tokens=10, min_new_tokens=10, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)[0, n:]
        assert torch.equal(padded_gen[row], gen), (prompt, padded_gen[row], gen)


def test_rope_is_position_sensitive(make_model, tokenizer):
    """Guards the padding test: RoPE is active, so positions that are not consecutive (e.g. a padded
    row counted from the start of the padding plus a gap) change the logits. A constant shift does
    not (RoPE is relative), which is why left padding is harmless when positions come from the mask."""
    model = make_model(position_encoding="rope", initializer_range=0.2)
    ids = tokenizer(["4567890="], return_tensors="pt")["input_ids"]
    n = ids.shape[1]
    right = model(input_ids=ids, use_cache=False).logits
    shifted = model(input_ids=ids, position_ids=torch.arange(n)[None] + 5, use_cache=False).logits
    torch.testing.assert_close(shifted, right, atol=1e-5, rtol=1e-5)
    stretched = model(input_ids=ids, position_ids=torch.arange(n)[None] * 2, use_cache=False).logits
    assert not torch.allclose(stretched, right, atol=1e-3)
    nope = make_model(position_encoding="nope", initializer_range=0.2)
    assert not torch.allclose(nope(input_ids=ids).logits, right, atol=1e-3)


def test_alibi_mask_penalizes_distance():
    """Each head's bias is minus its slope times the distance to the key, -inf on future keys; after a
    cache the rows are the last queries'; a padded key is -inf whatever its distance."""
    slopes = alibi_slopes(4)
    torch.testing.assert_close(slopes, torch.tensor([2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8]))
    full = alibi_mask(None, 5, 0, 4, "cpu")
    assert full.shape == (1, 4, 5, 5)
    for h in range(4):
        for i in range(5):
            for j in range(5):
                expected = -slopes[h] * (i - j) if j <= i else float("-inf")
                assert full[0, h, i, j].item() == pytest.approx(expected)
    torch.testing.assert_close(alibi_mask(None, 2, 3, 4, "cpu"), full[:, :, 3:])
    padded = alibi_mask(torch.tensor([[0, 1, 1, 1, 1]]), 5, 0, 4, "cpu")
    assert torch.isinf(padded[0, :, 1:, 0]).all() and torch.equal(padded[0, :, 1:, 1:], full[0, :, 1:, 1:])


def test_alibi_changes_what_nope_computes(make_model, tokenizer):
    """The same weights (same seed, no position parameters) give other logits once ALiBi is on."""
    ids = tokenizer(["4567890="], return_tensors="pt")["input_ids"]
    nope = make_model(initializer_range=0.2)
    alibi = make_model(initializer_range=0.2, position_encoding="alibi")
    assert all(torch.equal(a, b) for a, b in zip(alibi.state_dict().values(), nope.state_dict().values()))
    assert not torch.allclose(alibi(input_ids=ids).logits, nope(input_ids=ids).logits, atol=1e-3)


def test_multi_token_step_with_cache(make_model, tokenizer):
    model = make_model(initializer_range=0.2)
    ids = tokenizer(["1234567="], return_tensors="pt")["input_ids"]
    full = model(input_ids=ids, use_cache=False).logits
    cache = DynamicCache(config=model.config)
    model(input_ids=ids[:, :5], cache=cache, use_cache=True)
    rest = model(input_ids=ids[:, 5:], cache=cache, use_cache=True).logits
    torch.testing.assert_close(rest, full[:, 5:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("position_encoding", ["nope", "rope", "alibi"])
def test_save_and_load_through_auto_classes(make_model, tmp_path, position_encoding):
    model = make_model(position_encoding=position_encoding, initializer_range=0.1)
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert "model.safetensors" in files and "config.json" in files
    assert "pytorch_model.bin" not in files

    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, SIConfig) and config.model_type == "si"
    assert config.position_encoding == position_encoding and config.hidden_size == 32

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, SIForCausalLM)
    original = model.state_dict()
    assert set(loaded.state_dict()) == set(original)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name

    base = AutoModel.from_pretrained(tmp_path)
    assert isinstance(base, SIModel)
    for name, tensor in base.state_dict().items():
        assert torch.equal(tensor, original[f"model.{name}"]), name

    if position_encoding == "rope":
        cfg = loaded.config
        expected = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float) / cfg.head_dim))
        torch.testing.assert_close(loaded.model.rotary_emb.inv_freq, expected)
    ids = torch.tensor([[1, 5, 6, 7, 8, 9, 17]])
    torch.testing.assert_close(loaded.eval()(input_ids=ids).logits, model(input_ids=ids).logits)


def test_tokenizer_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert "tokenizer.json" in os.listdir(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token) == ("<pad>", "<bos>", "<eos>")
    assert loaded.padding_side == "left"
    for text in ["12345=", "54321+789=", "4321*765=", "(876280)", "1>2#3:4,5-6"]:
        ids = tokenizer(text)["input_ids"]
        assert loaded(text)["input_ids"] == ids
        assert ids[0] == tokenizer.bos_token_id and len(ids) == len(text) + 1  # one character = one token
        assert loaded.decode(ids, skip_special_tokens=True) == text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    padded = loaded(["1=", "123="], padding=True)
    assert padded["input_ids"][0][:2] == [loaded.pad_token_id] * 2  # left padding survives the round trip


def test_tokenizer_alphabet_errors():
    with pytest.raises(ValueError, match="repeated"):
        si_hf.build_tokenizer("0123456789=1")
    small = si_hf.build_tokenizer("01=")
    assert len(small) == 4 + 3
