"""The command line without the kernel: parser, `check`, hook files, exit codes, the live view
and the metrics text."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.cli.metrics import Metrics, parse_address
from engine.cli.parser import ATTACH_PRIORITY_ARGS, build_parser
from engine.cli.table import HOST, LiveTable
from engine.engine import _attach_priority
from engine.errors import BadInputError, HookFileError
from engine.hooks.hookfile import HookFile
from engine.netns.priority import ATTACH_NICE, ATTACH_REALTIME, Priority

ROOT = Path(__file__).resolve().parents[2]
EXECSNOOP = str(ROOT / "examples" / "execsnoop.c")


def test_run_parser_defaults_and_repeatable_flags() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "a.c",
            "b.c",
            "--select",
            "name=web*",
            "--select",
            "image=nginx",
            "--exclude",
            "label=skip",
            "--host",
            "--hook",
            "h.py",
            "--metrics",
            "127.0.0.1:9464",
            "--duration",
            "2.5",
        ]
    )
    assert args.gadgets == ["a.c", "b.c"]
    assert args.select == ["name=web*", "image=nginx"]
    assert args.exclude == ["label=skip"]
    assert args.host is True
    assert args.hook == ["h.py"]
    assert args.metrics == ("127.0.0.1", 9464)
    assert args.duration == 2.5
    assert args.output is None  # chosen from stdout: table on a terminal, else json


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "a.c", "--duration", "0"],
        ["run", "a.c", "--duration", "soon"],
        ["run", "a.c", "--metrics", "localhost:9464"],
        ["run", "a.c", "--metrics", "127.0.0.1"],
        ["run", "a.c", "--metrics", "127.0.0.1:99999"],
        ["run", "a.c", "--output", "yaml"],
        ["run"],
    ],
)
def test_bad_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_parse_address_accepts_ipv6() -> None:
    assert parse_address("[::1]:0") == ("::1", 0)


def test_check_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", EXECSNOOP]) == 0
    out = capsys.readouterr().out
    assert f"{EXECSNOOP}:21: trace_execve: tracepoint syscalls/sys_enter_execve" in out


def test_check_missing_gadget_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "nope.c")]) == 2
    err = capsys.readouterr().err
    assert "nope.c" in err
    assert "Traceback" not in err


def test_run_with_bad_selection_exit_2_before_compiling(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", EXECSNOOP, "--select", "colour=red"]) == 2
    err = capsys.readouterr().err
    assert "bad selection 'colour=red'" in err
    assert "compiling" not in err


def _hook_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hooks.py"
    path.write_text(text)
    return str(path)


BAD_HOOK_FILES = [
    ("async def on_event(event):\n    return (\n", 2, "syntax error"),
    ("import os\nimport no_such_module_here\n", 2, "ModuleNotFoundError"),
    ("x = 1\n\ndef on_event(event):\n    pass\n", 3, "must be an async function"),
    ("def helper():\n    pass\n", 1, "defines no hooks"),
]


@pytest.mark.parametrize(("text", "line", "problem"), BAD_HOOK_FILES)
def test_bad_hook_file_names_file_and_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = _hook_file(tmp_path, text)
    with pytest.raises(HookFileError) as exc:
        HookFile.load(path)
    assert exc.value.line == line
    assert f"{path}:{line}" in str(exc.value)
    assert problem in str(exc.value)


@pytest.mark.parametrize(("text", "line", "problem"), BAD_HOOK_FILES)
def test_run_with_bad_hook_file_exit_2(
    tmp_path: Path, text: str, line: int, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _hook_file(tmp_path, text)
    assert main(["run", EXECSNOOP, "--hook", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert f"{path}:{line}" in err
    assert problem in err


def test_missing_hook_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", EXECSNOOP, "--hook", str(tmp_path / "gone.py")]) == 2
    assert "gone.py: cannot read" in capsys.readouterr().err


def test_hook_file_with_hooks_and_setup(tmp_path: Path) -> None:
    path = _hook_file(
        tmp_path,
        "async def on_event(event):\n    pass\n\n"
        "async def on_container_removed(container):\n    pass\n\n"
        "def setup(engine):\n    pass\n",
    )
    loaded = HookFile.load(path)
    assert sorted(loaded.hooks) == ["on_container_removed", "on_event"]
    assert loaded.setup is not None


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _event(container: Mapping[str, object] | None, pid: int) -> dict[str, object]:
    return {
        "type": "event",
        "gadget": "execsnoop",
        "source": "events",
        "data": {"pid": pid, "comm": "sh"},
        "container": container,
    }


def test_live_table_counts_per_container_and_shows_latest_events() -> None:
    clock = FakeClock()
    table = LiveTable("execsnoop.c", clock=clock)
    web = {"id": "ab" * 32, "short_id": "abababababab", "name": "web"}
    table.observe({"type": "container_added", "container": web})
    for pid in range(3):
        table.observe(_event(web, pid))
    table.observe(_event(None, 99))
    table.observe({"type": "lost", "gadget": "g", "source": "events", "count": 7, "where": "x"})
    clock.now += 2
    lines = table.render(80, 40)
    text = "\n".join(lines)
    assert lines[0].startswith("engine: execsnoop.c")
    assert "events 4" in lines[0]
    assert "lost 7" in lines[0]
    assert "containers 1" in lines[0]
    web_row = next(line for line in lines if line.startswith("web "))
    assert web_row.split()[:3] == ["web", "3", "2.0s"]
    assert next(line for line in lines if line.startswith(HOST)).split()[1] == "1"
    section = lines.index("execsnoop/events  4 events")
    assert lines[section + 1].split() == ["CONTAINER", "PID", "COMM"]
    assert [line.split() for line in lines[section + 2 : section + 6]] == [
        ["web", "0", "sh"],
        ["web", "1", "sh"],
        ["web", "2", "sh"],
        [HOST, "99", "sh"],
    ]
    assert "container_added web" in text
    assert all(len(line) <= 80 for line in lines)


def test_live_table_fits_a_small_terminal() -> None:
    table = LiveTable("g.c", clock=FakeClock())
    for pid in range(100):
        table.observe(_event(None, pid))
    lines = table.render(30, 10)
    assert len(lines) <= 10
    assert all(len(line) <= 30 for line in lines)


def test_metrics_text() -> None:
    clock = FakeClock()
    metrics = Metrics(clock=clock)
    container = {"id": "c1", "name": "web"}
    metrics.observe({"type": "container_added", "container": container})
    clock.now += 0.2
    metrics.observe({"type": "attached", "netns": 4026532000, "container": "web"})
    metrics.observe({"type": "attached", "netns": 4026532000, "container": "web"})
    text = metrics.render()
    assert "engine_containers 1\n" in text
    assert "engine_attached_netns 1\n" in text
    assert 'engine_attach_latency_seconds_bucket{le="0.25"} 1\n' in text
    assert 'engine_attach_latency_seconds_bucket{le="0.1"} 0\n' in text
    assert "engine_attach_latency_seconds_count 1\n" in text
    assert 'engine_records_total{type="attached"} 2\n' in text
    metrics.observe({"type": "detached", "netns": 4026532000, "container": "web"})
    metrics.observe({"type": "detached", "netns": 4026532000, "container": "web"})
    metrics.observe({"type": "container_removed", "container": container})
    text = metrics.render()
    assert "engine_attached_netns 0\n" in text
    assert "engine_containers 0\n" in text


def test_live_table_names_pods_by_namespace_pod_and_container() -> None:
    table = LiveTable("execsnoop.c", clock=FakeClock())
    pod = {"namespace": "shop", "pod": "web-1", "pod_uid": "u", "labels": {}}
    app = {"id": "a" * 64, "name": "web-1/app", "k8s": {**pod, "container": "app"}}
    sandbox = {"id": "s" * 64, "name": "web-1", "k8s": {**pod, "container": None}}
    table.observe({"type": "container_added", "container": sandbox})
    table.observe({"type": "container_added", "container": app})
    table.observe(_event(app, 7))
    lines = table.render(100, 40)
    assert next(line for line in lines if line.startswith("shop/web-1/app ")).split()[:2] == [
        "shop/web-1/app",
        "1",
    ]
    assert any(line.startswith("shop/web-1 ") for line in lines)
    assert "container_added shop/web-1/app" in "\n".join(lines)


def test_attach_priority_choices_are_open_engines_arguments() -> None:
    assert build_parser().parse_args(["run", "x.c"]).attach_priority == "default"
    args = build_parser().parse_args(["run", "x.c", "--attach-priority", "realtime"])
    assert ATTACH_PRIORITY_ARGS[args.attach_priority] == (None, ATTACH_REALTIME)
    assert ATTACH_PRIORITY_ARGS["raised"] == (ATTACH_NICE, None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "x.c", "--attach-priority", "high"])


@pytest.mark.parametrize(
    ("nice", "realtime", "problem"),
    [(-10, 1, "one or the other"), (None, 0, "1-99, not 0"), (None, 100, "1-99, not 100")],
)
def test_attach_priority_out_of_range_is_one_clear_error(
    nice: int | None, realtime: int | None, problem: str
) -> None:
    with pytest.raises(BadInputError, match=problem):
        _attach_priority(nice, realtime)
    assert _attach_priority(None, None) is None
    assert _attach_priority(None, 5) == Priority(realtime=5)
