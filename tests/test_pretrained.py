"""Pretrained start (model_name_or_path) and LoRA, with a tiny random Llama saved locally (no download)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import si_hf.rounds
from si_hf.config import Recipe, RecipeError
from si_hf.pretrained import load_pretrained, trainable_parameters, vocabulary_map
from si_hf.tasks import get_task
from si_hf.tokenization import task_tokenizer

# A "pretrained" vocabulary: specials, digits, a few symbols and words; the copy task's other
# characters (">", "#", ...) have no token in it and get fresh rows.
PRETRAINED_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "hello", "world", *"0123456789", "+", "=", "*", "-", "a", "b"]

SHRUNK = dict(base_steps=30, base_warmup_steps=5, base_decay_steps=10, round_steps=5, round_decay_steps=2,
              num_rounds=1, labels_per_round=32, eval_size=10, eval_max_level=5, label_batch_size=64,
              num_threads=1)  # tiny matrices: one thread is several times faster on a busy machine


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    vocab = {tok: i for i, tok in enumerate(PRETRAINED_TOKENS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="removed")
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            pad_token="<pad>").save_pretrained(path)
    config = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         unk_token_id=0, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_vocabulary_is_mapped_onto_the_pretrained_rows(pretrained_dir):
    tokenizer = task_tokenizer(get_task("copy"))
    recipe = Recipe(task="copy", model_name_or_path=str(pretrained_dir)).validate()
    model = load_pretrained(recipe, tokenizer)
    original = load_file(str(pretrained_dir / "model.safetensors"))
    chars = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    rows = vocabulary_map(tokenizer, PreTrainedTokenizerFast.from_pretrained(pretrained_dir), 40)
    expected = {"<pad>": 3, "<bos>": 1, "<eos>": 2, "<unk>": 0, "7": PRETRAINED_TOKENS.index("7"),
                "+": PRETRAINED_TOKENS.index("+"), ">": None, "#": None}
    for tok, row in expected.items():
        assert rows[chars.index(tok)] == row, tok
    assert model.config.vocab_size == len(tokenizer) == model.get_input_embeddings().weight.shape[0]
    assert model.lm_head.weight.shape[0] == len(tokenizer)
    assert (model.config.pad_token_id, model.config.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    for i, row in enumerate(rows):
        if row is not None:
            assert torch.equal(model.get_input_embeddings().weight[i], original["model.embed_tokens.weight"][row])
            assert torch.equal(model.lm_head.weight[i], original["lm_head.weight"][row])
    fresh = model.get_input_embeddings().weight[[chars.index(">"), chars.index("#")]]
    assert torch.isfinite(fresh).all() and not torch.equal(fresh[0], fresh[1])


def test_lora_needs_a_pretrained_start():
    with pytest.raises(RecipeError, match="lora_r"):
        Recipe(lora_r=4).validate()


@pytest.mark.slow
def test_pretrained_runs_full_and_lora(pretrained_dir, recipe_factory, run_rounds_main, monkeypatch):
    counts = {}  # run name -> (trainable, total, class) of the model each Trainer got, per round
    real_make_trainer = si_hf.rounds.make_trainer

    def spy(model, tokenizer, train_dataset, recipe, round_idx, scratch_dir, **kwargs):
        counts.setdefault(recipe.output_dir, []).append((*trainable_parameters(model), type(model).__name__))
        return real_make_trainer(model, tokenizer, train_dataset, recipe, round_idx, scratch_dir, **kwargs)

    monkeypatch.setattr(si_hf.rounds, "make_trainer", spy)
    original = load_file(str(pretrained_dir / "model.safetensors"))
    tokenizer = task_tokenizer(get_task("copy"))
    loaded = {}
    for name, extra in (("full", {}), ("lora", {"lora_r": 4, "lora_alpha": 8})):
        argv = recipe_factory(name=name, model_name_or_path=str(pretrained_dir), **SHRUNK, **extra)
        assert run_rounds_main(argv) == 0
        out = argv[-1]
        model = AutoModelForCausalLM.from_pretrained(f"{out}/round-1/model")
        assert isinstance(model, LlamaForCausalLM) and model.config.vocab_size == len(tokenizer)
        assert model.config.task == "copy"
        card = open(f"{out}/round-1/model/README.md").read()
        assert str(pretrained_dir) in card and ("LoRA r=4" in card) == (name == "lora")
        assert json.loads(open(f"{out}/round-1/eval.json").read())["train_steps"] == 5
        loaded[name] = model.state_dict()
    full = counts[next(k for k in counts if k.endswith("full"))]
    lora = counts[next(k for k in counts if k.endswith("lora"))]
    assert len(full) == len(lora) == 2  # rounds 0 and 1
    assert all(trainable == total and cls == "LlamaForCausalLM" for trainable, total, cls in full)
    for (trainable, total, cls), (full_trainable, _, _) in zip(lora, full):
        assert cls == "PeftModelForCausalLM" and 0 < trainable < full_trainable / 3
    # Full fine-tuning moves every weight; LoRA leaves the norms alone and merges its adapter into q_proj.
    norm, q = "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(loaded["full"][norm], original[norm])
    assert torch.equal(loaded["lora"][norm], original[norm])
    assert not torch.equal(loaded["lora"][q], original[q])

    # Resume the LoRA run for one more round: it continues from round 1's merged model with a new adapter.
    argv = recipe_factory(name="lora", model_name_or_path=str(pretrained_dir), **{**SHRUNK, "num_rounds": 2},
                          lora_r=4, lora_alpha=8)
    assert run_rounds_main(argv) == 0
    assert len(lora) == 3 and lora[-1][2] == "PeftModelForCausalLM"
    round2 = AutoModelForCausalLM.from_pretrained(f"{argv[-1]}/round-2/model").state_dict()
    assert torch.equal(round2[norm], original[norm]) and not torch.equal(round2[q], loaded["lora"][q])


def test_round_checkpoints_of_si_models_still_load_as_si(tmp_path, make_model):
    from si_hf import SIForCausalLM
    from si_hf.pretrained import load_round_model

    model = make_model()
    model.save_pretrained(tmp_path / "model")
    loaded = load_round_model(tmp_path / "model")
    assert type(loaded) is SIForCausalLM
    ids = torch.tensor([[1, 5, 6, 7]])
    assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
