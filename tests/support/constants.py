"""Paths, the test image and the one address test traffic may go to."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GADGETS = ROOT / "tests" / "integration" / "gadgets"
TEST_IMAGE = os.environ.get("ENGINE_TEST_IMAGE", "engine-test:latest")
BRIDGE = "172.17.0.1"  # the docker bridge: test traffic goes nowhere else
IN_CI = os.environ.get("CI") == "true"
