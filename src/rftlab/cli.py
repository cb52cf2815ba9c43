"""The `rftlab` command. Start-up stays light: each command imports its stage when it runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rftlab import __version__

EXIT_BAD_INPUT = 2


def _reject(args: argparse.Namespace) -> int:
    from rftlab.data import read_problems, write_json, write_jsonl
    from rftlab.reject import reject, statistics, summary

    problems = read_problems(args.train)
    result = reject(
        problems,
        args.samples,
        dedup=not args.no_dedup,
        extractor=args.extractor,
        show_progress=False if args.quiet else None,
    )
    stats = statistics(result)
    lines = write_jsonl(args.out, result.records())
    if args.stats:
        write_json(args.stats, stats)
    if not args.quiet:
        print(summary(stats))
        print(f"wrote {args.out} ({lines:,} lines)" + (f" and {args.stats}" if args.stats else ""))
    return 0


def _add_reject(commands: argparse._SubParsersAction) -> None:
    from rftlab.answers import DEFAULT_EXTRACTOR, EXTRACTORS

    parser = commands.add_parser(
        "reject",
        help="rejection sampling: keep correct, checked, distinct paths",
        description=(
            "Keep the sampled paths whose answer is right and whose every <<lhs=rhs>> annotation checks; "
            "keep one path per equation list (the farthest by edit distance, the paper's Algorithm 1). "
            "Several sample files are pooled (the union of models) before selection."
        ),
    )
    parser.add_argument("samples", nargs="+", metavar="SAMPLES.jsonl", help="sample files, in sampling order")
    parser.add_argument("--train", required=True, metavar="TRAIN.jsonl", help="the problems that were sampled")
    parser.add_argument("--out", required=True, metavar="RFT.jsonl", help="RFT data: gold, then selected paths")
    parser.add_argument("--stats", metavar="STATS.json", help="also write the statistics as JSON")
    parser.add_argument("--no-dedup", action="store_true", help="keep every correct, checked path")
    parser.add_argument(
        "--extractor", choices=sorted(EXTRACTORS), default=DEFAULT_EXTRACTOR, help="final-answer extractor"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    parser.set_defaults(handler=_reject)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rftlab",
        description="Rejection-sampling fine-tuning (RFT) for math word problems, and its scaling studies.",
    )
    parser.add_argument("--version", action="version", version=f"rftlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_reject(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; exit status 0 on success, 2 on bad input (the message names file and line)."""
    args = build_parser().parse_args(argv)
    from rftlab.data import DataError

    try:
        return args.handler(args)
    except DataError as error:
        print(f"rftlab {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"rftlab {args.command}: interrupted", file=sys.stderr)
        return 130
