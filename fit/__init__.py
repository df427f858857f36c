"""Fit and compare: coverage curves, extrapolation and the equal-compute comparison (`study fit`, `study report`).

Modules (pure cores, I/O at the edges)
    counts         read/validate counts tables (.csv/.parquet): load_counts, validate_counts, CountsError
    cost           the only place tokens × parameters: add_cost_per_sample(counts, "flops"|"decode"|"price", ...)
    curves         unbiased pass@k (vectorised), k grids, paired bootstrap weights over problems
    power_law      coverage(k) = exp(a·k^b): fit(ks, cov, "nonlinear"|"loglog")
    beta_binomial  p ~ Beta(α, β) by maximum likelihood on (correct, n); coverage(theta, k) in closed form
    analysis       per-group fits and predictions: fit_groups(counts, FitOptions()) -> {name: GroupFit}
    compare        compute curves, compute multipliers at targets/budgets, crossovers: compare(...)
    pipeline       fit_counts_file(path, ...), fit_run_dir(run_dir, ...) -> FitRun (.to_json() is fit.json)
    plots, report  PNG+SVG figures; the Markdown report
    cli            register(app): `study fit`, `study report`

Estimators (``--estimator``): ``ensemble`` (default: the mean of the two below, and of their paired
bootstrap replicates), ``beta_binomial``, ``power_law`` (``--power-law-method nonlinear`` by default).
The default was chosen on held-out real data (scripts/eval_extrapolation.py; BENCHMARKS.md, "Which extrapolation is the default?").

fit.json (public contract; ``study fit --counts FILE --json OUT`` and RUN_DIR/_fit/fit.json)::

    {"version": 1, "source": {...}, "estimator": "ensemble", "power_law_method", "family", "n_boot",
     "level", "cost_model": ..., "cost_unit": ..., "notes": [...] (when any),
     "options": {the options of `study fit` as given, "boot", "seed", "cost", ..., null where not given},
     "groups": {NAME: {
         "problems", "n_min", "n_max", "samples", "successes", "zero_success_problems",
         "pass@1": {"value", "low", "high"}, "coverage@n": {"value", "low", "high"},
         "maj@n": {"value", "low", "high"}   (run dirs: majority vote over answer classes),
         "default_estimator",
         "power_law": {"method", "status", "a", "b", "a_ci", "b_ci", "rmse", "k_range", "points", "boot_failed",
                       "alternative": {... the other method ...}, "predict": {...}},
         "beta_binomial": {"family", "status", "alpha", "beta", "alpha_ci", "beta_ci", "power_law_a",
                           "power_law_b", "power_law_b_ci", "loglik", "rmse", "at_bound", "predict": {...}},
         "predict": {"10000": {"coverage", "low", "high", "method", "extrapolated"}},
         "cost_per_sample", "cost_shares": {"base_decode", ...},   (when costs are known; shares: token cost models)
         "warnings": [...]}},
     "comparison": {"references", "targets", "budgets", "cost_model", "cost_unit", "configs": {NAME: {"cost_per_sample",
         "compute_to_target", "vs_base": {"reference", "targets": {"0.5": {"multiplier", "low", "high",
         "extrapolated", "note", "unreached"}}, "budgets": {...}, "crossovers": [...]}, "vs_oracle": {...}}}}}

``unreached`` (only when some bootstrap replicates never reach the coverage within 10^6 × n:
{"config", "reference", "replicates"} counts): such replicates need infinite compute and stay in
the interval (multiplier 0 for the config, ∞ for the reference); a bound that falls among them is
null (unbounded; the report shows ∞). ``compute_to_target`` cells carry the same field.

``method`` of a prediction is ``empirical`` (k <= min n), the estimator that produced it
(``ensemble``, ``beta_binomial``, ``power_law``), ``zero_successes_bound`` (no success at all:
coverage 0, upper bound 3k/(problems·min n)) or ``unavailable`` (coverage null: n = 1 everywhere).
Numbers that cannot exist are null, never NaN.
"""
