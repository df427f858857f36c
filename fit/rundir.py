"""Run directories for `study fit` / `study report`: manifest, and counts, summary and maj@k via `verify`.

The counts table and per-config summary come from the verify package (``verify.counts_table``
grades the run if needed; ``verify.summarize_run`` gives pass@1, coverage@n, maj@n with CIs;
``verify.metrics.maj_curve`` gives maj@k), imported lazily so that fitting a counts file never
needs the verifier.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from fit.counts import CountsError
from sampling.store import MANIFEST, RunDirError, read_manifest, timing_devices

POLICY_REFERENCES: dict[str, str] = {"base": "base", "oracle": "oracle"}


def latest_run(root: str | Path = "runs") -> Path:
    """The run dir under `root` whose manifest was written last."""
    root = Path(root)
    manifests = sorted(root.glob(f"*/{MANIFEST}"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not manifests:
        raise CountsError(f"no run directory (with a {MANIFEST}) under {root.resolve()}; "
                          "pass RUN_DIR or --counts FILE")
    return manifests[-1].parent


def load_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The run's manifest as a dict."""
    try:
        return read_manifest(Path(run_dir))
    except RunDirError as exc:
        raise CountsError(str(exc)) from None


def references(manifest: dict[str, Any]) -> dict[str, str]:
    """{'base': config_id, 'oracle': config_id} for the configs with policy base / oracle."""
    out = {}
    for cid, cfg in manifest.get("configs", {}).items():
        role = POLICY_REFERENCES.get(str(cfg.get("policy")))
        if role and role not in out:
            out[role] = str(cid)
    return out


def random_grid(manifest: dict[str, Any]) -> pd.DataFrame:
    """Configs with policy 'random', their c and k, and their variant: the other settings that differ among
    them (e.g. "oracle_temperature=0"; "" when all share them), so that one c×k grid never mixes variants."""
    configs = {str(cid): cfg for cid, cfg in manifest.get("configs", {}).items() if cfg.get("policy") == "random"}
    keys = sorted({key for cfg in configs.values() for key in cfg} - {"policy", "c", "k", "id"})
    varying = [key for key in keys if len({json.dumps(cfg.get(key), sort_keys=True) for cfg in configs.values()}) > 1]
    rows = [{"config": cid, "c": cfg.get("c"), "k": cfg.get("k"),
             "variant": ", ".join(f"{key}={cfg.get(key)}" for key in varying)} for cid, cfg in configs.items()]
    return pd.DataFrame(rows, columns=["config", "c", "k", "variant"]).dropna()


def choose_grader(run_dir: str | Path, asked: str | None = None) -> str:
    """The grader whose grades `study fit` reads: the one asked for, else the only one that graded the run
    (`study verify --grader`), else math-verify."""
    from verify.equivalence import GRADERS

    if asked is not None:
        if asked not in GRADERS:
            raise CountsError(f"--grader: choose from {', '.join(GRADERS)}, got {asked!r}")
        return asked
    graded = graders_of(run_dir)
    return graded[0] if len(graded) == 1 else "math-verify"


def check_graded_with(run_dir: str | Path, grader: str) -> None:
    """Refuse to fit a run with a grader other than the ones that graded it: grading it here would add that
    grader's grades, and with two graders the default (`choose_grader`) would change for every later command."""
    graded = graders_of(run_dir)
    if graded and grader not in graded:
        raise CountsError(f"{run_dir} was graded with {', '.join(graded)}, not {grader}: run `study verify {run_dir} "
                          f"--grader {grader}` first if you want its grades (grading it here would change which grades "
                          "`study fit`, `study report` and `study analyze` read by default)")


def graders_of(run_dir: str | Path) -> list[str]:
    """The graders that have graded the run (`study verify --grader`)."""
    from verify.equivalence import GRADERS
    from verify.run_grades import grades_dir

    return [g for g in GRADERS if grades_dir(Path(run_dir), g).is_dir()]


def run_grades_and_counts(run_dir: str | Path, grader: str = "math-verify", progress: bool = True
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's grades and counts table from verify (grading first if needed; the counts have a ``config`` column)."""
    from verify.tables import grades_and_counts  # lazy: only the run-dir path needs the verifier

    return grades_and_counts(Path(run_dir), grader, progress)


def timing_note(run_dir: str | Path) -> str:
    """Where the `seconds` cost model's times were measured, and a warning when configs ran on different devices."""
    devices = timing_devices(Path(run_dir))
    found = sorted(set().union(*devices.values())) if devices else []
    if len(found) <= 1:
        return f"engine seconds measured on {found[0] if found and found[0] != 'unrecorded' else 'an unrecorded device'}"
    where = "; ".join(f"{config}: {', '.join(sorted(d))}" for config, d in sorted(devices.items()))
    return (f"engine seconds were measured on {len(found)} different devices ({where}): "
            "configs compare fairly only where their blocks ran on the same kind of device")


def incomplete_note(run_dir: str | Path) -> str | None:
    """A note naming the configs whose sampling is unfinished (None when every planned block is done)."""
    from sampling.status import unfinished_configs

    unfinished = unfinished_configs(Path(run_dir))
    if not unfinished:
        return None
    return (f"the run is still incomplete: {', '.join(unfinished)} samples drawn; fits and comparisons use what is "
            f"there (see `study status {run_dir}`)")


def run_summary(grades: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """verify.summarize_grades of a run's grades, indexed by config (pass@1, coverage@n, maj@n and their _lo/_hi)."""
    from verify.tables import summarize_grades

    return summarize_grades(grades, n_boot=n_boot, ci=level, seed=seed).set_index("config")


def maj_curves(grades: pd.DataFrame, k_max: dict[str, int], n_resamples: int = 200, seed: int = 0,
               progress: bool = True) -> pd.DataFrame:
    """maj@k per config on a log grid up to k_max[config] (verify.metrics.maj_curve): columns config, k, maj, lo, hi."""
    from verify.metrics import log_grid, maj_curve
    from verify.progress import rich_progress
    from verify.tables import class_votes

    frames = []
    votes_by_config = [(str(cid), votes) for cid, votes in class_votes(grades).groupby("config", sort=True)
                       if str(cid) in k_max]
    with rich_progress(progress) as sink:
        sink.phase("maj@k", len(votes_by_config))
        for cid, votes in votes_by_config:
            curve = maj_curve(list(votes["votes"]), list(votes["correct_index"]), list(votes["no_answer"]),
                              ks=log_grid(k_max[cid]), n_resamples=n_resamples, n_boot=200, seed=seed)
            frames.append(curve.assign(config=cid))
            sink.advance("maj@k")
    cols = ["config", "k", "maj", "lo", "hi"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
