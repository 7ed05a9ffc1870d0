"""engine: container-aware eBPF tracing with bcc gadgets, driven by trio."""

from __future__ import annotations

from engine.engine import Engine, open_engine
from engine.errors import (
    AttachError,
    CompileError,
    EngineError,
    EngineStoppedError,
    EnvironmentProblem,
    GadgetError,
    GadgetParseError,
    SectionError,
    SelectionError,
    TargetNotFoundError,
    UnsupportedProgramError,
    VerifierError,
)
from engine.events.stats import MapStats, Stats
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
    "EngineStoppedError",
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
