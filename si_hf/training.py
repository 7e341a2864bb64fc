"""One round of training through `transformers.Trainer` (AdamW, warmup-stable-decay)."""

import torch
from accelerate import PartialState
from torch.optim.swa_utils import AveragedModel
from transformers import Trainer, TrainerCallback, TrainingArguments

from .config import trainer_arguments
from .data import PromptMaskingCollator
from .distributed import fsdp_on_cpu, per_device_batch_size, uses_fsdp
from .errors import RecipeError
from .killpoints import trainer_callbacks
from .modeling import SIConfig, SIForCausalLM
from .tracking import TRACKED, reporters

# What the collator needs of a tokenized round; the Trainer's sampler reads `length` when grouping.
TRAIN_COLUMNS = ("input_ids", "prompt_len", "length")


def build_model(recipe, tokenizer):
    """Round 0's model: a new SIForCausalLM, or with `model_name_or_path` that pretrained model over the
    tokenizer's vocabulary (si_hf.pretrained)."""
    if recipe.model_name_or_path:
        from .pretrained import load_pretrained

        return load_pretrained(recipe, tokenizer)
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


class LengthSplitTrainer(Trainer):
    """A Trainer whose batches run as a few pieces of similar length (rows sorted by length, each piece
    padded only to its own longest row; see `PromptMaskingCollator(split_pieces=True)`).

    The batch is the one the sampler drew, and its loss is the same token mean: each piece's summed
    token loss is divided by the token count of the whole batch. Right padding under causal attention
    never changes the positions before it, so the gradient is the padded batch's gradient; only the
    padding that is computed shrinks.
    """

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        if fsdp_on_cpu(self.accelerator):  # FSDP launched on CPU processes (si_hf.distributed)
            self.is_fsdp_enabled = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pieces = inputs.pop("pieces", None)
        if pieces is None or len(pieces) == 1 or return_outputs or not self.model_accepts_loss_kwargs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        input_ids, labels = inputs["input_ids"], inputs["labels"]
        if num_items_in_batch is None:
            num_items_in_batch = labels[:, 1:].ne(-100).sum()
        loss = 0
        for start, end, width in pieces:
            piece = {"input_ids": input_ids[start:end, :width], "labels": labels[start:end, :width]}
            loss = loss + super().compute_loss(model, piece, num_items_in_batch=num_items_in_batch)
        return loss


class WeightAverage(TrainerCallback):
    """An exponential moving average of the weights, updated after every optimizer step and copied into
    the model when training ends (`ema_decay`).

    The decay after n updates is min(ema_decay, (1 + n) / (10 + n)), as diffusers' EMAModel warms it up:
    the average spans about the last tenth of a short training, and its first weights soon count for little."""

    def __init__(self, decay: float):
        self.decay = decay
        self.average = None

    def _update(self, averaged, current, num_averaged):
        decay = min(self.decay, (1 + int(num_averaged)) / (10 + int(num_averaged)))
        torch._foreach_lerp_(averaged, current, 1 - decay)  # as torch's own get_ema_multi_avg_fn does

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.average = AveragedModel(model, multi_avg_fn=self._update)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.average.update_parameters(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            for weight, averaged in zip(model.parameters(), self.average.module.parameters(), strict=True):
                weight.copy_(averaged)
        self.average = None


def make_trainer(model, tokenizer, train_dataset, recipe, round_idx: int, scratch_dir: str,
                 callbacks=()) -> Trainer:
    """A Trainer for round `round_idx`: round 0 uses the base schedule, later rounds the round schedule.
    tensorboard, trackio and wandb are left to the run's tracker (si_hf.tracking): one tracked run for all rounds."""
    if round_idx == 0:
        steps, warmup, decay = recipe.base_steps, recipe.base_warmup_steps, recipe.base_decay_steps
        lr = recipe.learning_rate
    else:
        steps, warmup, decay = recipe.round_steps, recipe.round_warmup_steps, recipe.round_decay_steps
        lr = recipe.round_learning_rate or recipe.learning_rate
    bf16 = use_bf16(recipe)
    args = TrainingArguments(
        output_dir=scratch_dir,
        max_steps=steps,
        # `batch_size` is the global batch: under `accelerate launch --num_processes N` each process takes
        # batch_size / N rows of every step (si_hf.distributed), so a step draws the same rows with any N.
        per_device_train_batch_size=per_device_batch_size(recipe.batch_size, PartialState().num_processes),
        learning_rate=lr,
        lr_scheduler_type="warmup_stable_decay",
        warmup_steps=warmup,
        lr_scheduler_kwargs={"num_decay_steps": decay, "min_lr_ratio": recipe.min_lr_ratio, "decay_type": "cosine"},
        optim="adamw_torch",
        bf16=bf16,
        # The Trainer runs bf16 autocast on the CPU only when told to stay there.
        use_cpu=bf16 and not torch.cuda.is_available(),
        save_strategy="no",
        report_to=[name for name in reporters(recipe.report_to) if name not in TRACKED] or "none",
        run_name=f"{recipe.task}-round-{round_idx}",
        seed=recipe.seed + round_idx,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if recipe.group_by_length else "random",
        length_column_name="length",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        **trainer_arguments(recipe),  # weight decay, Adam, clipping, logging, tqdm: as the recipe has them
    )
    if recipe.ema_decay is not None and uses_fsdp():
        raise RecipeError("ema_decay: the weight average is not supported under FSDP (its weights are sharded)")
    averaging = [WeightAverage(recipe.ema_decay)] if recipe.ema_decay is not None else []
    # Only the token columns travel to the collator: no per-row conversion of the text columns.
    train_dataset = train_dataset.select_columns([c for c in TRAIN_COLUMNS if c in train_dataset.column_names])
    return LengthSplitTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=PromptMaskingCollator(tokenizer.pad_token_id, split_pieces=True),
        callbacks=[*callbacks, *averaging, *trainer_callbacks(round_idx)],  # the latter: a test's kill hook, or none
    )
