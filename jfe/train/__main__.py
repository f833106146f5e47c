"""``jfe train --config recipes/NAME.yaml [key=value ...]``, also run by the DeepSpeed launcher:

    deepspeed --num_gpus 8 --module jfe.train --config recipes/qwen2vl-7b-stage2-lora.yaml \\
        --deepspeed deepspeed_configs/zero2.json model=PATH output_dir=PATH
"""

from __future__ import annotations

import argparse
import logging
import sys

from jfe.train.config import describe, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jfe train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="recipe YAML")
    parser.add_argument("--deepspeed", help="DeepSpeed JSON config (ZeRO stage etc.)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.add_argument("--help-config", action="store_true", help="list every option with its default")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print what the run will cost (tokens per batch side from the real data, trainable parameters, "
        "an activation-memory estimate per rank) and exit without training",
    )
    parser.add_argument("--plan-batches", type=int, default=8, help="batches --plan samples (default 8)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="options that win over the recipe")
    args = parser.parse_args(argv)
    if args.help_config:
        print(describe())
        return 0
    overrides = list(args.overrides)
    if args.deepspeed:
        overrides.append(f"deepspeed={args.deepspeed}")
    if args.resume:
        overrides.append("resume=true")
    try:
        config = load_config(args.config, overrides)
        config.validate()
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if args.plan:
        from jfe.train.plan import plan

        print(plan(config, args.plan_batches).report())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from jfe.train.trainer import run

    final = run(config)
    print(f"final model: {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
