"""Kernel headers for bcc: found where bcc looks, a mismatch said once."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from engine.kernel.headers import KernelHeaders, find_kernel_headers


def test_mismatched_headers_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    headers = KernelHeaders(Path("/h"), "6.1.0-amd64", "6.18.0")
    with caplog.at_level(logging.WARNING, logger="engine.kernel.headers"):
        headers.warn_if_mismatched()
        headers.warn_if_mismatched()
        KernelHeaders(Path("/h"), "6.18.0", "6.18.0").warn_if_mismatched()
    assert [r.getMessage() for r in caplog.records] == [
        "bcc compiles against kernel headers for 6.1.0-amd64, but the running kernel is "
        "6.18.0: kernel structs are read through the running kernel's layouts from BTF "
        "instead of those headers' (docs/btf.md)"
    ]


def test_headers_found_with_their_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    build = tmp_path / os.uname().release / "build"
    (build / "include/generated").mkdir(parents=True)
    (build / "Makefile").write_text("")
    (build / "include/generated/utsrelease.h").write_text('#define UTS_RELEASE "6.1.0-9"\n')
    headers = find_kernel_headers(tmp_path)
    assert (headers.path, headers.release, headers.matches) == (build, "6.1.0-9", False)
