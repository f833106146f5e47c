"""Build the handwritten-digits retrieval benchmark in M-BEIR layout, offline, from scikit-learn's digits.

python tools/make_digits_mbeir.py OUT_DIR [--seed N] [--collapse-prone [P]]

--collapse-prone builds the variant where visual modality collapse pays in training: in the train
split of digits_it2t the colour word names the digit with probability P (default 0.9; ten colours,
one per digit), while val and test pair every image with every colour, so only the image tells the
digit there (``builtin:digits-collapse``).
"""

import argparse

from jfe.benchmarks.digits import DEFAULT_SHORTCUT, build_digits_mbeir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0, help="picks the query subsets and paraphrases")
    parser.add_argument(
        "--collapse-prone",
        type=float,
        nargs="?",
        const=DEFAULT_SHORTCUT,
        default=0.0,
        metavar="P",
        help=f"train colour words follow the digit with probability P (default {DEFAULT_SHORTCUT})",
    )
    args = parser.parse_args()
    path = build_digits_mbeir(args.out_dir, seed=args.seed, shortcut=args.collapse_prone)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
