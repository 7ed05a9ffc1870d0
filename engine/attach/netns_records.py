"""The records a netns task writes: each attachment's ``attached``/``detached``, each failure's
``attach_failed``, and its iterators' events, named as the world knows the netns by then, and
held while the netns is pending identification (engine/world/held.py) so that they keep their
order and name its container when released.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from engine.bcc.loader import LoadedGadget, LoadedProgram
from engine.errors import AttachError
from engine.netns import NetnsId
from engine.records import AttachFailed, Event, ProgramAttached, Record
from engine.world.held import Held
from engine.world.state import NetnsTarget, World

Emit = Callable[[Record], object]


@attrs.define
class NetnsState:
    """One traced netns; ``target`` follows the world (its containers, once identified)."""

    target: NetnsTarget
    scope: trio.CancelScope  # its task's stop handle
    seen_at: float
    attached_at: float | None = None
    host_ifindexes: tuple[int, ...] = ()


@attrs.frozen
class NetnsRecords:
    loaded: list[LoadedGadget]
    emit: Emit
    world: World
    held: Held | None = None  # where records of netns pending identification wait

    def container_name(self, target: NetnsTarget) -> str | None:
        if target.containers:
            return target.containers[0].name
        # A speculative target is not updated when its netns is identified: a record made
        # after that (not held, so never named on release) asks the world whose it is.
        known = self.world.container_for({"netns": target.inode})
        return known.name if known else None

    def emit_for(self, inode: int, record: Record) -> None:
        """Emit now, or hold while the netns is pending identification (keeps the order)."""
        if self.held is not None and self.world.is_pending(inode):
            self.held.hold(inode, record)
        else:
            self.emit(record)

    def gadget_name(self, program: LoadedProgram) -> str:
        # Records name the gadget: several gadgets may have functions of the same name.
        return next(g.gadget.name for g in self.loaded if program in g.programs.values())

    def attached(  # noqa: PLR0917 - a record's fields, passed straight through
        self,
        stack: contextlib.AsyncExitStack,
        program: LoadedProgram,
        kind: str,
        netns: NetnsId,
        interface: str | None,
        state: NetnsState,
    ) -> None:
        """``attached`` now, and ``detached`` when ``stack`` closes."""
        target = state.target
        attached = ProgramAttached(
            gadget=self.gadget_name(program),
            program=program.spec.function,
            kind=kind,
            netns=netns,
            interface=interface,
            container=self.container_name(target),
            speculative=target.speculative,
            latency=time.monotonic() - state.seen_at,
        )
        self.emit_for(target.inode, attached)

        def detached() -> None:
            # Named as the netns is known by now: identified meanwhile, perhaps as a container
            # that is not selected (then the target, no longer desired, was never updated).
            self.emit_for(target.inode, attached.detached(self.container_name(state.target)))

        stack.callback(detached)

    def failed(
        self,
        program: LoadedProgram,
        target: NetnsTarget,
        interface: str | None,
        error: AttachError,
    ) -> None:
        self.emit_for(
            target.inode,
            AttachFailed(
                gadget=self.gadget_name(program),
                program=program.spec.function,
                kind=program.spec.kind.value,
                netns=NetnsId(target.inode, 0),
                interface=interface,
                container=self.container_name(target),
                speculative=target.speculative,
                error=error,
            ),
        )

    def failed_all(self, programs: list[LoadedProgram], target: NetnsTarget, problem: str) -> None:
        for program in programs:
            self.failed(
                program,
                target,
                None,
                AttachError(program.spec.function, problem, netns=target.label),
            )

    def iterator_events(
        self,
        gadget: LoadedGadget,
        program: LoadedProgram,
        raw: bytes,
        target: NetnsTarget,
    ) -> None:
        """One iterator run's output, as events of that netns."""
        from engine.events.iter_decode import decode_iter_output
        from engine.events.origin import netns_origin
        from engine.gadget.maps import iter_source

        container: dict[str, Any] | None = (
            target.containers[0].to_json() if target.containers else None
        )
        source = iter_source(gadget.gadget, program.spec)
        for data in decode_iter_output(gadget, program, raw):
            origin = netns_origin(target.inode)
            event = Event(
                gadget.gadget.name, source, program.spec.function, data, container, origin
            )
            if self.held is not None and self.world.is_pending(target.inode):
                self.held.hold_event(target.inode, event)
            else:
                self.emit(event)
