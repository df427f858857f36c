"""The toy world: generator, split, tokenizer, and the shipped models."""
from __future__ import annotations

import json
from fractions import Fraction

import torch

from experiments.toy.generator import LEVELS, generate_split, reduce_steps, held_out_problems
from experiments.toy.tokenizer import build_tokenizer, prompt_ids
from experiments.toy.train import toy_answer_value
from sampling.models import load_pair, resolve_model


def test_the_toy_train_dataset_has_distinct_problems() -> None:
    """Ids are the expression's hash: the train split skips repeated expressions (the stream repeats small level-1
    ones, the first at 299), so `--dataset toy-train` at its default 500 problems has 500 distinct ids."""
    from sampling.datasets import load_problems

    problems = load_problems("toy-train")
    assert len(problems) == 500 and len({p.id for p in problems}) == 500
    assert generate_split("train", 299) == generate_split("train", 500)[:299]


def test_generator_is_deterministic() -> None:
    assert generate_split("train", 200, seed=3) == generate_split("train", 200, seed=3)
    assert held_out_problems(50) == held_out_problems(50)
    assert generate_split("train", 50, seed=1) != generate_split("train", 50, seed=2)


def test_held_out_counts_are_prefixes_of_the_sampled_test_set() -> None:
    """`toy eval --problems n` and `toy problems --count n` show the problems a run with --problems n samples."""
    import pytest

    from experiments.toy.generator import HELD_OUT_SIZE
    from sampling.datasets import TOY_TEST_SIZE, load_problems

    full = held_out_problems(HELD_OUT_SIZE)
    assert TOY_TEST_SIZE == HELD_OUT_SIZE
    for n in (1, 7, 50, 200):
        assert held_out_problems(n) == full[:n]
    assert [p.id for p in load_problems("toy")] == [p.id for p in full]
    with pytest.raises(ValueError, match="has 500 problems"):
        held_out_problems(HELD_OUT_SIZE + 1)


def test_train_and_test_splits_are_disjoint() -> None:
    test = {p.expression for p in held_out_problems(500)}
    train = {p.expression for p in generate_split("train", 20000)}
    assert len(test) == 500
    assert not test & train


def test_levels_and_canonical_solutions() -> None:
    problems = held_out_problems(100)
    assert {p.level for p in problems} == set(LEVELS)
    for p in problems:
        n_ops = LEVELS[p.level][0]
        assert p.solution.count("\n=") + p.solution.startswith("=") == n_ops
        assert p.solution.endswith(f"\\boxed{{{p.answer}}}")
        assert p.prompt.startswith("Compute $") and p.prompt.endswith("$.\n")
    answers = [toy_answer_value(f"\\boxed{{{p.answer}}}") for p in generate_split("train", 2000)]
    assert any(a < 0 for a in answers) and any(a.denominator > 1 for a in answers)


def test_solution_follows_operator_precedence() -> None:
    steps = reduce_steps([Fraction(3, 4), Fraction(2), Fraction(5), Fraction(7)], ["+", "\\times", "-"])
    assert [values for values, _ in steps] == [[Fraction(3, 4), Fraction(10), Fraction(7)], [Fraction(43, 4), Fraction(7)], [Fraction(15, 4)]]


def test_answer_values_are_exact_rationals() -> None:
    assert toy_answer_value("=x\n\\boxed{\\frac{6}{4}}") == Fraction(3, 2)
    assert toy_answer_value("\\boxed{-\\frac{15}{4}}") == Fraction(-15, 4)
    assert toy_answer_value("\\boxed{-7}") == -7
    assert toy_answer_value("no box") is None


def test_tokenizer_round_trip_is_exact() -> None:
    tokenizer = build_tokenizer()
    texts = [p.prompt + p.solution for p in held_out_problems(30)] + ["  spaces  \n\n\\left( 3, \\frac{\\pi}{2} \\right)"]
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert len(ids) == len(text)
        assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in tokenizer.encode("".join(chr(c) for c in range(32, 127)), add_special_tokens=False)


def test_shipped_models_load_share_tokenizer_and_generate() -> None:
    pair = load_pair("toy:base", "toy:oracle")
    base_params, oracle_params = pair.manifest["base"]["n_params"], pair.manifest["oracle"]["n_params"]
    assert 5 <= oracle_params / base_params <= 10
    assert pair.base.config.model_type == "llama" == pair.oracle.config.model_type
    tokenizer = pair.tokenizer
    problem = held_out_problems(1)[0]
    ids = torch.tensor([prompt_ids(tokenizer, problem)])
    for model in (pair.base, pair.oracle):
        out = model.generate(ids, max_new_tokens=100, do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert text.startswith("=") and "\\boxed{" in text
    assert resolve_model("toy:base").endswith("base")


def test_eval_every_evaluates_and_checkpoints_at_its_own_steps(tmp_path) -> None:
    """--eval-every N evaluates (and with --checkpoints saves) at every multiple of N, not only at multiples of 50."""
    from dataclasses import replace

    from experiments.toy.train import SPECS, train_model

    lines: list[str] = []
    train_model(replace(SPECS["base"], steps=4), tmp_path / "base", threads=1, eval_every=2, eval_problems=3,
                checkpoints=True, log=lines.append)
    evaluated = [json.loads(line)["step"] for line in lines if "pass@1_t1" in line]
    assert evaluated == [2, 4]
    assert sorted(p.name for p in (tmp_path / "base" / "checkpoints").iterdir()) == ["step-2", "step-4"]


def test_toy_commands_check_their_output_paths_before_working(tmp_path) -> None:
    """An output path that is a folder is refused up front (not after the evaluation or training); a missing
    parent folder is created; --checkpoints without --eval-every is an error."""
    from typer.testing import CliRunner

    from experiments.cli import app

    result = CliRunner().invoke(app, ["toy", "eval", "--problems", "1", "--base-samples", "1", "--oracle-samples", "1",
                                      "--json", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output
    result = CliRunner().invoke(app, ["toy", "train-judge", str(tmp_path / "norun"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(app, ["toy", "train-judge", str(tmp_path / "norun"), "--out", str(tmp_path / "afile" / "h.st")])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    result = CliRunner().invoke(app, ["toy", "train-judge", str(tmp_path / "norun"), "--out", str(tmp_path / "d" / "h.st")])
    assert result.exit_code == 2 and not (tmp_path / "d").exists()  # nothing made for a command that failed
    result = CliRunner().invoke(app, ["toy", "train", "--model", "base", "--steps", "1", "--checkpoints",
                                      "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "give --eval-every N too" in result.output
    for where in (tmp_path / "afile", tmp_path / "afile" / "models"):  # refused before training, not after it
        result = CliRunner().invoke(app, ["toy", "train", "--model", "base", "--steps", "1", "--out", str(where)])
        assert result.exit_code == 2 and "afile is a file, not a folder" in result.output and "training" not in result.output
    out = tmp_path / "new" / "eval.json"
    result = CliRunner().invoke(app, ["toy", "eval", "--problems", "1", "--base-samples", "1", "--oracle-samples", "1",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())[0]["model"]


def test_a_model_fingerprint_follows_its_files_and_names_them_as_the_folder_does(tmp_path) -> None:
    """The sha256 a run records for a local model: read once per process, but a rewritten weight file gives another;
    a folder of symlinks (the hub cache's layout) hashes as the same files copied (names are the folder's own)."""
    import os
    import shutil

    from sampling.models import fingerprint

    shipped = resolve_model("toy:base")
    copy = tmp_path / "copy"
    shutil.copytree(shipped, copy)
    links = tmp_path / "links"
    links.mkdir()
    for file in copy.iterdir():
        (links / file.name).symlink_to(shutil.copy(file, tmp_path / f"blob-{file.name}"))
    assert fingerprint(str(copy)) == fingerprint(str(links)) == fingerprint(shipped)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    assert fingerprint(str(copy)) != fingerprint(shipped)


def test_saved_models_and_heads_are_readable_as_the_umask_allows(tmp_path) -> None:
    """safetensors writes its files 0600; a retrained model or judge head on shared storage must be readable by the
    other users' workers, as any file written under the umask (0644 under 022)."""
    import os

    import numpy as np
    from transformers import LlamaForCausalLM

    from experiments.toy.train import save_model
    from sampling.judge_head import save_head

    previous = os.umask(0o022)
    try:
        save_model(LlamaForCausalLM.from_pretrained(resolve_model("toy:base")), tmp_path / "model")
        save_head(tmp_path / "head.safetensors", np.zeros(4), 0.5)
    finally:
        os.umask(previous)
    for path in (tmp_path / "model" / "model.safetensors", tmp_path / "head.safetensors"):
        assert os.stat(path).st_mode & 0o777 == 0o644, path


def test_toy_eval_ratio_of_two_zeros_is_undefined_not_infinite() -> None:
    """`study toy eval` on undertrained models: 0/0 is n/a; only a base at 0 under an oracle above it is ∞."""
    from experiments.toy.cli import ratio_text

    assert ratio_text(0.5, 0.25) == "2.00"
    assert ratio_text(0.5, 0.0).startswith("∞")
    assert ratio_text(0.0, 0.0).startswith("n/a")
