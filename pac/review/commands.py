"""`pac figures` and `pac review`: what a reviewer looks at.

    pac figures                 # runs/figures/*.png from the newest outputs: the newest flow
                                # run's runs/flow/<id>/{pretrain,eval,rlft} or runs/{...}
    dvc plots show              # renders runs/figures (a flow run's end writes them there too)
    pac review --out DIR        # the newest flow run in the MLflow UI (headless Chromium):
                                # checks what the pages show, saves a screenshot of each
"""

from __future__ import annotations

import argparse
import sys

from pac.cli_args import add_config_args, config_from_args


def _cmd_figures(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from pac.pipeline import output_figures
    from pac.review.outputs import looked_in, output_dirs

    dirs = output_dirs(cfg, args.train_dir, args.eval_dir, args.rlft_dir)
    written = output_figures(cfg, args.out, dirs.train, dirs.eval, dirs.rlft)
    if not written:
        print(f"pac figures: nothing to draw: {looked_in(dirs)}; pass --train-dir, --eval-dir"
              " or --rlft-dir (a flow run's are runs/flow/<id>/pretrain, eval, rlft)",
              file=sys.stderr)
        return 1
    print(f"pac figures: from {dirs.origin} ({dirs.train}, {dirs.eval}, {dirs.rlft})")
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from pac.review.browser import review_screenshots

    try:
        seen = review_screenshots(cfg, args.out)
    except (AssertionError, FileNotFoundError, LookupError, RuntimeError, TimeoutError) as exc:
        print(f"pac review: {exc}", file=sys.stderr)
        return 1
    print(f"flow run {seen['run_id']}: champion v{seen['champion_version']},"
          f" success {seen['success_rate']:.1f}%")
    for name, path in seen["screenshots"].items():
        print(f"{name}: {path}")
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
    newest = "the newest of the newest flow run's runs/flow/<id>/{} and {}"
    p.add_argument("--train-dir", default=None,
                   help="training folder (default: " + newest.format("pretrain", "train.out_dir")
                   + ")")
    p.add_argument("--eval-dir", default=None,
                   help="evaluation folder (default: " + newest.format("eval", "eval.out_dir")
                   + ")")
    p.add_argument("--rlft-dir", default=None,
                   help="RLFT folder (default: " + newest.format("rlft", "rlft.out_dir") + ")")
    p.set_defaults(func=_cmd_figures)

    p = sub.add_parser(
        "review",
        help="open the newest flow run and the registered model in the MLflow UI (headless"
        " Chromium), check them and save screenshots",
        description="Starts `mlflow server` on 127.0.0.1 over tracking.uri, loads the parent run"
        " page, its success figure, the registered model and the champion version in Debian's"
        " chromium, checks that the headline metrics, the champion version and the figure are"
        " shown, and writes one PNG per page into --out. Stops the server by its process id.",
    )
    add_config_args(p)
    p.add_argument("--out", default="runs/review", help="screenshot folder (default: runs/review)")
    p.set_defaults(func=_cmd_review)
