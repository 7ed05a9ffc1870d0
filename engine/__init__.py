"""engine: container-aware eBPF tracing with bcc gadgets, driven by trio."""

from __future__ import annotations

from engine.containers import Container, ContainerAdded, ContainerRemoved
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
from engine.hookfile import HookFile, HookFileError
from engine.hooks import HookError, HookFailed, HookStats, MapView, SelectionChanged
from engine.records import Event, Lost, ProgramAttached, ProgramSkipped, Record
from engine.selection import Selection

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
