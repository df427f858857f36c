"""Fixtures shared by the test modules: the shipped toy model pair and its prompts."""
from __future__ import annotations

from typing import Callable

import pytest

from experiments.toy.generator import held_out_problems
from experiments.toy.tokenizer import prompt_ids
from sampling.models import LoadedPair, load_pair


@pytest.fixture(scope="session")
def pair() -> LoadedPair:
    """The shipped toy base/oracle pair (loaded once per test session)."""
    return load_pair("toy:base", "toy:oracle")


@pytest.fixture(scope="session")
def toy_prompts(pair: LoadedPair) -> Callable[[int], list[tuple[int, ...]]]:
    """Prompt token ids (BOS + problem) of the first `count` held-out toy problems."""
    tok = pair.tokenizer

    def encode(count: int) -> list[tuple[int, ...]]:
        return [prompt_ids(tok, p) for p in held_out_problems(count)]

    return encode



PADDED_VOCAB = 128  # the toy tokenizer has 100 ids


@pytest.fixture(scope="session")
def padded_pair_dir(tmp_path_factory: pytest.TempPathFactory):
    """The toy pair with its (tied) embedding tables padded past the tokenizer, as Qwen2.5's are; the
    padding rows copy the newline token's, so that unmasked they take most of its probability.
    Returns the folder holding base/ and oracle/."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sampling.models import TOY_MODELS_DIR

    root = tmp_path_factory.mktemp("padded")
    for role in ("base", "oracle"):
        source = TOY_MODELS_DIR / role
        newline = AutoTokenizer.from_pretrained(source).convert_tokens_to_ids("\n")
        model = AutoModelForCausalLM.from_pretrained(source)
        rows = model.get_input_embeddings().weight.shape[0]
        model.resize_token_embeddings(PADDED_VOCAB, mean_resizing=False)
        with torch.no_grad():
            model.get_input_embeddings().weight[rows:] = model.get_input_embeddings().weight[newline]
        model.save_pretrained(root / role)
        for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            if (source / name).exists():
                shutil.copy(source / name, root / role / name)
    return root


@pytest.fixture(scope="session")
def two_eos_pair_dir(tmp_path_factory: pytest.TempPathFactory):
    """The toy pair whose generation_config lists a second end-of-sequence id, the newline (as Llama 3
    Instruct lists <|eot_id|> and <|eom_id|> besides the tokenizer's): every sample ends at its first line."""
    import json
    import shutil

    from sampling.models import TOY_MODELS_DIR

    root = tmp_path_factory.mktemp("two_eos")
    for role in ("base", "oracle"):
        shutil.copytree(TOY_MODELS_DIR / role, root / role)
        path = root / role / "generation_config.json"
        config = json.loads(path.read_text())
        path.write_text(json.dumps({**config, "eos_token_id": [config["eos_token_id"], 4]}))  # 4: "\n"
    return root
