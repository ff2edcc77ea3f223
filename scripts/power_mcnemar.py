"""How many test questions a Hit@k comparison needs (not a pipeline stage).

The power of the exact McNemar test that eval runs (two-sided, alpha 0.05): the chance that a true effect of
`gain` questions improved and `loss` questions worsened per question (shares of the test set) shows up as
p < alpha on n paired test questions. Exact: binomial enumeration over the number of discordant questions and
the gained share among them, no normal approximation.

    python scripts/power_mcnemar.py --gain 0.228 --loss 0.123 --n 57,114,200,413
"""

import argparse

from scipy.stats import binom, binomtest


def mcnemar_power(n: int, gain: float, loss: float, alpha: float = 0.05) -> float:
    """P(exact McNemar p < alpha, in the gain direction) for n questions; gain + loss <= 1."""
    discordant = gain + loss
    if discordant == 0:
        return 0.0
    share = gain / discordant
    power = 0.0
    for d in range(1, n + 1):
        p_d = binom.pmf(d, n, discordant)
        if p_d < 1e-12:
            continue
        # the smallest number of gains among d discordant questions that is significant
        for g in range(d // 2 + 1, d + 1):
            if binomtest(g, d, 0.5).pvalue < alpha:
                power += p_d * binom.sf(g - 1, d, share)
                break
    return power


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gain", type=float, required=True, help="share of questions the new arm gains")
    ap.add_argument("--loss", type=float, required=True, help="share of questions it loses")
    ap.add_argument("--n", default="57,114,200,413", help="test-set sizes, comma-separated")
    ap.add_argument("--alpha", type=float, default=0.05)
    args = ap.parse_args()
    for n in (int(x) for x in args.n.split(",")):
        print(f"n={n}: power {mcnemar_power(n, args.gain, args.loss, args.alpha):.2f}")


if __name__ == "__main__":
    main()
