"""How well a raw-pixel classifier tells the composed-image targets of the digits benchmark apart.

python tools/digits_ceiling.py [--split test|val] [--json OUT]

``digits_it2i`` asks for a digit under a transform, among every variant of every digit by other
writers, and for symmetric digits some variants look alike (a 0 turned by 180 degrees is nearly a
0 mirrored). This trains an RBF SVM on the train writers' 8x8 grids under every variant (40
classes: digit x variant) and reports how often it names both right on the held-out writers of
``--split``: over all grids, and per digit over the rotated and mirrored ones, the two transforms
a symmetric digit can hide. It is a reference point for it2i Hit@1, not a bound on it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.svm import SVC

from jfe.benchmarks.digits import SPLIT_WRITERS, VARIANTS, DigitsSource, transform_digit


def _grids(src: DigitsSource, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every sample of ``split`` under every variant: flat grids, digits and variant indices."""
    samples = src.samples(SPLIT_WRITERS[split])
    grids = [transform_digit(src.images[s], v).ravel() for s in samples for v in VARIANTS]
    digits = np.repeat(src.digits[samples], len(VARIANTS))
    variants = np.tile(np.arange(len(VARIANTS)), len(samples))
    return np.asarray(grids, dtype=np.float64), digits, variants


def variant_accuracy(split: str = "test") -> dict:
    """Held-out accuracy of a raw-pixel SVM at naming (digit, variant), overall and per digit."""
    src = DigitsSource.load()
    x, digits, variants = _grids(src, "train")
    svm = SVC(C=10.0, gamma="scale").fit(x, digits * len(VARIANTS) + variants)
    x, digits, variants = _grids(src, split)
    predicted = svm.predict(x)
    right = predicted == digits * len(VARIANTS) + variants
    hidden = np.isin(variants, [VARIANTS.index("rotated"), VARIANTS.index("mirrored")])
    return {
        "split": split,
        "all": float(right.mean()),
        "variant_only": {
            v: float((predicted[variants == i] % len(VARIANTS) == i).mean()) for i, v in enumerate(VARIANTS)
        },
        "rotated_or_mirrored_by_digit": {int(d): float(right[hidden & (digits == d)].mean()) for d in range(10)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = variant_accuracy(args.split)
    print(f"raw-pixel SVM, {args.split} writers: digit and variant both right {result['all']:.3f}")
    print("| digit | rotated or mirrored, both right |\n|---|---:|")
    for digit, accuracy in result["rotated_or_mirrored_by_digit"].items():
        print(f"| {digit} | {accuracy:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
