"""containerd's API (a subset); see engine/sources/proto/__init__.py."""
