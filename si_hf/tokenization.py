"""Tokenizers built with `tokenizers`, saved as tokenizer.json (no custom code to load them).

By default one character is one token. A task may list multi-character tokens instead (the maze's
node labels "1".."99"): the pre-tokenizer then splits a text into the longest listed tokens.
"""

import re
from collections.abc import Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
# Every character the character tasks write; one character is one token.
DEFAULT_ALPHABET = "0123456789+-*=()>#:,"


def split_pattern(tokens: Sequence[str]) -> str:
    """The pre-tokenizer's regex: any single character when every token is one character, else the
    listed tokens longest first (a text not covered falls back to single characters, i.e. `<unk>`)."""
    if all(len(tok) == 1 for tok in tokens):
        return "."
    ordered = sorted(tokens, key=lambda tok: (-len(tok), tok))
    return "|".join(re.escape(tok) for tok in ordered) + "|."


def build_tokenizer(alphabet: str | Sequence[str] = DEFAULT_ALPHABET) -> PreTrainedTokenizerFast:
    """A tokenizer whose vocabulary is the special tokens, then `alphabet`: a string (each character
    one token) or a sequence of tokens. `<bos>` is prepended to every encoded text; `<eos>` ends answers."""
    tokens = list(alphabet)
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"alphabet has repeated tokens: {alphabet!r}")
    if any(not tok or tok in SPECIAL_TOKENS for tok in tokens):
        raise ValueError(f"alphabet tokens must be non-empty and not special tokens: {alphabet!r}")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tokens)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(split_pattern(tokens)), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],
    )


def task_tokenizer(task) -> PreTrainedTokenizerFast:
    """The tokenizer of a task: its `alphabet` when it sets one, else the shared character alphabet."""
    alphabet = getattr(task, "alphabet", None)
    return build_tokenizer(DEFAULT_ALPHABET if alphabet is None else alphabet)
