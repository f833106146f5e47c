"""Write a randomly initialised tiny Qwen2-VL-family checkpoint folder, offline.

python tools/make_tiny_model.py OUT_DIR [--arch qwen2_vl|qwen2_5_vl|qwen3_vl] [--seed N] [--hidden H] [--layers L]
    [--vision-hidden V]
"""

import argparse

from jfe.tiny import ARCHS, TINY_SHAPE, build_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--arch", choices=ARCHS, default="qwen2_vl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--hidden", type=int, default=TINY_SHAPE["hidden"], help="hidden size of the LLM (and of the vision tower)"
    )
    parser.add_argument("--layers", type=int, default=TINY_SHAPE["layers"], help="number of LLM layers")
    parser.add_argument("--vision-hidden", type=int, help="width of the vision tower (default: --hidden)")
    args = parser.parse_args()
    path = build_tiny_model(
        args.out_dir,
        arch=args.arch,
        seed=args.seed,
        hidden=args.hidden,
        layers=args.layers,
        vision_hidden=args.vision_hidden,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
