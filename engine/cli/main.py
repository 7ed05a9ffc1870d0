"""The command line: ``engine run``, ``engine check``, ``engine features``.

Exit codes: 0 success (also a run stopped by Ctrl-C, SIGTERM or --duration), 2 bad input
(gadget, section names, selection, hook file, metrics address, compile or verifier errors,
a gadget or hook file that a user other than root could change), 1 anything else the engine
reports (missing capabilities among them: checked before compiling), 130 interrupted before
the engine could stop cleanly.
User mistakes are one clear message, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio

from engine.cli import jsonlines
from engine.cli.metrics import Metrics, serve_metrics
from engine.cli.parser import build_parser
from engine.cli.table import HIDE_CURSOR, SHOW_CURSOR, LiveTable
from engine.engine import Engine, open_engine
from engine.errors import (
    BadInputError,
    EngineError,
    GadgetError,
    GadgetParseError,
    GadgetsFailedError,
    sole_exception,
)
from engine.gadget.model import Gadget
from engine.hooks.hookfile import HookFile
from engine.kernel.security import check_all_trusted, require_capabilities
from engine.world.selection import Selection

REFRESH_SECONDS = 0.5


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
    from engine.kernel.features import features_main

    return features_main(as_json=args.json)


@attrs.define
class _Run:
    """What one ``engine run`` saw, for the summary line."""

    started: float = attrs.Factory(time.monotonic)
    stopped: str | None = None
    records: int = 0
    engine: Engine | None = None

    def summary(self) -> str:
        why = self.stopped or "end"
        text = f"engine: stopped ({why}) after {time.monotonic() - self.started:.1f}s: "
        text += f"{self.records} records"
        if self.engine is not None:
            stats = self.engine.stats
            failed = sum(h.failed for h in self.engine.hook_stats.values())
            text += f", {stats.delivered} events delivered, {stats.lost} lost"
            if failed:
                text += f", {failed} hook failures"
        return text


async def _stop_on_signals(scope: trio.CancelScope, run: _Run) -> None:
    """The first signal stops the engine gracefully (its last records are still written);
    during start-up, or on a second signal, everything is cancelled at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if run.stopped is None and run.engine is not None:
                run.stopped = signal.Signals(signum).name
                run.engine.stop()
                continue
            run.stopped = run.stopped or signal.Signals(signum).name
            scope.cancel()
            return


def _progress(message: str) -> None:
    print(f"engine: {message}", file=sys.stderr, flush=True)


def _ready_message(engine: Engine, seconds: float) -> str:
    static = [p for g in engine.gadgets for p in g.programs.values() if not p.spec.per_netns]
    per_netns = sum(len(g.programs) for g in engine.gadgets) - len(static)
    text = f"attached {len(static)} program{'' if len(static) == 1 else 's'} in {seconds:.1f} s"
    if per_netns:
        text += f"; {per_netns} more attach in each selected container's netns"
    if engine.failed:
        text += f"; failed: {', '.join(f.gadget for f in engine.failed)}"
    return text


async def _run(args: argparse.Namespace, out: TextIO, hook_files: Sequence[HookFile]) -> _Run:
    run = _Run()
    with trio.CancelScope() as everything:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, everything, run)
            await _serve(args, out, hook_files, run, nursery)
            nursery.cancel_scope.cancel()
    return run


async def _serve(
    args: argparse.Namespace,
    out: TextIO,
    hook_files: Sequence[HookFile],
    run: _Run,
    nursery: trio.Nursery,
) -> None:
    metrics = None
    if args.metrics is not None:
        metrics = Metrics()
        host, port = await nursery.start(serve_metrics, metrics, *args.metrics)
        _progress(f"metrics on http://{_url_host(host)}:{port}/metrics")
    names = ", ".join(Path(g).name for g in args.gadgets)
    _progress(f"compiling {names}\u2026")
    compiling = time.monotonic()
    async with open_engine(
        *args.gadgets,
        select=args.select,
        exclude=args.exclude,
        host=args.host,
        trust_files=args.allow_untrusted_files,
        all_or_nothing=args.all_or_nothing,
        maps=args.maps,
        maps_clear=args.maps_clear,
        docker_socket=args.docker_socket,
        containerd_socket=args.containerd_socket,
        podman_socket=args.podman_socket,
    ) as engine:
        run.engine = engine
        if metrics is not None:
            metrics.engine = engine
        # What start-up made (bcc, BTF, the gadgets) lives as long as the process: out of the
        # collector's sight, a full collection no longer stalls attaches for 80 ms.
        gc.freeze()
        _progress(_ready_message(engine, time.monotonic() - compiling))
        for hook_file in hook_files:
            await hook_file.install(engine)
        if args.duration is not None:
            nursery.start_soon(_stop_after, engine, args.duration, run)
        if args.output == "table":
            await _show_table(engine, out, run, metrics, names)
        else:
            await _write_json(engine, out, run, metrics)


async def _write_json(engine: Engine, out: TextIO, run: _Run, metrics: Metrics | None) -> None:
    # A run of records (everything waiting) becomes one buffer and one write.
    write = _binary_writer(out)
    async for records in engine.runs():
        run.records += len(records)
        if metrics is not None:
            for record in records:
                metrics.observe(record.to_json())
        write(jsonlines.encode(records))


def _binary_writer(out: TextIO) -> Callable[[bytes], None]:
    binary = getattr(out, "buffer", None)
    out.flush()

    def write(data: bytes) -> None:
        if binary is None:  # a text-only stream
            out.write(data.decode())
            out.flush()
            return
        binary.write(data)
        binary.flush()

    return write


async def _show_table(
    engine: Engine, out: TextIO, run: _Run, metrics: Metrics | None, title: str
) -> None:
    table = LiveTable(title)
    out.write(HIDE_CURSOR)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_redraw, table, out)
            async for record in engine.events():
                data = record.to_json()
                run.records += 1
                table.observe(data)
                if metrics is not None:
                    metrics.observe(data)
            nursery.cancel_scope.cancel()
    finally:
        # The last view stays on screen above the summary line.
        table.draw(out, *_terminal_size(out))
        out.write(SHOW_CURSOR)
        out.flush()


async def _redraw(table: LiveTable, out: TextIO) -> None:
    while True:
        table.draw(out, *_terminal_size(out))
        await trio.sleep(REFRESH_SECONDS)


async def _stop_after(engine: Engine, seconds: float, run: _Run) -> None:
    await trio.sleep(seconds)
    run.stopped = "duration"
    engine.stop()


def _terminal_size(out: TextIO) -> tuple[int, int]:
    # The terminal's own size first: COLUMNS/LINES in the environment are often stale.
    try:
        size = os.get_terminal_size(out.fileno())
    except (OSError, ValueError):
        size = shutil.get_terminal_size()
    return size.columns, size.lines


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _silence_stdout() -> None:
    # The reader went away (``| head``): later writes and the interpreter's final flush
    # would fail again, so stdout goes to /dev/null from here on.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


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
        return cmd_run(args, out)
    except BaseException as raised:
        exc = sole_exception(raised)
        if isinstance(exc, BadInputError) or (
            isinstance(exc, GadgetsFailedError)
            and all(isinstance(e, BadInputError) for e in exc.errors)
        ):
            print(f"engine: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, EngineError):
            print(f"engine: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, BrokenPipeError):
            _silence_stdout()
            return 0
        if isinstance(exc, KeyboardInterrupt):
            print("engine: interrupted", file=sys.stderr)
            return 130
        raise


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    Selection.parse(args.select, args.exclude, args.host)  # bad input before compiling
    if not args.allow_untrusted_files:
        check_all_trusted([*args.gadgets, *args.hook])  # before a hook file's code runs
    hook_files = [HookFile.load(path) for path in args.hook]
    require_capabilities()
    if args.output is None:
        args.output = "table" if out.isatty() else "json"
    run = trio.run(_run, args, out, hook_files)
    print(run.summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
