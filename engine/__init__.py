"""engine: container-aware eBPF tracing with bcc gadgets, driven by trio."""

from __future__ import annotations

from engine.engine import Engine, MapStats, Stats, open_engine
from engine.errors import (
    AttachError,
    CompileError,
    EngineError,
    EnvironmentProblem,
    GadgetError,
    GadgetParseError,
    SectionError,
    SelectionError,
    TargetNotFoundError,
    UnsupportedProgramError,
    VerifierError,
)
from engine.hooks.dispatch import HookError, HookFailed, HookStats, MapView, SelectionChanged
from engine.hooks.hookfile import HookFile, HookFileError
from engine.records import Event, Lost, ProgramAttached, ProgramSkipped, Record
from engine.sources.containers import Container, ContainerAdded, ContainerRemoved
from engine.world.selection import Selection

__all__ = [
    "AttachError",
    "CompileError",
    "Container",
    "ContainerAdded",
    "ContainerRemoved",
    "Engine",
    "EngineError",
    "EnvironmentProblem",
    "Event",
    "GadgetError",
    "GadgetParseError",
    "HookError",
    "HookFailed",
    "HookFile",
    "HookFileError",
    "HookStats",
    "Lost",
    "MapStats",
    "MapView",
    "ProgramAttached",
    "ProgramSkipped",
    "Record",
    "SectionError",
    "Selection",
    "SelectionChanged",
    "SelectionError",
    "Stats",
    "TargetNotFoundError",
    "UnsupportedProgramError",
    "VerifierError",
    "open_engine",
]
