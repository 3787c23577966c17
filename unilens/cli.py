"""The `unilens` command: one subcommand per job. User mistakes print one `error:` line and exit with code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from unilens.errors import UnilensError


def _data_make(args: argparse.Namespace) -> None:
    from tasks.dataset import DataConfig, make_dataset
    from unilens.config import load_config

    cfg = load_config(DataConfig, args.config, section="data" if args.section else None)
    if args.seed is not None:
        cfg.seed = args.seed
    out = make_dataset(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"dataset written to {out} (manifest.json, contact_sheet.png)")


def _data_show(args: argparse.Namespace) -> None:
    import json

    from tasks.records import load_dataset

    ds = load_dataset(args.folder)
    m = ds.manifest
    print(json.dumps({"seed": m["seed"], "counts": m["counts"], "content_hash": m["content_hash"]}, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unilens",
        description="Does knowledge learned from image generation reach understanding in a unified VLM, and where?",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="make and inspect synthetic smartwatch datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    make = data_sub.add_parser("make", help="render a dataset folder from a data config")
    make.add_argument("config", help="YAML data config (see configs/data/)")
    make.add_argument("--out", required=True, help="dataset folder to create")
    make.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    make.add_argument("--seed", type=int, default=None, help="override the config's seed")
    make.add_argument("--section", action="store_true", help="read the config's 'data:' section")
    make.add_argument("--quiet", action="store_true", help="no progress bar")
    make.set_defaults(func=_data_make)
    show = data_sub.add_parser("show", help="print a dataset's counts and content hash")
    show.add_argument("folder")
    show.set_defaults(func=_data_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except UnilensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
