"""`pac data generate|stats|version` and `pac tokenizer train` (App. C.3-C.4)."""

from __future__ import annotations

import argparse
import json
import sys

from pac.cli_args import add_config_args, config_from_args


def _root(args: argparse.Namespace, cfg) -> str:
    return args.root or cfg.data.root


def _cmd_generate(args: argparse.Namespace) -> int:
    from pac.data import store_root
    from pac.data.generate import check_generation, generate_group
    from pac.data.store import StoreError

    cfg = config_from_args(args)
    groups = args.group or [g.name for g in cfg.data.groups if g.source == "sim"]
    if not groups:
        print("pac data generate: no group with source: sim in params", file=sys.stderr)
        return 2
    workers = args.workers or cfg.data.generate_workers
    try:
        check_generation(cfg, groups)  # everything validated before the first episode
        for name in groups:
            res = generate_group(cfg, name, store_root(_root(args, cfg)), workers,
                                 progress=not args.quiet)
            print(
                f"{name}: {res['episodes']} episodes, {res['transitions']} transitions,"
                f" success {100 * res['success_rate']:.1f}%"
            )
    except (StoreError, ValueError) as exc:
        print(f"pac data generate: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    import pandas as pd

    from pac.data import store_root
    from pac.data.store import EpisodeStore, StoreError

    cfg = config_from_args(args)
    try:
        store = EpisodeStore(store_root(_root(args, cfg)), verify=args.verify)
    except StoreError as exc:
        print(f"pac data stats: {exc}", file=sys.stderr)
        return 2
    if not store.shards:
        print(f"pac data stats: no episodes under {store.root}", file=sys.stderr)
        return 2
    weights = {g.name: g.weight for g in cfg.data.groups}
    table = store.summary(weights, cfg.data.trajectory_length, by_task=args.by_task)
    order = {name: i for i, name in enumerate(weights)}  # params order, then other groups
    table = table.sort_values("group", key=lambda c: c.map(lambda g: order.get(g, len(order))),
                              kind="stable")
    if args.json:
        print(table.to_json(orient="records", indent=1))
    else:
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            print(table.to_string(index=False))
        print(f"total: {len(store.episodes)} episodes, {store.num_transitions()} transitions"
              f" in {len(store.shards)} shards" + (" (checksums verified)" if args.verify else ""))
    return 0


def _cmd_version(args: argparse.Namespace) -> int:
    from pac.data.version import dataset_version

    cfg = config_from_args(args)
    print(json.dumps(dataset_version(_root(args, cfg)), indent=1))
    return 0


def _cmd_tokenizer(args: argparse.Namespace) -> int:
    from pac.data import tokenizer_path
    from pac.data.tokenizer import TaskTokenizer, instruction_tasks
    from pac.tasks import TASKS

    cfg = config_from_args(args)
    out = args.out or tokenizer_path(_root(args, cfg))
    try:
        tok = TaskTokenizer.train(out, cfg.data.tokenizer_vocab, cfg.data.tokenizer_type,
                                  tasks=instruction_tasks(cfg),
                                  num_tokens=cfg.model.num_text_tokens)
    except ValueError as exc:
        print(f"pac tokenizer train: {exc}", file=sys.stderr)
        return 2
    if tok.vocab_size > cfg.model.vocab_size:
        print(f"pac tokenizer train: {tok.vocab_size} pieces exceed model.vocab_size="
              f"{cfg.model.vocab_size}", file=sys.stderr)
        return 2
    task = TASKS.resolve(cfg.data.groups[0].tasks[0]).instruction
    ids, mask = tok.encode(task)
    print(f"{out}: {tok.vocab_size} pieces; {task!r} -> {ids[mask].tolist()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="episode store: generate, stats, version")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = dsub.add_parser("generate", help="simulate the params' dataset groups in dm_control")
    add_config_args(p)
    p.add_argument("--group", action="append", default=[], help="only this group (repeatable)")
    p.add_argument("--workers", type=int, default=0, help="processes (data.generate_workers)")
    p.add_argument("--root", default=None, help="data root (default data.root)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_generate)

    p = dsub.add_parser("stats", help="Table-6-like summary per group (pandas)")
    add_config_args(p)
    p.add_argument("--root", default=None, help="data root (default data.root)")
    p.add_argument("--verify", action="store_true", help="check every file's sha256")
    p.add_argument("--by-task", action="store_true", help="one row per group and task")
    p.add_argument("--json", action="store_true", help="print JSON records")
    p.set_defaults(func=_cmd_stats)

    p = dsub.add_parser("version", help="DVC hashes of the data outputs (JSON)")
    add_config_args(p)
    p.add_argument("--root", default=None, help="data root (default data.root)")
    p.set_defaults(func=_cmd_version)

    tok = sub.add_parser("tokenizer", help="SentencePiece task-instruction tokenizer")
    tsub = tok.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    p = tsub.add_parser("train", help="train on the task instructions (data.tokenizer_vocab)")
    add_config_args(p)
    p.add_argument("--root", default=None, help="data root (default data.root)")
    p.add_argument("--out", default=None, help="model path (default DATA_ROOT/tokenizer/spm.model)")
    p.set_defaults(func=_cmd_tokenizer)
