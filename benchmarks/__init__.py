"""Benchmarks of the engine against plain bcc, run by ``python -m benchmarks`` (``nox -s bench``).

Every figure is measured next to a baseline in the same run: the machine is shared and noisy,
so a ratio means something where an absolute figure alone does not.
"""
