"""The command line at the edge of the engine: ``engine run``, ``check``, ``features``."""

from engine.cli.main import main

__all__ = ["main"]
