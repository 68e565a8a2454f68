"""Accuracy and cost of `pac scaling fit` on synthetic ladders with known exponents.

    python benchmarks/bench_scaling.py [--seeds 4]

For ladders of 12, 6 and 5 model sizes (pac.scaling.laws.synthetic_ladder: a = 0.920, b = 0.266,
12 or, as in App. E.1, 6 evaluations per run, noise sd 0.005 or 0.01) and each seed: a from
the 100 envelope points with the default window, a through the envelope's step edges, and b;
then the wall time of the whole fit
(profiles, envelope, eq. 4, 200 bootstrap draws) for two families of 12 runs, without figures.
Results go into BENCHMARKS.md and docs/scaling.md by hand.
"""

from __future__ import annotations

import argparse
import time

from pac.scaling.laws import fit_scaling, synthetic_ladder

#: (sizes, size ratio, evaluations per run, noise sd); 6 evaluations per run as in App. E.1
LADDERS = [(12, 1.35, 12, 0.005), (6, 2.0, 12, 0.005), (5, 2.2, 12, 0.005),
           (12, 1.35, 6, 0.005), (12, 1.35, 6, 0.01)]


def _exp(law) -> str:
    return "-" if law is None else f"{law.exponent:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    print("| ladder | a (envelope) | a (step edges) | b (envelope) |")
    print("|---|---|---|---|")
    for sizes, ratio, points, noise in LADDERS:
        cols = [[], [], []]
        for seed in range(args.seeds):
            runs, _ = synthetic_ladder(sizes=sizes, ratio=ratio, seed=seed, points=points,
                                       noise=noise)
            fam = fit_scaling(runs, draws=0).families["pac"]
            for col, law in zip(cols, (fam.n_opt, fam.n_opt_crossings, fam.d_opt)):
                col.append(_exp(law))
        label = f"{sizes} sizes x{ratio}, {points} evaluations, noise {noise}"
        print(f"| {label} | " + " | ".join(", ".join(c) for c in cols) + " |")
    runs = synthetic_ladder(seed=0)[0] + synthetic_ladder(a=0.828, seed=1, family="bc_q")[0]
    start = time.perf_counter()
    fit_scaling(runs, draws=200)
    print(f"\nfit of {len(runs)} runs in two families, 200 bootstrap draws:"
          f" {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
