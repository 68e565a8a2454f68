"""`pac figures`: the pipeline's figures as PNG files (DVC `plots:`, MLflow artefacts).

    pac figures                                  # runs/figures/*.png from runs/{pretrain,eval,rlft}
    dvc plots show                               # renders them (dvc.yaml `figures` stage)
"""

from __future__ import annotations

import argparse

from pac.cli import add_config_args, config_from_args


def _cmd_figures(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from pac.pipeline import output_figures

    written = output_figures(cfg, args.out, args.train_dir, args.eval_dir, args.rlft_dir)
    for name, path in written.items():
        print(f"{name}: {path}")
    if not written:
        print("pac figures: no training run, evaluation or RLFT rounds found; nothing drawn")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "figures",
        help="draw learning curves (per eq. 11 term), success (Wilson), RLFT rounds as PNGs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--out", default="runs/figures", help="output folder (default: runs/figures)")
    p.add_argument("--train-dir", default=None, help="training folder (default: train.out_dir)")
    p.add_argument("--eval-dir", default=None, help="evaluation folder (default: eval.out_dir)")
    p.add_argument("--rlft-dir", default=None, help="RLFT folder (default: rlft.out_dir)")
    p.set_defaults(func=_cmd_figures)
