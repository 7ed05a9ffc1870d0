"""Baseline (2): a bcc script that prints each record as a JSON line, as bcc tools print.

``python -m benchmarks.bcc_json KIND PID``: the throughput gadget (``KIND`` ringbuf or perf)
for process ``PID``; ``ready`` on stderr once polling; one JSON object per record on stdout
(a pipe: Python buffers it); SIGINT ends it (after the poll in progress), its output flushed.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

from benchmarks.bcc_side import bcc_gadget, open_buffer, set_target


def main() -> int:
    kind, pid = sys.argv[1], int(sys.argv[2])
    with bcc_gadget(kind) as bpf:
        set_target(bpf, pid)
        table = bpf["events"]

        def on_event(_ctx: Any, data: Any, _size: int) -> None:
            e = table.event(data)
            record = {"pid": e.pid, "tid": e.tid, "ts": e.ts, "comm": e.comm.decode()}
            print(json.dumps(record))

        poll = open_buffer(bpf, kind, on_event)
        # A flag, not KeyboardInterrupt: raised inside bcc's ctypes callback, that one is
        # printed and dropped, and the loop would go on.
        stopping: list[int] = []
        signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
        print("ready", file=sys.stderr, flush=True)
        while not stopping:
            poll(100)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
