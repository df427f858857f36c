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
