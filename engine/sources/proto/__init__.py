"""Protocol definitions the engine speaks, and the code generated from them.

The ``.proto`` files here are the subset of containerd's public API (github.com/containerd/
containerd, ``api/``) that the containerd source uses, written down for this project: same
packages, services, messages and field numbers, fewer of them. ``scripts/gen-proto`` (run by
``scripts/setup``) compiles them with grpcio-tools into ``*_pb2.py``/``*_pb2_grpc.py`` beside
them, and mypy-protobuf writes their type stubs; the generated files are not kept in git.
"""
