"""``python -m benchmarks.docker_starts RATE NAME... -- COMMAND...``: ``docker run`` each
container at RATE per second, concurrently, from a process of its own.

The Docker churn's engine runs in the benchmark's process. Started from that process's
threads, the ``docker run`` children made the engine under test share its GIL with up to
forty threads spawning processes at once: the first containers of a burst were seen 100-190
ms after Docker mounted their netns (2 of 100 containers, deciding the p99), with the engine's
trio thread real-time and every other container within 23 ms. As host_watch.py, the load is
made apart from what it measures.
"""

from __future__ import annotations

import sys
import threading
import time

from benchmarks import containers


def main() -> int:
    args = sys.argv[1:]
    split = args.index("--")
    rate, names, command = float(args[0]), args[1:split], args[split + 1 :]
    failures: list[BaseException] = []

    def start(name: str) -> None:
        try:
            containers.start(name, *command)
        except Exception as exc:  # reported below, after the others
            failures.append(exc)

    threads = []
    t0 = time.monotonic()
    for i, name in enumerate(names):
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        thread = threading.Thread(target=start, args=(name,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    for exc in failures:
        print(f"docker run failed: {exc}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
