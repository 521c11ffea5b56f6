"""The `capguard` command line: one parser for every way capguard is used.

    capguard [--config PATH] [--scenario NAME] [--speed FACTOR] [--theme NAME] [--readonly]
    capguard --headless [--config PATH] [--scenario NAME] [--speed FACTOR] [--journal PATH]
                        [--api HOST:PORT | --no-api] [--notify URL ...]
    capguard --connect URL [--token T]   the console attached to a remote headless guard
    capguard eval FILE            value a JSON snapshot, print JSON
    capguard journal [...]        list, export and verify the journal
    capguard info                 version, configuration in force, paths

Exit codes follow sysexits: 65 bad input data, 78 bad configuration.
Textual is imported only when the console starts, so the other verbs stay light.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_CONFIG = 78

SCENARIOS = ("calm", "demo", "crash")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capguard",
        description="Capital protection and liquidation guard. With no configuration it runs an "
        "embedded simulated market with demo accounts.",
    )
    parser.add_argument("--config", metavar="PATH", help="configuration file (default: see `capguard info`)")
    parser.add_argument("--scenario", choices=SCENARIOS, help="simulator scenario (overrides the config)")
    parser.add_argument(
        "--speed", type=_positive_float, metavar="FACTOR", help="run simulated time FACTOR times faster"
    )
    parser.add_argument("--theme", metavar="NAME", help="console theme: dark, light, high-contrast")
    parser.add_argument("--readonly", action="store_true", help="console without any override key")
    parser.add_argument("--headless", action="store_true", help="run the guard unattended, JSON logs on stderr")
    parser.add_argument("--journal", metavar="PATH", help="journal file (default: see `capguard info`)")
    parser.add_argument(
        "--api", metavar="HOST:PORT", help="headless: serve the API here (default: [api] host and port)"
    )
    parser.add_argument("--no-api", action="store_true", help="headless: no REST/WebSocket API")
    parser.add_argument(
        "--connect", metavar="URL", help="console attached to a remote headless guard (http://HOST:PORT)"
    )
    parser.add_argument("--token", metavar="TOKEN", help="API token for --connect (default: $CAPGUARD_TOKEN)")
    parser.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="URL",
        help="headless: an Apprise URL for every alert (repeatable)",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    ev = verbs.add_parser("eval", help="value a JSON snapshot and print JSON (docs/eval.md)")
    ev.add_argument("file", metavar="FILE", help="snapshot JSON file, or - for standard input")
    verbs.add_parser("info", help="print the version, the configuration in force and the data paths")
    from engine.journal_cli import add_journal_arguments

    jr = verbs.add_parser("journal", help="list, export (table, jsonl, csv) and verify the journal")
    add_journal_arguments(jr)
    return parser


def cmd_eval(path: str) -> int:
    from engine.evaluate import evaluate, load_snapshot
    from engine.model import InputError

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"capguard eval: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return EX_NOINPUT
    try:
        result = evaluate(load_snapshot(text))
    except InputError as exc:
        print(f"capguard eval: invalid snapshot: {exc}", file=sys.stderr)
        return EX_DATAERR
    try:
        sys.stdout.write(json.dumps(result, indent=2, allow_nan=False) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `capguard eval x | head` is fine
        sys.stderr.close()
    return EX_OK


def cmd_info(config_path: str | None) -> int:
    from engine import __version__
    from engine.config import ConfigError, data_dir, find_config, load_config, state_dir

    path, source = find_config(config_path)
    print(f"capguard {__version__}")
    print(f"python     {sys.version.split()[0]}")
    print(f"config     {path} ({source})")
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        print(f"config     INVALID: {exc}")
        return EX_CONFIG
    cfg = loaded.config
    print(
        f"           {len(cfg.instruments)} instruments; simulator scenario {cfg.simulator.scenario}, "
        f"{len(cfg.simulator.accounts)} demo accounts"
    )
    print(f"journal    {state_dir() / 'journal.sqlite3'}")
    print(f"state dir  {state_dir()}")
    print(f"data dir   {data_dir()}")
    return EX_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verb == "eval":
        return cmd_eval(args.file)
    if args.verb == "info":
        return cmd_info(args.config)
    if args.verb == "journal":
        from engine.journal_cli import run_journal

        return run_journal(args)
    if args.connect:
        return run_remote_console(args)
    if args.headless:
        return run_headless(args)
    return run_console(args)


def run_headless(args: argparse.Namespace) -> int:
    import asyncio

    from engine.config import ConfigError, load_config
    from engine.headless import run_headless as run

    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        print(f"capguard: invalid configuration: {exc}", file=sys.stderr)
        return EX_CONFIG
    return asyncio.run(
        run(
            loaded, args.scenario, args.speed or 1.0, args.journal, notify=args.notify, api=args.api, no_api=args.no_api
        )
    )


def run_remote_console(args: argparse.Namespace) -> int:
    import os

    from engine.remote import RemoteGuardView

    try:
        view = RemoteGuardView(args.connect, args.token or os.environ.get("CAPGUARD_TOKEN"))
        operator = view.whoami()
    except Exception as exc:
        print(f"capguard: cannot connect to {args.connect}: {exc}", file=sys.stderr)
        return 69  # EX_UNAVAILABLE
    from capguard_tui.app import CapguardApp

    return int(CapguardApp(view, operator, guard=None, run_guard=False, readonly=args.readonly).run() or 0)


def run_console(args: argparse.Namespace) -> int:
    from engine.config import ConfigError, load_config

    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        print(f"capguard: invalid configuration: {exc}", file=sys.stderr)
        return EX_CONFIG
    from capguard_tui.app import run

    return run(loaded, args)


if __name__ == "__main__":
    sys.exit(main())
