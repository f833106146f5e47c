"""Build the handwritten-digits retrieval benchmark in M-BEIR layout, offline, from scikit-learn's digits.

python tools/make_digits_mbeir.py OUT_DIR [--seed N]
"""

import argparse

from jfe.benchmarks.digits import build_digits_mbeir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0, help="picks the query subsets and paraphrases")
    args = parser.parse_args()
    path = build_digits_mbeir(args.out_dir, seed=args.seed)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
