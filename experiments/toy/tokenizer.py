"""The toy world's character-level tokenizer, stored as an HF `tokenizer.json`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character plus newline, with pad/bos/eos/unk specials."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def prompt_ids(tokenizer: PreTrainedTokenizerFast, problem: Any) -> tuple[int, ...]:
    """Token ids of a toy problem's prompt as the models see it: `<bos>` then the prompt text."""
    return tuple([tokenizer.bos_token_id] + tokenizer.encode(problem.prompt, add_special_tokens=False))


def save_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    """Write tokenizer.json (+ HF config files) into `directory`."""
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(str(directory))
    return tokenizer
