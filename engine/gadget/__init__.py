"""The gadget model, pure: section names, programs, and one scanner of the C source."""

from engine.gadget.model import Gadget, ProgramSpec
from engine.gadget.scanner import SourceScan
from engine.gadget.sections import Kind, Section

__all__ = ["Gadget", "Kind", "ProgramSpec", "Section", "SourceScan"]
