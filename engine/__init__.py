"""engine: container-aware eBPF tracing with bcc gadgets, driven by trio."""

from __future__ import annotations

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

__all__ = [
    "AttachError",
    "CompileError",
    "EngineError",
    "EnvironmentProblem",
    "GadgetError",
    "GadgetParseError",
    "SectionError",
    "SelectionError",
    "TargetNotFoundError",
    "UnsupportedProgramError",
    "VerifierError",
]
