"""Inside the Debian 6.1 VM: the kinds this machine's kernel refuses are available there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.kernel.features import probe_features

pytestmark = [pytest.mark.integration, pytest.mark.vmkernel]

REFUSED_ON_THE_HOST = ["kprobe", "kretprobe", "fentry", "fexit", "lsm"]


def test_features_on_the_debian_kernel(root: None) -> None:
    assert os.uname().release.startswith("6.1."), os.uname().release
    features = probe_features()
    # Leave the probe's answer where the host-side test can check it too.
    out = os.environ.get("ENGINE_VM_OUT")
    if out:
        (Path(out) / "features.json").write_text(
            json.dumps({"release": features.release, "kinds": features.to_json()})
        )
    for kind in REFUSED_ON_THE_HOST:
        support = features.supports(kind)
        assert support.available, f"{kind}: {support.reason}"
