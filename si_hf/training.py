"""One round of training through `transformers.Trainer` (AdamW, warmup-stable-decay)."""

import torch
from transformers import Trainer, TrainingArguments

from .data import PromptMaskingCollator
from .modeling import SIConfig, SIForCausalLM


def build_model(recipe, tokenizer) -> SIForCausalLM:
    config = SIConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads,
        position_encoding=recipe.position_encoding,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # Recorded so a checkpoint alone says which task and held-out sets it belongs to.
        task=recipe.task,
        eval_seed=recipe.seed,
    )
    return SIForCausalLM(config)


def use_bf16(recipe) -> bool:
    if recipe.bf16 is not None:
        return recipe.bf16
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def make_trainer(model, tokenizer, train_dataset, recipe, round_idx: int, scratch_dir: str) -> Trainer:
    """A Trainer for round `round_idx`: round 0 uses the base schedule, later rounds the round schedule."""
    if round_idx == 0:
        steps, warmup, decay, lr = recipe.base_steps, recipe.base_warmup_steps, recipe.base_decay_steps, recipe.learning_rate
    else:
        steps, warmup, decay = recipe.round_steps, recipe.round_warmup_steps, recipe.round_decay_steps
        lr = recipe.round_learning_rate or recipe.learning_rate
    args = TrainingArguments(
        output_dir=scratch_dir,
        max_steps=steps,
        per_device_train_batch_size=recipe.batch_size,
        learning_rate=lr,
        lr_scheduler_type="warmup_stable_decay",
        warmup_steps=warmup,
        lr_scheduler_kwargs={"num_decay_steps": decay, "min_lr_ratio": recipe.min_lr_ratio, "decay_type": "cosine"},
        optim="adamw_torch",
        weight_decay=recipe.weight_decay,
        adam_beta1=recipe.adam_beta1,
        adam_beta2=recipe.adam_beta2,
        adam_epsilon=recipe.adam_epsilon,
        max_grad_norm=recipe.max_grad_norm,
        bf16=use_bf16(recipe),
        logging_steps=recipe.logging_steps,
        save_strategy="no",
        report_to=recipe.report_to,
        run_name=f"{recipe.task}-round-{round_idx}",
        seed=recipe.seed + round_idx,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if recipe.group_by_length else "random",
        length_column_name="length",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=recipe.disable_tqdm,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=PromptMaskingCollator(tokenizer.pad_token_id),
    )
