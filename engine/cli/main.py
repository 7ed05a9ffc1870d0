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
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio

from engine.attach.startup import parse_gadgets
from engine.cli.fields import FieldChoice
from engine.cli.metrics import Metrics, serve_metrics
from engine.cli.otlp import OtlpExport
from engine.cli.output import Output
from engine.cli.parser import ATTACH_PRIORITY_ARGS, build_parser
from engine.cli.sections import parse_sort
from engine.cli.table import LiveTable
from engine.engine import Engine, open_engine
from engine.errors import (
    BadInputError,
    EngineError,
    GadgetError,
    GadgetParseError,
    GadgetsFailedError,
    sole_exception,
)
from engine.events.filter import RecordFilter
from engine.gadget.model import Gadget
from engine.gadget.param_values import parse_assignments, resolve_values
from engine.hooks.hookfile import HookFile
from engine.kernel.security import check_all_trusted, require_capabilities
from engine.world.selection import Selection

REFRESH_SECONDS = 0.5


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    """One line per program, then one per parameter, of each gadget; with --json, a list of
    the programs' plans, each with its gadget's parameters (``params``)."""
    plans: list[dict[str, Any]] = []
    lines: list[str] = []
    problems: list[str] = []
    for path in args.gadgets:
        try:
            gadget = Gadget.from_file(path)
        except (GadgetError, GadgetParseError) as exc:
            problems.append(str(exc))
            continue
        params = [p.plan() for p in gadget.params]
        for spec in gadget.programs:
            plan = spec.plan()
            plans.append({"gadget": gadget.name, "path": path, **plan, "params": params})
            opt = " (optional)" if plan["optional"] else ""
            lines.append(
                f"{path}:{plan['line']}: {plan['function']}: {plan['kind']} {plan['target']} "
                f"[{plan['attach']}]{opt}"
            )
        lines.extend(f"{path}:{p.line}: parameter {p.summary()}" for p in gadget.params)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    if args.json:
        json.dump(plans, out, indent=2)
        out.write("\n")
        return 0
    out.writelines(f"{line}\n" for line in lines)
    return 0


def cmd_features(args: argparse.Namespace, out: TextIO) -> int:
    from engine.kernel.features import features_main

    return features_main(as_json=args.json)


@attrs.define
class _Run:
    """What one ``engine run`` saw, for the summary line."""

    output: Output
    started: float = attrs.Factory(time.monotonic)
    stopped: str | None = None
    engine: Engine | None = None

    def summary(self) -> str:
        why = self.stopped or "end"
        text = f"engine: stopped ({why}) after {time.monotonic() - self.started:.1f}s: "
        text += f"{self.output.records} records"
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


async def _run(args: argparse.Namespace, hook_files: Sequence[HookFile], output: Output) -> _Run:
    run = _Run(output)
    with trio.CancelScope() as everything:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, everything, run)
            await _serve(args, hook_files, run, nursery)
            nursery.cancel_scope.cancel()
    return run


async def _serve(
    args: argparse.Namespace, hook_files: Sequence[HookFile], run: _Run, nursery: trio.Nursery
) -> None:
    output = run.output
    metrics = None
    if args.metrics is not None or args.otlp is not None:
        metrics = Metrics()
        output.observers.append(metrics.observe)
    if args.metrics is not None:
        host, port = await nursery.start(serve_metrics, metrics, *args.metrics)
        _progress(f"metrics on http://{_url_host(host)}:{port}/metrics")
    async with contextlib.AsyncExitStack() as stack:
        if metrics is not None and args.otlp is not None:
            export = OtlpExport.start(args.otlp, metrics)
            stack.push_async_callback(export.aclose)
            output.observers.append(export.observe)
            _progress(f"exporting to OTLP {args.otlp.protocol} collector {args.otlp.url}")
        await _run_engine(args, hook_files, run, nursery, metrics)


async def _run_engine(
    args: argparse.Namespace,
    hook_files: Sequence[HookFile],
    run: _Run,
    nursery: trio.Nursery,
    metrics: Metrics | None,
) -> None:
    output = run.output
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
        filter=args.filter,
        params=parse_assignments(args.param),
        padding=output.fields is not None and output.fields.padding,
        attach_nice=ATTACH_PRIORITY_ARGS[args.attach_priority][0],
        attach_realtime=ATTACH_PRIORITY_ARGS[args.attach_priority][1],
    ) as engine:
        run.engine = engine
        if metrics is not None:
            metrics.engine = engine
        _progress(_ready_message(engine, time.monotonic() - compiling))
        for hook_file in hook_files:
            await hook_file.install(engine)
        if args.duration is not None:
            nursery.start_soon(_stop_after, engine, args.duration, run)
        if args.output == "table":
            table = LiveTable(names, sort=output.sort, max_rows=args.max_rows)
            await output.show_table(engine, table)
        else:
            await output.write_json(engine)


async def _stop_after(engine: Engine, seconds: float, run: _Run) -> None:
    await trio.sleep(seconds)
    run.stopped = "duration"
    engine.stop()


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


def _readable_gadgets(paths: Sequence[str]) -> list[Gadget]:
    """The gadgets that parse, for checks before compiling; the others are reported when the
    engine starts, as it does for every gadget that cannot run."""
    return [g for g in parse_gadgets(paths, all_or_nothing=False) if isinstance(g, Gadget)]


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    Selection.parse(args.select, args.exclude, args.host)  # bad input before compiling
    gadgets = _readable_gadgets(args.gadgets)
    RecordFilter.parse(args.filter, gadgets)
    resolve_values(parse_assignments(args.param), gadgets)
    fields = FieldChoice.parse(args.fields, gadgets)
    sort = parse_sort(args.sort, gadgets, padding=fields is not None and fields.padding)
    if not args.allow_untrusted_files:
        check_all_trusted([*args.gadgets, *args.hook])  # before a hook file's code runs
    hook_files = [HookFile.load(path) for path in args.hook]
    require_capabilities()
    if args.output is None:
        args.output = "table" if out.isatty() else "json"
    run = trio.run(_run, args, hook_files, Output(out, fields, sort))
    print(run.summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
