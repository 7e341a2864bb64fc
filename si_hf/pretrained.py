"""Start from a pretrained causal LM instead of a new si-hf model, optionally training LoRA adapters.

The loop keeps its character tokenizer (si_hf.tokenization): prompts, labels, the collator, labeling,
confidence and evaluation all speak character ids. The pretrained model is made to speak them too:
its input embedding and output head are cut down to one row per character-tokenizer token, each row
gathered from the pretrained token that writes the same text (the special tokens from the pretrained
tokenizer's pad/bos/eos/unk). A token without a single-token match gets a fresh row (the mean of the
pretrained rows plus noise of their spread) and a warning. The result is the pretrained class itself
(e.g. LlamaForCausalLM) with `vocab_size` = the character vocabulary, so a round's checkpoint loads
with `AutoModelForCausalLM.from_pretrained` and the character tokenizer saved next to it.

With `lora_r > 0`, each round trains a fresh LoRA adapter (peft) on the previous round's weights,
plus the (small, task-specific) embedding and output rows, then merges it: every round's checkpoint
is a plain full model, and a resumed run continues exactly as an uninterrupted one.
"""

import logging
from contextlib import contextmanager

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

logger = logging.getLogger("si_hf")


def load_round_model(path):
    """A finished round's checkpoint: si-hf's own model or a pretrained architecture (Auto classes)."""
    return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False)


def vocabulary_map(char_tokenizer, pretrained_tokenizer, num_rows: int) -> list[int | None]:
    """For each character-tokenizer id: the pretrained id whose embedding row it takes, or None (a
    fresh row). Special tokens take the pretrained tokenizer's special of the same role; other tokens
    the pretrained token of the same text, or the single id that text encodes to. A pretrained id is
    used once (a later token that maps onto a used id gets a fresh row, so no two rows start equal)."""
    roles = {char_tokenizer.pad_token_id: "pad_token_id", char_tokenizer.bos_token_id: "bos_token_id",
             char_tokenizer.eos_token_id: "eos_token_id", char_tokenizer.unk_token_id: "unk_token_id"}
    unk = pretrained_tokenizer.unk_token_id
    used, rows = set(), []
    for i, token in enumerate(char_tokenizer.convert_ids_to_tokens(list(range(len(char_tokenizer))))):
        if i in roles:
            target = getattr(pretrained_tokenizer, roles[i], None)
        else:
            target = pretrained_tokenizer.convert_tokens_to_ids(token)
            if target is None or target == unk:
                ids = pretrained_tokenizer.encode(token, add_special_tokens=False)
                target = ids[0] if len(ids) == 1 and ids[0] != unk else None
        if target is not None and (not 0 <= target < num_rows or target in used):
            target = None
        if target is not None:
            used.add(target)
        rows.append(target)
    return rows


def _gather_rows(weight: torch.Tensor, rows: list[int | None], generator: torch.Generator) -> torch.Tensor:
    """weight[rows], with fresh rows (mean + per-dimension std x noise) where a row is None."""
    weight = weight.detach()
    known = torch.tensor([r if r is not None else 0 for r in rows], device=weight.device)
    new = weight.index_select(0, known).clone()
    fresh = [i for i, r in enumerate(rows) if r is None]
    if fresh:
        ref = weight.float()
        noise = torch.randn(len(fresh), weight.shape[1], generator=generator).to(weight.device)
        new[fresh] = (ref.mean(0) + noise * ref.std(0)).to(weight.dtype)
    return new


def shrink_vocabulary(model, rows: list[int | None], char_tokenizer, seed: int = 0):
    """Cuts the model's input embedding and output head (and its bias) down to `rows`, in place (the
    modules keep their classes, e.g. a scaled embedding), ties them again when they were tied, and
    sets the vocabulary size and the pad/bos/eos ids of the config and generation config."""
    generator = torch.Generator().manual_seed(seed)
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight
    emb.weight = torch.nn.Parameter(_gather_rows(emb.weight, rows, generator))
    emb.num_embeddings = len(rows)
    if getattr(emb, "padding_idx", None) is not None:
        emb.padding_idx = char_tokenizer.pad_token_id
    if head is not None:
        head.weight = emb.weight if tied else torch.nn.Parameter(_gather_rows(head.weight, rows, generator))
        if getattr(head, "bias", None) is not None:
            bias = head.bias.detach()
            head.bias = torch.nn.Parameter(torch.stack([bias[r] if r is not None else bias.mean() for r in rows]))
        if hasattr(head, "out_features"):
            head.out_features = len(rows)
    ids = {"vocab_size": len(rows), "pad_token_id": char_tokenizer.pad_token_id,
           "bos_token_id": char_tokenizer.bos_token_id, "eos_token_id": char_tokenizer.eos_token_id}
    for key, value in ids.items():
        setattr(model.config, key, value)
    if getattr(model, "generation_config", None) is not None:
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            setattr(model.generation_config, key, ids[key])
    return model


def load_pretrained(recipe, char_tokenizer):
    """`recipe.model_name_or_path` (a local directory or a Hub id) as a causal LM over the character
    vocabulary, in float32 (bf16 autocast is the Trainer's `bf16`). Safetensors weights are preferred."""
    name = recipe.model_name_or_path
    try:
        pretrained_tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise RuntimeError(f"cannot load the pretrained model model_name_or_path={name!r}: {err}") from err
    rows = vocabulary_map(char_tokenizer, pretrained_tokenizer, model.get_input_embeddings().weight.shape[0])
    fresh = [tok for tok, r in zip(char_tokenizer.convert_ids_to_tokens(list(range(len(rows)))), rows) if r is None]
    if fresh:
        logger.warning("%s: no single pretrained token for %s; these get fresh embedding rows", name,
                       " ".join(repr(t) for t in fresh))
    shrink_vocabulary(model, rows, char_tokenizer, seed=recipe.seed)
    # Recorded so a checkpoint alone says which task and held-out sets it belongs to (scripts/evaluate_round.py).
    model.config.task = recipe.task
    model.config.eval_seed = recipe.seed
    model.config.si_pretrained_from = name
    return model


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) tensors counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def lora_config(recipe):
    from peft import LoraConfig

    targets = recipe.lora_target_modules.strip()
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")


@contextmanager
def lora_adapter(model, recipe, seed: int):
    """The model to train: `model` itself, or (lora_r > 0) a peft model with a fresh adapter (seeded
    with `seed`) whose embedding and output rows also train; on exit the adapter is merged into
    `model` in place, which is again the plain model with every parameter trainable."""
    if not recipe.lora_r:
        yield model
        return
    try:
        from peft import get_peft_model
    except ImportError as err:
        raise RuntimeError("lora_r > 0 needs peft: pip install 'si-hf[lora]'") from err
    set_seed(seed)
    peft_model = get_peft_model(model, lora_config(recipe))
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            for p in module.parameters():
                p.requires_grad_(True)
    trainable, total = trainable_parameters(peft_model)
    logger.info("LoRA r=%d: %d of %d parameters train", recipe.lora_r, trainable, total)
    try:
        yield peft_model
    finally:
        # In place: the LoRA layers inside `model` become its plain layers again, with merged weights.
        peft_model.merge_and_unload()
        for p in model.parameters():
            p.requires_grad_(True)
