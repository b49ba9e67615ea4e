"""Fit time and peak memory of the BTYD models on a simulated base of 1M customers.

Usage::

    .venv/bin/python benchmarks/bench_btyd.py [--customers 1000000] [--seed 7]

Simulates, in each child, N customers with CDNOW-like parameters (BG/NBD r=0.243,
alpha=4.414, a=0.793, b=2.426; Pareto/NBD r=0.553, alpha=10.578, s=0.606, beta=11.669;
Gamma-Gamma p=6.25, q=3.74, gamma=15.44) whose first purchase falls uniformly in a
two-year window, times in weeks rounded down to whole days as in a daily log. Then fits,
each in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own:

- ``bgnbd`` / ``pareto_nbd`` / ``gamma_gamma`` on the N customers; the BG/NBD and
  Pareto/NBD fits collapse identical (x, t_x, T) rows into weights themselves, the
  ``distinct`` column says how many remain;
- ``bgnbd/continuous`` / ``pareto_nbd/continuous``: the same with times not rounded, the
  worst case where every row is distinct.

Wall seconds cover the fit only (the simulation is not timed but counts in the peak RSS);
``tracemalloc peak`` is the largest live NumPy/Python allocation during the fit. The
1-minute load average before and after each child is printed beside its figures, since
other jobs on the 2-core machine skew them. Each fit must land within 10% of the
simulated r and alpha (p and q for Gamma-Gamma): the benchmark exits 1 when not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

METHODS = ("bgnbd", "pareto_nbd", "gamma_gamma", "bgnbd/continuous", "pareto_nbd/continuous")
BG = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PNBD = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
GG = {"p": 6.25, "q": 3.74, "v": 15.44}


def _run_one(method: str, customers: int, seed: int) -> dict[str, object]:
    """Runs in the child process: simulate, time one fit, report JSON on stdout."""
    import numpy as np

    from churnlens.models import btyd, pareto_nbd, spend

    rng = np.random.default_rng(seed)
    continuous = method.endswith("/continuous")
    T = rng.uniform(1 / 7, 104, customers)
    T = T if continuous else np.ceil(T * 7) / 7  # 1 to 728 days, in weeks
    if method.startswith("bgnbd") or method == "gamma_gamma":
        x, t_x = btyd.simulate_bgnbd(*BG.values(), T, rng)
        truth = BG
    else:
        x, t_x = pareto_nbd.simulate_pareto_nbd(*PNBD.values(), T, rng)
        truth = PNBD
    t_x = t_x if continuous else np.floor(t_x * 7) / 7
    m_x = spend.simulate_gamma_gamma(*GG.values(), x, rng) if method == "gamma_gamma" else None
    rows = int((x > 0).sum()) if method == "gamma_gamma" else btyd.compress(x, t_x, T)[0].size

    tracemalloc.start()
    began = time.perf_counter()
    if method == "gamma_gamma":
        model = spend.fit_gamma_gamma(x, m_x)
        truth = GG
    else:
        fit = btyd.fit_bgnbd if method.startswith("bgnbd") else pareto_nbd.fit_pareto_nbd
        model = fit(x, t_x, T)
    seconds = time.perf_counter() - began
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    params = {k: v for k, v in model.to_dict().items() if k not in ("log_likelihood", "n")}
    checked = list(params)[:2]
    ok = all(abs(params[k] / truth[k] - 1) < 0.10 for k in checked)
    return {
        "seconds": seconds,
        "rows": rows,
        "customers": model.n,
        "peak_bytes": peak,
        "traced_bytes": traced,
        "params": params,
        "ok": ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers to simulate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--run", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run:
        print(json.dumps(_run_one(args.run, args.customers, args.seed)))
        return

    results = {}
    for method in args.methods:
        before = os.getloadavg()[0]
        cmd = [sys.executable, __file__, "--run", method, "--customers", str(args.customers)]
        out = subprocess.run(
            [*cmd, "--seed", str(args.seed)], check=True, capture_output=True, text=True
        )
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        results[method]["load"] = (before, os.getloadavg()[0])
        print(f"  {method} done in {results[method]['seconds']:.1f} s", file=sys.stderr)

    print(f"\nBTYD fits on {args.customers:,} simulated customers (seed {args.seed})")
    print(
        f"{'method':<22} {'customers':>10} {'distinct':>10} {'fit s':>7} {'peak RSS':>9} "
        f"{'traced':>9} "
        f"{'load':>11}  parameters"
    )
    failed = []
    for method, r in results.items():
        params = ", ".join(f"{k}={v:.4g}" for k, v in r["params"].items())
        load = "{:.1f}->{:.1f}".format(*r["load"])
        print(
            f"{method:<22} {r['customers']:>10,} {r['rows']:>10,} {r['seconds']:>7.2f} "
            f"{r['peak_bytes'] / 2**30:>5.2f} GiB {r['traced_bytes'] / 2**30:>5.2f} GiB "
            f"{load:>11}  {params}"
        )
        if not r["ok"]:
            failed.append(method)
    if failed:
        print(f"parameters off by more than 10%: {failed}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
