"""How often does the default grader get MATH-500 answers wrong? Grades a fixed set of labelled answers.

    python scripts/bench_grader.py                    # the default grader (math-verify)
    python scripts/bench_grader.py --grader strict

scripts/data/math500_grader_cases.jsonl.gz: 5,903 answers written (tenth session) for the 500
MATH-500 references, each in a realistic completion ending in a box. `pol` says whether the answer
equals the reference (eq) or not (ne); `human` whether a careful reader accepts that verdict without
argument (accept/reject) or it depends on conventions (debatable); `kind` is the spelling tried
(`degree-unicode`, `base:wrong-base`, `unit:wrong`, ...). Prints, per label, how many were graded
against the label, and the kinds that fail.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CASES = Path(__file__).resolve().parent / "data" / "math500_grader_cases.jsonl.gz"


def main() -> None:
    """Grade every case and print the error rates by label and the failing kinds."""
    from verify.batch import grade_batch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grader", default="math-verify", choices=["math-verify", "strict"])
    args = parser.parse_args()
    with gzip.open(CASES, "rt") as handle:
        cases = [json.loads(line) for line in handle]
    result = grade_batch([c["completion"] for c in cases], [c["reference"] for c in cases], args.grader)
    errors: collections.Counter[tuple[str, str]] = collections.Counter()
    totals: collections.Counter[tuple[str, str]] = collections.Counter()
    kinds: collections.Counter[tuple[str, str]] = collections.Counter()
    for case, correct in zip(cases, result.frame["correct"]):
        label = (case["pol"], case["human"])
        totals[label] += 1
        if bool(correct) != (case["pol"] == "eq"):
            errors[label] += 1
            kinds[(case["pol"], case["kind"])] += 1
    names = {("eq", "accept"): "equal answers rejected", ("eq", "debatable"): "equal, debatable form, rejected",
             ("ne", "reject"): "wrong answers accepted", ("ne", "debatable"): "wrong, debatable form, accepted"}
    print(f"{len(cases):,} MATH-500 answers, grader {args.grader}")
    for label, name in names.items():
        if totals[label]:
            print(f"  {name:34s} {errors[label]:5,} of {totals[label]:5,} ({errors[label] / totals[label]:.1%})")
    print("failing kinds (eq: rejected, ne: accepted):")
    for (pol, kind), count in kinds.most_common(15):
        print(f"  {pol} {kind:36s} {count}")


if __name__ == "__main__":
    main()
