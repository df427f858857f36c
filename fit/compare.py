"""Equal-compute comparison: coverage against compute per problem, compute multipliers, crossovers.

Compute per problem for k samples is k × the config's mean cost per sample (the mean over its
problems of each problem's mean cost per sample, from fit.cost or the counts' cost column). The
coverage curve is empirical up to k = min(n) and the group's default fit beyond, anchored to the
empirical endpoint (marked ``extrapolated``), made non-decreasing before it is inverted.

Compute multiplier of a config g against a reference r (pure base or pure oracle sampling):

- at a target coverage T: M(T) = C_r(T) / C_g(T), the compute the reference needs to reach T over
  the compute g needs. M > 1 means g reaches T with M× less compute; M = 1 for a config against
  itself; scaling g's costs by s divides M by s.
- at a budget B: M(B) = C_r(cov_g(B)) / C_g(cov_g(B)), what the reference would spend to match the
  coverage g reaches with B, over what g needs for it (B itself wherever g's curve still rises).

CIs come from the paired bootstrap over problems (the same resampled problems for both configs,
costs resampled too), so shared problem difficulty cancels. A replicate that never reaches a
target (within 10^6 × n) needs infinite compute: it stays in the interval (multiplier 0 when g
never reaches T, ∞ when the reference never does), and an interval bound among such replicates is
unbounded (JSON null, with the replicate counts in ``unreached``); so does the point estimate (∞ is
JSON null marked ``"infinite": true``, and ``note`` says which curve never reaches T). A curve that
stops being known before it reaches T (no fit beyond n, a failed replicate) needs unknown compute
(NaN: dropped from the interval, ``note`` says so). A crossover is a budget where cov_g(B) − cov_r(B)
changes sign.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fit import curves
from fit.analysis import GroupFit, ci_list, json_float

DEFAULT_TARGETS: tuple[float, ...] = (0.5, 0.8, 0.95)
EXTRAPOLATE_DECADES = 6  # the fitted curve is followed up to 10^6 × the largest n
SATURATED = 0.999  # crossovers where both curves are above this are not reported
TIE = 1e-12  # coverages closer than this are equal (curves that touch do not cross)


@dataclass
class ComputeCurve:
    """Coverage of one config on a k grid (point + paired replicates) and its cost per sample."""

    name: str
    ks: np.ndarray
    point: np.ndarray
    boot: np.ndarray
    k_empirical: int
    cost: float
    cost_boot: np.ndarray
    method: str

    @property
    def budgets(self) -> np.ndarray:
        """Compute per problem at each grid k."""
        return self.ks * self.cost

    def compute_for(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Compute per problem to reach each target: point (T,), replicates (B, T), extrapolated (T,).

        Infinite where the curve never reaches a target, NaN where that is unknown (no fit beyond n);
        both count as extrapolated (the answer lies beyond the sampled range)."""
        targets = np.asarray(targets, float)
        k_point = self.point_samples_to_reach(targets)
        k_boot = self.samples_to_reach(np.broadcast_to(targets, (len(self.boot), targets.size)))
        return k_point * self.cost, k_boot * self.cost_boot[:, None], ~(k_point <= self.k_empirical)

    def point_samples_to_reach(self, coverage: np.ndarray) -> np.ndarray:
        """k at which the point curve reaches each coverage (T,): inf where it never does, NaN where unknown."""
        return _samples_to_reach(np.asarray(coverage, float)[None, :], self.ks, self.point[None, :])[0]

    def samples_to_reach(self, coverage: np.ndarray) -> np.ndarray:
        """k at which each replicate reaches coverage (B, T): inf where a replicate never does, NaN where unknown."""
        return _samples_to_reach(coverage, self.ks, self.boot)

    def coverage_at(self, budgets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coverage reached with each budget: point (T,), replicates (B, T), extrapolated (T,)."""
        budgets = np.asarray(budgets, float)
        k_point = budgets / self.cost
        point = curves.interp_rows(k_point[None, :], self.ks, self.point[None, :])[0]
        boot = curves.interp_rows(budgets[None, :] / self.cost_boot[:, None], self.ks, self.boot)
        return point, boot, k_point > self.k_empirical


def _samples_to_reach(coverage: np.ndarray, ks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """curves.invert_rows, with inf where a row is known on the whole grid and never reaches the coverage.

    A row that stops being known before reaching it (a replicate or point curve without a fit beyond
    n, a failed replicate) gives NaN: whether it would reach the coverage is unknown, not "never"."""
    k = curves.invert_rows(coverage, ks, rows)
    known = np.isfinite(rows).all(axis=1)[:, None] & np.isfinite(coverage)
    return np.where(np.isnan(k) & known, np.inf, k)


def _monotone(rows: np.ndarray) -> np.ndarray:
    """Running maximum along each row (the empirical→fit seam can step down); NaN stays NaN."""
    filled = np.maximum.accumulate(np.where(np.isnan(rows), -np.inf, rows), axis=1)
    return np.where(np.isnan(rows), np.nan, filled)


def compute_curve(group: GroupFit, cost_per_problem: np.ndarray, estimator: str | None = None) -> ComputeCurve:
    """The config's coverage over k from 0 to 10^6 × max n, with the cost per sample."""
    top = float(group.n.max()) * 10.0 ** EXTRAPOLATE_DECADES
    tail = np.geomspace(group.n_min, top, 24 * (EXTRAPOLATE_DECADES + 1) + 1)[1:]
    ks = np.concatenate([[0.0], group.ks.astype(float), tail])
    point, boot, _, method = group.curve(ks, estimator)
    point, boot = _monotone(point[None, :])[0], _monotone(boot)
    cost, cost_boot = group.stat(np.asarray(cost_per_problem, float))
    if len(group.n) < 2:  # resampling a single problem changes nothing: no CIs (as GroupFit.ci)
        boot, cost_boot = np.full_like(boot, np.nan), np.full_like(cost_boot, np.nan)
    return ComputeCurve(group.name, ks, point, boot, group.n_min, cost, cost_boot, method)


def _entry(value: float, boot: np.ndarray, extrapolated: bool, level: float, unreached: dict[str, int] | None = None,
           **extra: Any) -> dict[str, Any]:
    """One JSON cell: value, CI, extrapolated flag (and how many replicates never reached the target)."""
    low, high = ci_list(boot, level)
    cell = {"multiplier": json_float(value), "low": low, "high": high, "extrapolated": bool(extrapolated), **extra}
    if np.isposinf(value):  # JSON has no infinity: null, marked
        cell["infinite"] = True
    if unreached and (unreached["config"] or unreached["reference"]):
        cell["unreached"] = unreached
    return cell


def _compute_entry(value: float, boot: np.ndarray, extrapolated: bool, level: float) -> dict[str, Any]:
    """Compute per problem to reach one target, with CI (and how many replicates never reach it)."""
    low, high = ci_list(boot, level)
    cell = {"compute": json_float(value), "low": low, "high": high, "extrapolated": bool(extrapolated)}
    if np.isposinf(value):  # never reached: JSON has no infinity, null marked
        cell["infinite"] = True
    unreached = int(np.isposinf(boot).sum())
    if unreached:
        cell["unreached"] = {"config": unreached, "replicates": int((~np.isnan(boot)).sum())}
    return cell


def _unreached(config_compute: np.ndarray, reference_compute: np.ndarray) -> dict[str, int]:
    """How many bootstrap replicates of the config and of the reference never reach the coverage (infinite compute)."""
    return {"config": int(np.isposinf(config_compute).sum()), "reference": int(np.isposinf(reference_compute).sum()),
            "replicates": int((~np.isnan(config_compute) & ~np.isnan(reference_compute)).sum())}


def multipliers_at_targets(g: ComputeCurve, r: ComputeCurve, targets: np.ndarray
                           ) -> tuple[np.ndarray, ...]:
    """M(T) = C_r(T) / C_g(T): point (T,), replicates (B, T), extrapolated, C_g, C_r, C_g and C_r replicates."""
    cg, cgb, eg = g.compute_for(targets)
    cr, crb, er = r.compute_for(targets)
    with np.errstate(invalid="ignore", divide="ignore"):  # inf / x = inf, x / inf = 0, inf / inf = NaN (dropped)
        return cr / cg, crb / cgb, eg | er, cg, cr, cgb, crb


def multipliers_at_budgets(g: ComputeCurve, r: ComputeCurve, budgets: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """M(B) = C_r(cov_g(B)) / C_g(cov_g(B)): point (T,), replicates (B, T), extrapolated, cov_g(B).

    C_g(cov_g(B)) is B wherever g's curve still rises at B; where it is flat, g reached that coverage
    with less than B, and dividing by B would make a config less than 1× itself.
    """
    budgets = np.asarray(budgets, float)
    cov, cov_boot, eg = g.coverage_at(budgets)
    k_r = r.point_samples_to_reach(cov)
    k_rb = r.samples_to_reach(cov_boot)
    k_g = g.point_samples_to_reach(cov)
    k_gb = g.samples_to_reach(cov_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(cov > 0, k_r * r.cost / (k_g * g.cost), np.nan)
        mb = np.where(cov_boot > 0, k_rb * r.cost_boot[:, None] / (k_gb * g.cost_boot[:, None]), np.nan)
    return m, mb, eg | ~(k_r <= r.k_empirical), cov


def crossovers(g: ComputeCurve, r: ComputeCurve, points: int = 400) -> list[dict[str, Any]]:
    """Budgets where g's and r's coverage-vs-compute curves cross (linear in log budget)."""
    lo = min(g.cost, r.cost)
    hi = min(g.ks[-1] * g.cost, r.ks[-1] * r.cost)
    if not hi > lo:
        return []
    budgets = np.geomspace(lo, hi, points)
    cg, _, eg = g.coverage_at(budgets)
    cr, _, er = r.coverage_at(budgets)
    diff = cg - cr
    live = np.isfinite(diff) & (np.maximum(cg, cr) < SATURATED)
    tied = np.abs(diff) <= TIE
    out = []
    leader = None  # index of the last live budget where one curve was ahead
    for i in range(len(budgets)):
        if not live[i]:
            leader = None
            continue
        if tied[i]:  # equal curves (both flat at one coverage) hand the lead to nobody
            continue
        if leader is not None and np.sign(diff[i]) != np.sign(diff[leader]):
            j = i - 1  # the old leader's last budget, or the end of a tie: the new leader goes ahead after it
            t = 0.0 if tied[j] else diff[j] / (diff[j] - diff[i])
            b = float(np.exp(np.log(budgets[j]) + t * (np.log(budgets[i]) - np.log(budgets[j]))))
            out.append({"budget": b, "coverage": json_float(cg[j] + t * (cg[i] - cg[j])),
                        "ahead_after": g.name if diff[i] > 0 else r.name,
                        "extrapolated": bool(eg[i] or er[i])})
        leader = i
    return out


def default_budgets(reference: ComputeCurve) -> list[float]:
    """Budgets of 1, 10, 100, … and n reference samples (n = the reference's smallest n)."""
    ks = [10.0 ** j for j in range(int(np.floor(np.log10(reference.k_empirical))) + 1)]
    if reference.k_empirical not in ks:
        ks.append(float(reference.k_empirical))
    return [k * reference.cost for k in ks]


def _reach_note(name: str, compute: float, coverage: str) -> str | None:
    """Why a config has no finite compute for a coverage: it never reaches it, or its curve beyond n is unknown."""
    if np.isposinf(compute):
        return f"{name} does not reach {coverage} within 10^{EXTRAPOLATE_DECADES}× its n"
    if np.isnan(compute):
        return f"{name} does not reach {coverage} within its n, and has no fit to extrapolate with"
    return None


def _budget_key(budget: float, budgets: list[float]) -> str:
    """fit.json's key of a budget: 6 significant digits, more where two budgets would share a key."""
    for digits in (6, 9, 12, 17):
        if len({f"{b:.{digits}g}" for b in budgets}) == len(set(budgets)):
            return f"{budget:.{digits}g}"
    return repr(float(budget))


def compare(curves_by_name: dict[str, ComputeCurve], references: dict[str, str],
            targets: tuple[float, ...] = DEFAULT_TARGETS, budgets: list[float] | None = None,
            level: float = 0.95) -> dict[str, Any]:
    """The comparison block of fit.json: per config, compute to reach each target and multipliers vs each reference."""
    targets_arr = np.asarray(targets, float)
    out: dict[str, Any] = {"targets": list(targets), "references": dict(references), "configs": {}}
    base_name = references.get("base") or next(iter(references.values()), None)
    if budgets is None and base_name is not None:
        budgets = default_budgets(curves_by_name[base_name])
    out["budgets"] = list(budgets or [])
    for name, g in curves_by_name.items():
        c_point, c_boot, c_extra = g.compute_for(targets_arr)
        entry: dict[str, Any] = {
            "cost_per_sample": {"value": json_float(g.cost), **dict(zip(("low", "high"), ci_list(g.cost_boot, level)))},
            "compute_to_target": {str(t): _compute_entry(c_point[i], c_boot[:, i], c_extra[i], level)
                                  for i, t in enumerate(targets)},
        }
        for role, ref_name in references.items():
            r = curves_by_name[ref_name]
            m, mb, ex, cg, cr, cgb, crb = multipliers_at_targets(g, r, targets_arr)
            block: dict[str, Any] = {"reference": ref_name, "targets": {}, "budgets": {}}
            for i, t in enumerate(targets):
                if np.isposinf(cg[i]) and np.isposinf(cr[i]) and name != ref_name:
                    note = f"neither {name} nor {ref_name} reaches {t:.3g} within 10^{EXTRAPOLATE_DECADES}× its n"
                else:
                    note = _reach_note(name, cg[i], f"{t:.3g}") or _reach_note(ref_name, cr[i], f"{t:.3g}")
                block["targets"][str(t)] = _entry(m[i], mb[:, i], ex[i], level, _unreached(cgb[:, i], crb[:, i]), note=note)
            if budgets:
                bm, bmb, bex, bcov = multipliers_at_budgets(g, r, np.asarray(budgets, float))
                k_r = r.point_samples_to_reach(bcov)
                for i, b in enumerate(budgets):
                    if np.isnan(bcov[i]):
                        note = f"{name}'s coverage at a budget is unknown (no fit beyond its n)"
                    elif bcov[i] <= 0:  # nothing to match: what would the reference need for coverage 0?
                        note = f"{name} has coverage 0 at a budget: no coverage to match"
                    else:
                        note = _reach_note(ref_name, k_r[i], f"the coverage {name} has at a budget")
                    block["budgets"][_budget_key(b, budgets)] = _entry(
                        bm[i], bmb[:, i], bex[i], level, _unreached(np.where(np.isnan(bmb[:, i]), np.nan, 0.0), bmb[:, i]),
                        coverage=json_float(bcov[i]), note=note)
            block["crossovers"] = crossovers(g, r) if name != ref_name else []
            entry[f"vs_{role}"] = block
        out["configs"][name] = entry
    return out
