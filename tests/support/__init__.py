"""What the tests share: constants, requirements, Docker containers, engine records and
processes, and the snapshot of what of ours the kernel and this process hold."""
