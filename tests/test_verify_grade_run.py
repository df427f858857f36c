"""Grading run dirs: grades on disk, dedup cache, incremental re-runs, answer classes, no corruption,
clear errors, the counts table and the per-config summary."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import verify
import verify.run_grades as run_grades_module
from verify.equivalence import math_verify_equal
from verify.run_grades import GRADING_RULES, RunDirError, grade_run_with_stats, grades_dir, read_grades, read_sample_columns, sample_files
from verify.metrics import pass_at_k
from verify.synthetic import ProblemSpec, load_math500, make_samples, write_run_dir

FIXTURES = Path(__file__).parent / "fixtures"

PROBLEMS = [
    ProblemSpec("p-half", "\\frac{1}{2}", "", 1, "Algebra"),
    ProblemSpec("p-five", "5", "", 2, "Algebra"),
    ProblemSpec("p-pair", "(1,2)", "", 2, "Geometry"),
    ProblemSpec("p-name", "\\text{Evelyn}", "", 3, "Prealgebra"),
]

# (problem, text, expected correct, expected extracted)
TEXTS = [
    ("p-half", "We get $\\boxed{\\frac12}$.", True, "\\frac12"),
    ("p-half", "So $x = \\boxed{0.5}$", True, "0.5"),
    ("p-half", "Final Answer: The final answer is $1/2$. I hope it is correct.", True, "1/2"),
    ("p-half", "\\boxed{\\frac{1}{4}}", False, "\\frac{1}{4}"),
    ("p-half", "\\boxed{0.25}", False, "0.25"),
    ("p-half", "\\boxed{1/4}", False, "1/4"),
    ("p-half", "\\boxed{2}", False, "2"),
    ("p-half", "I am not sure, let me", False, None),
    ("p-five", "#### 5", True, "5"),
    ("p-five", "\\boxed{x = 5}", True, "x = 5"),
    ("p-five", "\\boxed{6}", False, "6"),
    ("p-five", "\\boxed{6.0}", False, "6.0"),
    ("p-five", "\\boxed{-5}", False, "-5"),
    ("p-pair", "\\boxed{(2,1)}", False, "(2,1)"),
    ("p-pair", "\\boxed{\\left( 1, 2 \\right)}", True, "\\left( 1, 2 \\right)"),
    ("p-pair", "\\boxed{(1,2", False, None),
    ("p-name", "It is \\boxed{Evelyn}.", True, "Evelyn"),
]


def _samples(config: str, rows: list[tuple[str, str, bool, str | None]], first_index: int = 0) -> pd.DataFrame:
    """A samples frame for one config; sample_index counts up per problem from first_index."""
    counters: dict[str, int] = {}
    records = []
    for problem, text, _, _ in rows:
        index = first_index + counters.get(problem, 0)
        counters[problem] = counters.get(problem, 0) + 1
        records.append({"config_id": config, "problem_id": problem, "sample_index": index, "text": text})
    frame = pd.DataFrame(records)
    frame["base_decode"] = np.arange(len(frame)) + 10
    frame["oracle_decode"] = np.arange(len(frame)) % 3
    return frame


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A two-config run dir with hand-written completions (several shards)."""
    samples = pd.concat([_samples("base", TEXTS), _samples("guided", TEXTS[::-1])], ignore_index=True)
    return write_run_dir(tmp_path / "run", PROBLEMS, samples, shard_rows=7)


def _parts(run: Path, grader: str = "math-verify") -> list[Path]:
    """Visible grade part files."""
    return sorted(p for p in grades_dir(run, grader).glob("*.parquet") if not p.name.startswith("."))


def test_grades_written_with_expected_values(run_dir: Path) -> None:
    """Every sample gets a grade row with the ARCHITECTURE schema and the right verdict."""
    grades = verify.grade_run(run_dir, progress=False)
    assert list(grades.columns) == ["config_id", "problem_id", "sample_index", "extracted", "correct", "answer_class"]
    assert len(grades) == 2 * len(TEXTS)
    table = pq.read_table(_parts(run_dir)[0])
    assert str(table.schema.field("sample_index").type) == "int32"
    assert str(table.schema.field("answer_class").type) == "int32"
    base = grades[grades.config_id == "base"].set_index(["problem_id", "sample_index"])
    counters: dict[str, int] = {}
    for problem, _, correct, extracted in TEXTS:
        index = counters.get(problem, 0)
        counters[problem] = index + 1
        row = base.loc[(problem, index)]
        assert bool(row["correct"]) is correct, (problem, index)
        assert (row["extracted"] if isinstance(row["extracted"], str) else None) == extracted
    assert pd.read_parquet(run_dir).shape[0] == 2 * len(TEXTS)  # the samples table is still read alone


def _interrupt_on_call(monkeypatch: pytest.MonkeyPatch, name: str, nth: int) -> None:
    """Make run_grades' function `name` raise KeyboardInterrupt (Ctrl-C) on its nth call."""
    real = getattr(run_grades_module, name)
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run_grades_module, name, interrupted)


def test_chunked_grading_equals_one_chunk_and_an_interrupt_keeps_finished_chunks(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Grading shard by shard in small chunks (bounded memory) gives the same grades and answer classes as one
    chunk; Ctrl-C in the second chunk keeps the first chunk's grades, and a re-run grades only the rest."""
    import shutil

    whole = verify.grade_run(run_dir, progress=False)
    assert len(_parts(run_dir)) == 1
    chunked_run = tmp_path / "chunked"
    shutil.copytree(run_dir, chunked_run, ignore=shutil.ignore_patterns("_grades"))
    monkeypatch.setattr(run_grades_module, "CHUNK_SAMPLES", 7)  # the fixture's shards hold 7 rows each
    _interrupt_on_call(monkeypatch, "grade_batch", 2)
    with pytest.raises(run_grades_module.GradingInterrupted) as interrupted:
        verify.grade_run(chunked_run, progress=False)
    assert interrupted.value.graded == 7 and len(read_grades(chunked_run)) == 7
    monkeypatch.undo()
    monkeypatch.setattr(run_grades_module, "CHUNK_SAMPLES", 7)
    chunked, stats = grade_run_with_stats(chunked_run, progress=False)
    assert stats.already_graded == 7 and stats.newly_graded == len(whole) - 7
    assert len(_parts(chunked_run)) == len(run_grades_module.sample_files(chunked_run)) == 6  # a part per chunk
    pd.testing.assert_frame_equal(whole, chunked)


def test_answer_classes(run_dir: Path) -> None:
    """0 = correct, -1 = no answer; equivalent wrong answers share a class, the same in every config."""
    grades = verify.grade_run(run_dir, progress=False)
    by_answer = grades.groupby(["problem_id", "extracted"], dropna=False)["answer_class"].agg(set)
    cls = lambda p, a: by_answer.loc[(p, a)]  # noqa: E731
    assert all(c == {0} for c in grades[grades.correct].groupby("extracted")["answer_class"].agg(set))
    assert set(grades.loc[grades.extracted.isna(), "answer_class"]) == {-1}
    quarter = cls("p-half", "\\frac{1}{4}")
    assert len(quarter) == 1 and quarter == cls("p-half", "0.25") == cls("p-half", "1/4")  # one vote
    assert next(iter(quarter)) >= 1 and cls("p-half", "2") != quarter
    assert cls("p-five", "6") == cls("p-five", "6.0") != cls("p-five", "-5")
    for (problem, answer), classes in by_answer.items():
        assert len(classes) == 1, (problem, answer)  # base and guided agree


def test_rerun_costs_nothing(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second run grades nothing, reads no texts, writes no file, and returns the same grades."""
    first = verify.grade_run(run_dir, progress=False)
    files = {p: p.stat().st_mtime_ns for p in (run_dir / "_grades").rglob("*") if p.is_file()}

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-run graded something")

    monkeypatch.setattr(run_grades_module, "grade_batch", forbidden)
    second, stats = grade_run_with_stats(run_dir, progress=False)
    assert stats.newly_graded == 0 and stats.already_graded == len(first)
    pd.testing.assert_frame_equal(first, second)
    assert files == {p: p.stat().st_mtime_ns for p in (run_dir / "_grades").rglob("*") if p.is_file()}


def test_new_shards_are_graded_incrementally(run_dir: Path) -> None:
    """Samples appended later are graded alone; seen answers reuse the cache and keep their class."""
    first = verify.grade_run(run_dir, progress=False)
    quarter_class = first.loc[first.extracted == "0.25", "answer_class"].iloc[0]
    extra = [
        ("p-half", "\\boxed{0.25}", False, "0.25"),  # seen: cache hit, same class
        ("p-half", "\\boxed{\\frac{7}{9}}", False, "\\frac{7}{9}"),  # new wrong answer: new class
        ("p-five", "\\boxed{5}", True, "5"),  # seen ("#### 5"): cache hit
    ]
    write_run_dir(run_dir, PROBLEMS, _samples("base", extra, first_index=100))
    grades, stats = grade_run_with_stats(run_dir, progress=False)
    assert stats.newly_graded == 3 and stats.already_graded == len(first)
    assert stats.batch is not None and (stats.batch.pairs, stats.batch.cached, stats.batch.fast) == (3, 2, 1)
    assert len(grades) == len(first) + 3
    new = grades[grades.sample_index >= 100].set_index("extracted")
    assert new.loc["0.25", "answer_class"] == quarter_class
    seen_classes = set(first.loc[first.problem_id == "p-half", "answer_class"])
    assert new.loc["\\frac{7}{9}", "answer_class"] == max(seen_classes) + 1
    assert new.loc["5", "answer_class"] == 0
    assert len(_parts(run_dir)) == 2


def test_cache_alone_regrades_without_math_verify(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With grades deleted but the pair cache kept, regrading never starts math-verify."""
    first = verify.grade_run(run_dir, progress=False)
    for part in _parts(run_dir):
        part.unlink()

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("math-verify was called")

    monkeypatch.setattr("verify.pool.TaskPool.map", no_pool)
    second, stats = grade_run_with_stats(run_dir, progress=False)
    assert stats.batch is not None and stats.batch.cached == stats.batch.pairs > 0
    pd.testing.assert_frame_equal(first, second)


def test_deleted_class_registry_regrades_so_vote_classes_stay_consistent(tmp_path: Path) -> None:
    """With _grades/_cache deleted, new wrong answers must not reuse the class numbers of old ones: the
    run is graded again whole (maj@n of 5,5,7 then 8,8 is a 2-2 tie between 5 and 8, not 8 merged with 7)."""
    from verify.tables import summarize_grades

    problems = [ProblemSpec("p", "5", "", 1, "Algebra")]
    first = pd.DataFrame({"config_id": "c", "problem_id": "p", "sample_index": [0, 1, 2],
                          "text": ["\\boxed{5}", "\\boxed{5}", "\\boxed{7}"]})
    run = write_run_dir(tmp_path / "run", problems, first)
    verify.grade_run(run, progress=False)
    import shutil

    shutil.rmtree(run / "_grades" / "_cache")
    more = pd.DataFrame({"config_id": "c", "problem_id": "p", "sample_index": [3, 4],
                         "text": ["\\boxed{8}", "\\boxed{8}"]})
    more.to_parquet(run / "samples" / "more.parquet")
    grades, stats = grade_run_with_stats(run, progress=False)
    assert stats.newly_graded == 5 and len(_parts(run)) == 1
    classes = dict(zip(grades["sample_index"], grades["answer_class"]))
    assert classes[0] == classes[1] == 0 and classes[3] == classes[4] != classes[2] != 0
    summary = summarize_grades(grades)
    assert summary.loc[summary["config"] == "c", "maj@n"].iloc[0] == pytest.approx(0.5)


def test_changed_reference_answers_are_refused_until_regraded(tmp_path: Path) -> None:
    """A problems file rewritten with another answer: the stored grades were made against the old one, so
    grading (adding samples or not) is refused with the problem named; --regrade grades against the new one."""
    first = pd.DataFrame({"config_id": "c", "problem_id": ["p", "p", "q"], "sample_index": [0, 1, 0],
                          "text": ["\\boxed{3}", "\\boxed{2}", "\\boxed{1}"]})
    run = write_run_dir(tmp_path / "run", [ProblemSpec("p", "3", "", 1, "Algebra"), ProblemSpec("q", "1", "", 1, "Algebra")], first)
    verify.grade_run(run, progress=False)
    write_run_dir(run, [ProblemSpec("p", "2", "", 1, "Algebra"), ProblemSpec("q", "1", "", 1, "Algebra")], first.iloc[:0])
    before = sorted(p.read_bytes() for p in _parts(run))
    with pytest.raises(RunDirError, match=r"problem\(s\) 'p' differs.*--regrade"):
        verify.grade_run(run, progress=False)
    assert sorted(p.read_bytes() for p in _parts(run)) == before  # nothing written
    grades = verify.grade_run(run, progress=False, regrade=True)
    assert dict(zip(zip(grades["problem_id"], grades["sample_index"]), grades["correct"])) == {
        ("p", 0): False, ("p", 1): True, ("q", 0): True}
    assert len(verify.grade_run(run, progress=False)) == 3  # graded against today's answers: accepted again


def test_grades_from_older_grading_rules_are_refused_until_regraded(tmp_path: Path) -> None:
    """A run graded by an older study (its cache files carry no grading-rules record, as before rules 2): adding
    to its grades is refused, naming the rules and --regrade; the regrade ignores the old pair cache's verdicts."""
    samples = pd.DataFrame({"config_id": "c", "problem_id": "p", "sample_index": [0, 1],
                            "text": ["Answer: 6. Each of the 3 people shakes hands with 2 others.", "\\boxed{8 000}"]})
    run = write_run_dir(tmp_path / "run", [ProblemSpec("p", "2", "", 1, "Algebra")], samples)
    assert verify.grade_run(run, progress=False)["correct"].tolist() == [False, False]
    cache = run / "_grades" / "_cache"
    for kind in ("pairs", "references"):  # as an older study wrote them: no rules in the metadata
        table = pq.read_table(cache / f"math-verify.{kind}.parquet")
        if kind == "pairs":  # and a verdict the old rules gave
            table = table.set_column(2, "correct", pa.array([True] * len(table)))
        pq.write_table(table.replace_schema_metadata({}), cache / f"math-verify.{kind}.parquet")
    before = sorted(p.read_bytes() for p in _parts(run))
    with pytest.raises(RunDirError, match=rf"grading rules 1.*rules {GRADING_RULES}.*--regrade"):
        verify.grade_run(run, progress=False)
    assert sorted(p.read_bytes() for p in _parts(run)) == before  # nothing written
    assert verify.grade_run(run, progress=False, regrade=True)["correct"].tolist() == [False, False]
    assert len(verify.grade_run(run, progress=False)) == 2  # graded under today's rules: accepted again
    (cache / "math-verify.references.parquet").unlink()  # removed by hand: the message does not blame the rules
    with pytest.raises(RunDirError, match=r"no record of their grading rules .* or _grades/_cache/math-verify.references"
                                          r".parquet was removed\); run `study verify .* --regrade`"):
        verify.grade_run(run, progress=False)


def test_interrupted_regrade_never_leaves_stale_grades_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A regrade after a reference changed, killed after writing its grades but before removing the old parts
    or recording the new references: the new grades count (the newest part wins), and until a regrade
    completes, grading is still refused (it never accepts the stale grades)."""
    samples = pd.DataFrame({"config_id": "c", "problem_id": "p", "sample_index": [0, 1],
                            "text": ["\\boxed{3}", "\\boxed{2}"]})
    run = write_run_dir(tmp_path / "run", [ProblemSpec("p", "3", "", 1, "Algebra")], samples)
    verify.grade_run(run, progress=False)
    write_run_dir(run, [ProblemSpec("p", "2", "", 1, "Algebra")], samples.iloc[:0])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    real_unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda self, *a, **k: killed() if self.name.startswith("part-") else real_unlink(self, *a, **k))
    with pytest.raises(run_grades_module.GradingInterrupted) as interrupted:  # what the CLI reports: a regrade unfinished
        verify.grade_run(run, progress=False, regrade=True)
    assert interrupted.value.regrade and interrupted.value.graded == 2
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert len(_parts(run)) == 2 and read_grades(run)["correct"].tolist() == [False, True]
    with pytest.raises(RunDirError, match="--regrade"):
        verify.grade_run(run, progress=False)
    monkeypatch.setattr(run_grades_module, "_save_references", killed)
    with pytest.raises(KeyboardInterrupt):
        verify.grade_run(run, progress=False, regrade=True)
    monkeypatch.undo()
    with pytest.raises(RunDirError, match="--regrade"):
        verify.grade_run(run, progress=False)
    assert verify.grade_run(run, progress=False, regrade=True)["correct"].tolist() == [False, True]
    assert len(_parts(run)) == 1 and verify.grade_run(run, progress=False)["correct"].tolist() == [False, True]


def test_interrupted_write_never_corrupts(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash while writing grades leaves earlier grades intact and no visible partial file."""
    verify.grade_run(run_dir, progress=False)
    before = {p: p.read_bytes() for p in _parts(run_dir)}
    write_run_dir(run_dir, PROBLEMS, _samples("base", TEXTS[:2], first_index=50))
    real_write = pq.write_table

    def failing_write(table: object, where: object, *args: object, **kwargs: object) -> None:
        if "grader=" in str(where):
            real_write(table, where, *args, **kwargs)  # a partial file appears, then the "crash"
            raise OSError("disk full")
        real_write(table, where, *args, **kwargs)

    monkeypatch.setattr(run_grades_module.pq, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        verify.grade_run(run_dir, progress=False)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in _parts(run_dir)} == before
    assert not [p for p in grades_dir(run_dir, "math-verify").iterdir() if p.name.startswith(".")]
    assert len(read_grades(run_dir)) == 2 * len(TEXTS)
    grades, stats = grade_run_with_stats(run_dir, progress=False)
    assert stats.newly_graded == 2 and len(grades) == 2 * len(TEXTS) + 2


def test_strict_grader_is_separate(run_dir: Path) -> None:
    """--grader strict writes its own grades; MATH's is_equiv rejects what math-verify accepts here."""
    mv = verify.grade_run(run_dir, progress=False)
    strict = verify.grade_run(run_dir, grader="strict", progress=False)
    assert len(_parts(run_dir, "strict")) == 1 and len(_parts(run_dir)) == 1
    merged = mv.merge(strict, on=["config_id", "problem_id", "sample_index"], suffixes=("_mv", "_strict"))
    disagree = merged[merged.correct_mv != merged.correct_strict]
    assert set(disagree["extracted_mv"]) == {"Evelyn"}  # MATH's is_equiv keeps \\text{}
    assert pd.read_parquet(run_dir / "_grades")["grader"].astype(str).value_counts().to_dict() == {
        "math-verify": len(mv),
        "strict": len(strict),
    }


def test_counts_table(run_dir: Path) -> None:
    """One row per (config, problem) with n, correct, no_answer, level, subject and token sums."""
    counts = verify.counts_table(run_dir)
    assert list(counts.columns) == [
        "config", "problem", "n", "correct", "no_answer", "level", "subject",
        "base_decode", "base_prefill", "oracle_decode", "oracle_prefill", "seconds",
    ]
    assert counts["seconds"].isna().all()  # these shards were written without the engine's timing
    row = counts.set_index(["config", "problem"]).loc[("base", "p-half")]
    assert (row["n"], row["correct"], row["no_answer"]) == (8, 3, 1)
    assert (row["level"], row["subject"]) == (1, "Algebra")
    samples = pd.read_parquet(run_dir)
    expected = samples.groupby(["config_id", "problem_id"])["base_decode"].sum()
    assert row["base_decode"] == expected.loc[("base", "p-half")]
    assert counts["n"].sum() == 2 * len(TEXTS)
    assert counts["correct"].sum() == 2 * sum(t[2] for t in TEXTS)


def _time_shard(path: Path, seconds: float) -> None:
    """Rewrite a shard with the engine seconds `study sample` records in its metadata."""
    from sampling.store import SECONDS_KEY

    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), SECONDS_KEY: repr(seconds).encode()}), path)


def test_counts_table_sums_measured_seconds(run_dir: Path) -> None:
    """Each sample carries its shard's seconds / rows; a (config, problem) with any untimed sample is NaN."""
    expected: dict[str, float] = {}
    for i, shard in enumerate(sorted((run_dir / "samples" / "base").glob("*.parquet"))):
        _time_shard(shard, 1.0 + i)
        problems = pq.read_table(shard, columns=["problem_id"]).column("problem_id").to_pylist()
        for problem in problems:
            expected[problem] = expected.get(problem, 0.0) + (1.0 + i) / len(problems)
    counts = verify.counts_table(run_dir).set_index(["config", "problem"])
    assert counts.loc["base"]["seconds"].to_dict() == pytest.approx(expected)
    assert counts.loc["guided"]["seconds"].isna().all()
    write_run_dir(run_dir, PROBLEMS, _samples("base", TEXTS[:2], first_index=50))  # an untimed shard joins
    again = verify.counts_table(run_dir).set_index(["config", "problem"]).loc["base"]["seconds"]
    assert np.isnan(again["p-half"]) and again.drop(index="p-half").to_dict() == pytest.approx(
        {k: v for k, v in expected.items() if k != "p-half"})


def test_counts_without_the_per_sample_merge_equal_the_merged_ones(run_dir: Path) -> None:
    """grades_and_counts skips the merge of tokens onto grades when both cover the same samples: same table."""
    from verify.run_grades import read_problems
    from verify.tables import counts_from_grades, grades_and_counts

    _time_shard(sorted((run_dir / "samples" / "base").glob("*.parquet"))[0], 2.0)
    grades, counts = grades_and_counts(run_dir, progress=False)
    tokens = read_sample_columns(sample_files(run_dir), ["config_id", "problem_id", "sample_index", "base_decode"])
    tokens = tokens.drop(columns="_shard").sample(frac=1.0, random_state=0)  # another order than the grades
    assert len(tokens) == len(grades)
    merged = counts_from_grades(grades, read_problems(run_dir), tokens)
    pd.testing.assert_frame_equal(counts_from_grades(grades, read_problems(run_dir), tokens, same_samples=True), merged)
    pd.testing.assert_frame_equal(counts[merged.columns], merged)


def test_summarize_run(run_dir: Path) -> None:
    """pass@1, coverage@n, maj@n (with CIs), no-answer fraction and distinct answers per config."""
    summary = verify.summarize_run(run_dir).set_index("config")
    assert list(summary.index) == ["base", "guided"]
    base = summary.loc["base"]
    assert base["pass@1"] == pytest.approx(np.mean([3 / 8, 2 / 5, 1 / 3, 1]))
    assert base["coverage@n"] == 1.0
    # maj@n: p-half votes {correct: 3, 1/4: 3, 2: 1} -> tie 1/2; p-five {correct: 2, 6: 2, -5: 1} -> 1/2;
    # p-pair {correct: 1, (2,1): 1} -> 1/2; p-name {correct: 1} -> 1
    assert base["maj@n"] == pytest.approx(0.625)
    assert base["no_answer"] == pytest.approx(2 / 17)
    assert base["distinct_answers"] == pytest.approx(np.mean([3, 3, 2, 1]))
    for metric in ("pass@1", "coverage@n", "maj@n"):
        assert base[f"{metric}_lo"] <= base[metric] <= base[f"{metric}_hi"]
    pd.testing.assert_series_equal(summary.loc["base"], summary.loc["guided"], check_names=False)


def test_realistic_run_matches_per_sample_math_verify(tmp_path: Path) -> None:
    """On synthetic MATH-500 samples, every verdict equals math-verify called on that sample's answer."""
    problems = load_math500(FIXTURES / "math500.jsonl")[:12]
    samples = make_samples(problems, 40, seed=7, junk_rate=0.05)
    run = write_run_dir(tmp_path / "real", problems, samples, shard_rows=100)
    grades = verify.grade_run(run, progress=False)
    answers = {p.id: p.answer for p in problems}
    merged = grades.merge(samples, on=["config_id", "problem_id", "sample_index"])
    verdicts: dict[tuple[str, str], bool] = {}
    for problem, extracted, correct in zip(merged.problem_id, merged.extracted, merged.correct):
        if not isinstance(extracted, str):
            assert not correct
            continue
        key = (answers[problem], extracted)
        if key not in verdicts:
            verdicts[key] = math_verify_equal(*key, timeout=10)
        assert correct == verdicts[key], key
    counts = verify.counts_table(run)
    assert counts["n"].eq(40).all()
    np.testing.assert_allclose(
        verify.summarize_run(run)["pass@1"].item(), pass_at_k(counts.n, counts.correct, 1).mean()
    )


def test_a_run_dir_with_another_tools_manifest_is_graded(tmp_path: Path) -> None:
    """The record of graded config definitions reads the manifest when study wrote it; a manifest without study's
    tables (another tool's) is no reason to refuse grading."""
    run = write_run_dir(tmp_path / "r", PROBLEMS, _samples("base", TEXTS[:3]))
    (run / "_manifest.json").write_text('{"tool": "elsewhere"}')
    assert len(verify.grade_run(run, progress=False)) == 3


def test_bad_run_dirs_give_clear_errors(tmp_path: Path) -> None:
    """Missing problems file, missing samples, unknown problem ids, missing columns: named in the error."""
    with pytest.raises(RunDirError, match="nope does not exist"):  # as `study status` and `study fit` say it
        verify.grade_run(tmp_path / "nope", progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="file: not a directory"):
        verify.grade_run(tmp_path / "file", progress=False)
    run = write_run_dir(tmp_path / "r", PROBLEMS, _samples("base", TEXTS[:3]))
    (run / "_problems.parquet").unlink()
    with pytest.raises(RunDirError, match="_problems.parquet"):
        verify.grade_run(run, progress=False)
    run2 = write_run_dir(tmp_path / "r2", PROBLEMS[:1], _samples("base", TEXTS[8:9]))
    with pytest.raises(RunDirError, match="p-five"):
        verify.grade_run(run2, progress=False)
    no_samples = pd.DataFrame(columns=["config_id", "problem_id", "sample_index", "text"])
    empty = write_run_dir(tmp_path / "r3", PROBLEMS, no_samples)
    with pytest.raises(RunDirError, match="no samples shards"):
        verify.grade_run(empty, progress=False)
    run4 = write_run_dir(tmp_path / "r4", PROBLEMS, _samples("base", TEXTS[:3]))
    shard = next((run4 / "samples").rglob("*.parquet"))
    pq.write_table(pq.read_table(shard).drop(["text"]), shard)
    with pytest.raises(RunDirError, match="missing column.*text"):
        verify.grade_run(run4, progress=False)


def test_sample_keys_compare_exactly_as_integers() -> None:
    """Keys are compared as one int64 each: equal keys get equal codes across frames, different keys different ones."""
    from verify.run_grades import _key_codes

    rng = np.random.default_rng(0)
    a = pd.DataFrame({"config_id": rng.choice(["base", "random-c1-k2", "oracle"], 500),
                      "problem_id": rng.choice([f"p{i}" for i in range(40)] + ["test/algebra/1.json"], 500),
                      "sample_index": rng.integers(-3, 60, 500).astype(np.int32)})
    b = a.sample(frac=1.0, random_state=1).assign(config_id=lambda f: f["config_id"].where(f.index % 5 > 0, "margin"))
    code_a, code_b = _key_codes(a, b)
    as_tuples = lambda f: list(zip(f["config_id"], f["problem_id"], f["sample_index"]))  # noqa: E731
    expected = {t: i for i, t in enumerate(dict.fromkeys(as_tuples(a) + as_tuples(b)))}
    pairs = set(zip([expected[t] for t in as_tuples(a) + as_tuples(b)], np.concatenate([code_a, code_b]).tolist()))
    assert len(pairs) == len(expected) == len({c for _, c in pairs})  # a bijection between keys and codes


def test_a_sample_in_two_shards_is_graded_once_from_the_first(tmp_path: Path) -> None:
    """A key written twice (two shards) is one sample: graded once, with the first shard's text."""
    problems = [ProblemSpec("p", "5", "", 1, "Algebra")]
    samples = pd.DataFrame({"config_id": "c", "problem_id": "p", "sample_index": [0, 1], "text": ["\\boxed{5}", "\\boxed{6}"]})
    run = write_run_dir(tmp_path / "run", problems, samples)
    again = samples.assign(text=["\\boxed{6}", "\\boxed{5}"])
    again.to_parquet(run / "samples" / "c" / "zz-again.parquet")
    grades = verify.grade_run(run, progress=False)
    assert grades["correct"].tolist() == [True, False]
    assert len(verify.grade_run(run, progress=False)) == 2


def test_an_interrupted_forced_regrade_is_refused_until_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The class registry deleted, so the next call regrades everything; Ctrl-C after its first chunk (which
    rewrote the registry) must not let the old parts' class numbers mix with the new ones: plain calls are
    refused until a regrade finishes, and then every answer has one class across configs."""
    problems = [ProblemSpec("p", "1", "", 1, "Algebra")]
    first = pd.DataFrame({"config_id": "b", "problem_id": "p", "sample_index": [0, 1, 2],
                          "text": ["\\boxed{9}", "\\boxed{9}", "\\boxed{7}"]})
    run = write_run_dir(tmp_path / "run", problems, first)
    verify.grade_run(run, progress=False)
    more = pd.DataFrame({"config_id": "a", "problem_id": "p", "sample_index": [0, 1, 2],
                         "text": ["\\boxed{7}", "\\boxed{7}", "\\boxed{9}"]})
    write_run_dir(run, problems, more)
    verify.grade_run(run, progress=False)
    (run / "_grades" / "_cache" / "math-verify.classes.parquet").unlink()
    monkeypatch.setattr(run_grades_module, "CHUNK_SAMPLES", 3)
    _interrupt_on_call(monkeypatch, "grade_batch", 2)
    with pytest.raises(run_grades_module.GradingInterrupted) as interrupted:
        verify.grade_run(run, progress=False)
    assert interrupted.value.regrade
    monkeypatch.undo()
    with pytest.raises(RunDirError, match="regrade of its math-verify grades was interrupted.*--regrade"):
        verify.grade_run(run, progress=False)
    grades = verify.grade_run(run, progress=False, regrade=True)
    classes = grades.groupby("extracted")["answer_class"].nunique()
    assert (classes == 1).all() and grades.groupby("answer_class")["extracted"].nunique().max() == 1
    assert len(verify.grade_run(run, progress=False)) == 6  # finished: plain calls accepted again


def test_an_interrupt_before_a_chunks_references_are_recorded_never_accepts_stale_grades(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the second chunk records its references: its grades must not be accepted after the problem's
    reference changes (the references are recorded before the grades that use them)."""
    problems = [ProblemSpec("p", "1", "", 1, "Algebra"), ProblemSpec("q", "3", "", 1, "Algebra")]
    samples = pd.DataFrame({"config_id": "c", "problem_id": ["p", "q"], "sample_index": [0, 0],
                            "text": ["\\boxed{1}", "\\boxed{3}"]})
    run = write_run_dir(tmp_path / "run", problems, samples, shard_rows=1)
    monkeypatch.setattr(run_grades_module, "CHUNK_SAMPLES", 1)
    _interrupt_on_call(monkeypatch, "_save_references", 2)
    with pytest.raises(KeyboardInterrupt):
        verify.grade_run(run, progress=False)
    monkeypatch.undo()
    write_run_dir(run, [problems[0], ProblemSpec("q", "4", "", 1, "Algebra")], samples.iloc[:0])
    try:
        grades = verify.grade_run(run, progress=False)
    except RunDirError as exc:
        assert "'q' differs" in str(exc)
    else:  # q was never graded against 3: graded now against 4
        assert dict(zip(grades["problem_id"], grades["correct"])) == {"p": True, "q": False}


def test_a_second_grading_call_is_refused_while_another_process_grades_the_run(run_dir: Path) -> None:
    """Two grading calls on one run and grader would both write the class registry (one's classes lost):
    while another process holds the run's grading lock a call is refused and writes nothing;
    once that process is killed (no clean exit) the lock is gone and grading works."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from verify.run_grades import _grading_lock; "
         "lock = _grading_lock(Path(sys.argv[1]), 'math-verify'); lock.__enter__(); print('held', flush=True); time.sleep(120)", str(run_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match="another process .* is grading this run with math-verify now; wait for it"):
            verify.grade_run(run_dir, progress=False)
        assert _parts(run_dir) == []
        verify.grade_run(run_dir, grader="strict", progress=False)  # another grader's lock is its own
    finally:
        holder.kill()
        holder.wait()
    assert len(verify.grade_run(run_dir, progress=False)) == 2 * len(TEXTS)


def test_grading_goes_on_unlocked_where_the_file_system_has_no_flock(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some network file systems refuse flock (ENOSYS): grading then runs as it did before locks, unlocked."""
    import errno
    import fcntl

    def no_flock(handle, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    assert len(verify.grade_run(run_dir, progress=False)) == 2 * len(TEXTS)


def test_temp_files_of_a_killed_call_are_removed_by_the_next(tmp_path: Path) -> None:
    """A grading call killed mid-write leaves a hidden temp file; the next call of that grader removes its own
    (another grader's, which may be writing now, stay)."""
    from verify.run_grades import grades_dir

    run = write_run_dir(tmp_path / "run", PROBLEMS, _samples("base", TEXTS[:2]))
    verify.grade_run(run, progress=False)
    cache = run / "_grades" / "_cache"
    left = [grades_dir(run, "math-verify") / ".tmp-0a1b-part-x.parquet", cache / ".tmp-0a1b-math-verify.classes.parquet"]
    other = cache / ".tmp-0a1b-strict.pairs.parquet"
    for path in [*left, other]:
        path.write_bytes(b"half")
    real_unlink = Path.unlink

    def read_only(self, *args, **kwargs):
        if self.name.startswith(".tmp-"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_unlink(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:  # a run this user may only read: graded as before, temps kept
        patch.setattr(Path, "unlink", read_only)
        assert len(verify.grade_run(run, progress=False)) == 2
    assert all(path.exists() for path in left)
    def no_flock(*args):
        raise OSError(38, "Function not implemented")

    import fcntl

    with pytest.MonkeyPatch.context() as patch:  # no lock held (a file system without flock): another call may be writing
        patch.setattr(fcntl, "flock", no_flock)
        assert len(verify.grade_run(run, progress=False)) == 2
    assert all(path.exists() for path in left)
    assert len(verify.grade_run(run, progress=False)) == 2
    assert not any(path.exists() for path in left) and other.exists()


def _replace_shard_texts(shard: Path, texts: dict[tuple[str, int], str]) -> None:
    """Rewrite a shard under its own name with some samples' texts changed, as `study sample` writes shards (its
    texts digest in the footer): what a damaged shard removed and sampled again by a non-deterministic engine gives."""
    from sampling.store import TEXTS_KEY, texts_digest

    table = pq.read_table(shard)
    keys = zip(table.column("problem_id").to_pylist(), table.column("sample_index").to_pylist())
    new = [texts.get(key, text) for key, text in zip(keys, table.column("text").to_pylist())]
    table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(new, pa.string()))
    table = table.replace_schema_metadata({TEXTS_KEY: texts_digest(table).encode()})
    pq.write_table(table, shard)


def test_a_shard_replaced_by_other_samples_is_graded_again(run_dir: Path) -> None:
    """Grades made from a shard's earlier samples are not kept once other samples sit under its name: that shard's
    samples (and only those) are graded again from their new texts, and the record then matches them."""
    first = verify.grade_run(run_dir, progress=False)
    shard = sorted((run_dir / "samples" / "base").glob("*.parquet"))[0]
    assert first.set_index(["config_id", "problem_id", "sample_index"]).loc[("base", "p-half", 0), "correct"]
    _replace_shard_texts(shard, {("p-half", 0): "\\boxed{7}"})
    grades, stats = grade_run_with_stats(run_dir, progress=False)
    assert stats.replaced_shards == 1
    assert stats.newly_graded == pq.read_metadata(shard).num_rows and stats.already_graded == len(first) - 7
    row = grades.set_index(["config_id", "problem_id", "sample_index"]).loc[("base", "p-half", 0)]
    assert not row["correct"] and row["extracted"] == "7"
    unchanged = grades[~((grades.config_id == "base") & (grades.problem_id == "p-half") & (grades.sample_index == 0))]
    expected = first[~((first.config_id == "base") & (first.problem_id == "p-half") & (first.sample_index == 0))]
    pd.testing.assert_frame_equal(unchanged.reset_index(drop=True), expected.reset_index(drop=True))
    again, stats = grade_run_with_stats(run_dir, progress=False)
    assert (stats.replaced_shards, stats.newly_graded) == (0, 0)
    pd.testing.assert_frame_equal(again, grades)


def test_a_replaced_shards_new_grades_win_whatever_the_clock_and_an_interrupt_keeps_them_whole(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The grades of a shard graded again must outrank its old ones even when this call's clock is behind the last
    one's (another time zone, a node whose clock lags) and the old parts carry names from before generations (named
    by a local time, here one in the future); a Ctrl-C after the new part is written keeps grades and digest together."""
    import time as time_module

    verify.grade_run(run_dir, progress=False)
    for part in _parts(run_dir):  # as an older study named them, by a local time ahead of this clock
        part.rename(part.with_name(part.name.replace("part-g", "part-29991231T235959.123456789-old")))
    shard = sorted((run_dir / "samples" / "guided").glob("*.parquet"))[-1]
    key = tuple(pq.read_table(shard, columns=["problem_id", "sample_index"]).to_pylist()[0].values())
    _replace_shard_texts(shard, {key: "no answer at all"})
    epoch = time_module.gmtime(0)
    monkeypatch.setattr(run_grades_module.time, "gmtime", lambda *_: epoch)  # this call's clock says 1970
    _interrupt_on_call(monkeypatch, "_save_pairs", 1)  # after the part: grades and the shard's digest are written
    with pytest.raises(run_grades_module.GradingInterrupted) as interrupted:
        verify.grade_run(run_dir, progress=False)
    assert interrupted.value.graded == pq.read_metadata(shard).num_rows and interrupted.value.whole
    monkeypatch.undo()
    grades, stats = grade_run_with_stats(run_dir, progress=False)
    assert (stats.replaced_shards, stats.newly_graded) == (0, 0)
    assert grades.set_index(["config_id", "problem_id", "sample_index"]).loc[("guided", *key), "answer_class"] == -1
    assert _parts(run_dir)[-1].name.startswith("part-g000000001-19700101T")


def test_a_changed_shard_whose_samples_all_count_from_an_earlier_one_is_not_graded_again(tmp_path: Path) -> None:
    """A shard whose keys all sit in an earlier shard too contributes nothing (the first counts): its texts changing
    is no reason to grade anything, on this call or the next."""
    problems = [ProblemSpec("p", "5", "", 1, "Algebra")]
    samples = pd.DataFrame({"config_id": "c", "problem_id": "p", "sample_index": [0, 1], "text": ["\\boxed{5}", "\\boxed{6}"]})
    run = write_run_dir(tmp_path / "run", problems, samples)
    write_run_dir(run, problems, samples)  # the same keys again, in a later shard
    verify.grade_run(run, progress=False)
    later = sorted((run / "samples" / "c").glob("*.parquet"))[-1]
    _replace_shard_texts(later, {("p", 0): "\\boxed{6}"})
    for _ in range(2):
        grades, stats = grade_run_with_stats(run, progress=False)
        assert (stats.replaced_shards, stats.newly_graded) == (0, 0) and grades["correct"].tolist() == [True, False]
    assert len(_parts(run)) == 1


def test_a_shard_without_a_digest_replaced_by_one_with_a_digest_is_graded_again(run_dir: Path) -> None:
    """Shards from before the texts digest (a run sampled by an older study, or written by hand) have none, so they
    cannot be checked; but one replaced by `study sample` since has one where none was recorded with its grades (or
    no record at all, the run graded by an older study): its samples are graded again."""
    for shard in (run_dir / "samples").rglob("*.parquet"):  # as an older study wrote them: no digest
        pq.write_table(pq.read_table(shard).replace_schema_metadata({}), shard)
    first = verify.grade_run(run_dir, progress=False)  # today's study records "no digest" for each
    assert (grade_run_with_stats(run_dir, progress=False)[1].newly_graded, len(first)) == (0, 2 * len(TEXTS))

    def replaced(config: str, index: int, text: str) -> tuple[pd.DataFrame, tuple[str, int]]:
        shard = sorted((run_dir / "samples" / config).glob("shard-*.parquet"))[index]
        key = tuple(pq.read_table(shard, columns=["problem_id", "sample_index"]).to_pylist()[0].values())
        _replace_shard_texts(shard, {key: text})  # sampled again by today's study: it has a digest
        grades, stats = grade_run_with_stats(run_dir, progress=False)
        assert stats.replaced_shards == 1 and stats.newly_graded == pq.read_metadata(shard).num_rows
        return grades.set_index(["config_id", "problem_id", "sample_index"]), key

    grades, key = replaced("guided", 0, "\\boxed{77}")  # recorded without a digest, has one now
    assert grades.loc[("guided", *key), "extracted"] == "77"
    for part in _parts(run_dir):  # as an older study wrote its grade parts: no shard recorded at all
        pq.write_table(pq.read_table(part).replace_schema_metadata({}), part)
    stats = grade_run_with_stats(run_dir, progress=False)[1]  # the one shard with a digest has no record now: graded
    assert (stats.replaced_shards, stats.newly_graded) == (1, 7)  # again once (it cannot be told from a replaced one)
    assert grade_run_with_stats(run_dir, progress=False)[1].newly_graded == 0  # shards without digests: none discarded
    grades, key = replaced("base", 1, "\\boxed{123}")  # never recorded, has a digest now
    assert grades.loc[("base", *key), "extracted"] == "123"
    assert grade_run_with_stats(run_dir, progress=False)[1].newly_graded == 0


def test_a_damaged_grade_part_is_a_clear_error_and_regrade_recovers(run_dir: Path) -> None:
    """A grade part cut short (a disk filled up under another tool) names itself and `--regrade`, not a traceback."""
    first = verify.grade_run(run_dir, progress=False)
    part = _parts(run_dir)[0]
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(RunDirError, match=rf"{part.name}: unreadable grade part .*`study verify .* --regrade` grades"):
        verify.grade_run(run_dir, progress=False)
    pd.testing.assert_frame_equal(verify.grade_run(run_dir, progress=False, regrade=True), first)


@pytest.mark.parametrize("kind", ["pairs", "classes", "references"])
def test_a_damaged_grading_cache_is_a_clear_error_and_removing_it_recovers(run_dir: Path, kind: str) -> None:
    """A cache file cut short (a partial copy) names itself, the folder to remove and `--regrade`, not a traceback;
    without the cache, --regrade gives the same grades."""
    import shutil

    first = verify.grade_run(run_dir, progress=False)
    cache = run_dir / "_grades" / "_cache"
    path = cache / f"math-verify.{kind}.parquet"
    path.write_bytes(path.read_bytes()[:100])
    said = rf"{path.name}: unreadable grading cache .*remove .*_cache .*--regrade"
    errors = 0
    for regrade in (False, True):  # each call reads the file (an error naming it) or does not need it (same grades)
        try:
            pd.testing.assert_frame_equal(verify.grade_run(run_dir, progress=False, regrade=regrade), first)
        except RunDirError as exc:
            assert re.search(said, str(exc)), exc
            errors += 1
    assert errors > 0
    shutil.rmtree(cache)
    pd.testing.assert_frame_equal(verify.grade_run(run_dir, progress=False, regrade=True), first)


@pytest.mark.parametrize("content, said", [(b'{"broken', r"corrupt manifest \(.* at line 1 column \d+\); it is not JSON"),
                                           (b"\xff\xfe{}", r"corrupt manifest \(not UTF-8 text")])
def test_a_damaged_manifest_is_refused_naming_where(run_dir: Path, content: bytes, said: str) -> None:
    """A manifest that is not JSON is refused (grading would skip the check that the grades are current), with
    the place it breaks; the grades already written are kept as they were."""
    first = verify.grade_run(run_dir, progress=False)
    parts = {p: p.read_bytes() for p in _parts(run_dir)}
    (run_dir / "_manifest.json").write_bytes(content)
    with pytest.raises(RunDirError, match=said):
        verify.grade_run(run_dir, progress=False)
    assert {p: p.read_bytes() for p in _parts(run_dir)} == parts
    (run_dir / "_manifest.json").write_text('{"written by": "another tool"}')  # JSON, not study's: graded as before
    pd.testing.assert_frame_equal(verify.grade_run(run_dir, progress=False), first)
