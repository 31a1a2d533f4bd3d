"""What every `jobs/*.py` entry point shares: arguments, config, logging and exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from recsys.config import Config, ConfigError, load_config
from recsys.endpoints import ServiceUnavailable

EXIT_CONFIG = 2
EXIT_SERVICE = 3
EXIT_QUALITY = 4  # a quality gate failed (too much quarantined)
EXIT_MODEL = 5  # a model or a publish is not there or not right; nothing changed

JobMain = Callable[[Config, argparse.Namespace], "int | None"]


def job_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every job shares (`--env`, `--config`, `--set`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--env", help="use conf/<env>.yaml (default: $RECSYS_ENV, else local)")
    parser.add_argument("--config", help="a config file to use instead of conf/<env>.yaml")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config key (repeatable; wins over the file and the environment)",
    )
    return parser


def utc_time(text: str) -> datetime:
    """An ISO-8601 time argument (`--now`, `--as-of`) as an aware UTC datetime. A time without an
    offset is UTC, like every time in recsys, never the zone of the machine the job runs on.
    """
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r} (e.g. 2026-10-02T06:00:00Z)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def run_job(main: JobMain, parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load config, run `main`; known failures become one line and an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("py4j", "httpx"):  # a line per gateway call or HTTP request
        logging.getLogger(chatty).setLevel(logging.WARNING)
    args = parser.parse_args(argv)
    os.umask(0o077)  # what jobs write (landing files, reports, the local lake) is for their owner only
    try:
        cfg = load_config(args.env, args.set, config_file=args.config)
        return main(cfg, args) or 0
    except ConfigError as err:
        print(f"recsys: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except ServiceUnavailable as err:
        print(f"recsys: {err}", file=sys.stderr)
        return EXIT_SERVICE
