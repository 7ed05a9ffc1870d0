"""The command line: ``engine run``, ``engine check``, ``engine features``.

Exit codes: 0 success (also a run stopped by Ctrl-C, SIGTERM or --duration), 2 bad input
(gadget, section names, selection, compile or verifier errors), 1 anything else the engine
reports. User mistakes are one clear message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import trio

from engine.engine import Engine, open_engine
from engine.errors import (
    CompileError,
    EngineError,
    GadgetError,
    GadgetParseError,
    SectionError,
    SelectionError,
    TargetNotFoundError,
    UnsupportedProgramError,
    VerifierError,
)
from engine.gadget import Gadget

BAD_INPUT = (
    CompileError,
    GadgetError,
    GadgetParseError,
    SectionError,
    SelectionError,
    TargetNotFoundError,
    UnsupportedProgramError,
    VerifierError,
)

log = logging.getLogger("engine")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine", description="Container-aware eBPF tracing with bcc gadgets."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="load gadgets, attach them and stream their records")
    run.add_argument("gadgets", nargs="+", metavar="GADGET.c")
    run.add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after this many seconds"
    )
    run.add_argument(
        "--output",
        choices=["json"],
        default="json",
        help="json: one JSON object per line (the default)",
    )

    check = sub.add_parser("check", help="print the plan of a gadget without loading anything")
    check.add_argument("gadgets", nargs="+", metavar="GADGET.c")
    check.add_argument("--json", action="store_true", help="print a JSON list")

    features = sub.add_parser("features", help="which kinds of program this kernel can run")
    features.add_argument("--json", action="store_true", help="print JSON")
    return parser


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    plans: list[dict[str, Any]] = []
    problems: list[str] = []
    for path in args.gadgets:
        try:
            gadget = Gadget.from_file(path)
        except (GadgetError, GadgetParseError) as exc:
            problems.append(str(exc))
            continue
        for spec in gadget.programs:
            plans.append({"gadget": gadget.name, "path": path, **spec.plan()})
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    if args.json:
        json.dump(plans, out, indent=2)
        out.write("\n")
        return 0
    for p in plans:
        opt = " (optional)" if p["optional"] else ""
        out.write(
            f"{p['path']}:{p['line']}: {p['function']}: {p['kind']} {p['target']} "
            f"[{p['attach']}]{opt}\n"
        )
    return 0


def cmd_features(args: argparse.Namespace, out: TextIO) -> int:
    from engine.features import features_main

    return features_main(as_json=args.json)


async def _stop_on_signals(engine: Engine, stopped: list[str]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            stopped.append(signal.Signals(signum).name)
            engine.stop()
            return


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    started = time.monotonic()
    stopped: list[str] = []
    count = 0
    async with open_engine(*args.gadgets) as engine, trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signals, engine, stopped)
        if args.duration is not None:
            nursery.start_soon(_stop_after, engine, args.duration)
        async for record in engine.events():
            out.write(json.dumps(record.to_json(), default=str) + "\n")
            count += 1
            if engine.pending() == 0:
                out.flush()
        nursery.cancel_scope.cancel()
    out.flush()
    why = stopped[0] if stopped else ("duration" if args.duration is not None else "end")
    print(
        f"engine: stopped ({why}) after {time.monotonic() - started:.1f}s: "
        f"{count} records, {engine.stats.delivered} events delivered, {engine.stats.lost} lost",
        file=sys.stderr,
    )
    return 0


async def _stop_after(engine: Engine, seconds: float) -> None:
    await trio.sleep(seconds)
    engine.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="engine: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    out = sys.stdout
    try:
        if args.command == "check":
            return cmd_check(args, out)
        if args.command == "features":
            return cmd_features(args, out)
        return trio.run(_run, args, out)
    except BAD_INPUT as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
