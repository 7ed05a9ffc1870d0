"""Which containers (and whether the host) a gadget sees: `--select`, `--exclude`, `--host`.

Forms of an expression (globs are `fnmatch` patterns, case-sensitive):

- `name=GLOB`: the container's name (without Docker's leading "/"; a pod's containers are
  named `POD/CONTAINER`, its sandbox `POD`);
- `id=PREFIX`: a prefix of the container's full hexadecimal id;
- `image=GLOB`: the image as given to `docker run` (`busybox:latest`), tried with and without its
  tag so that `image=busybox` matches `busybox:latest`;
- `label=KEY=GLOB`: the label KEY exists with a value matching GLOB; `label=KEY` only needs KEY;
- `runtime=NAME`: the container runtime, `docker`, `containerd` or `podman`;
- `k8s.namespace=GLOB`, `k8s.pod=GLOB`: the Kubernetes namespace, pod name of a container that
  the CRI made (a pod's sandbox and all its containers);
- `k8s.container=GLOB`: the container's name in its pod (never the sandbox);
- `k8s.label=KEY=GLOB`, `k8s.label=KEY`: a label of the container's pod.

A pod's containers share its netns: per-netns programs run there when any of them is
selected; static probes see only the selected containers' processes.

Semantics: with neither `--select` nor `--host`, every container (but the excluded ones) and the
host are selected. Otherwise a container is selected when some `--select` matches it and no
`--exclude` does, and the host only with `--host` (so `--host` alone means "the host only").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from typing import Literal

import attrs

from engine.errors import SelectionError
from engine.sources.containers import Container, K8s

Field = Literal[
    "name",
    "id",
    "image",
    "label",
    "runtime",
    "k8s.namespace",
    "k8s.pod",
    "k8s.container",
    "k8s.label",
]

RUNTIMES = ("docker", "containerd", "podman")
ACCEPTED_FORMS = (
    "name=GLOB, id=PREFIX, image=GLOB, label=KEY or label=KEY=GLOB, runtime=NAME,"
    " k8s.namespace=GLOB, k8s.pod=GLOB, k8s.container=GLOB, k8s.label=KEY or k8s.label=KEY=GLOB"
)
_HEX = re.compile(r"[0-9a-f]{1,64}")
# What a glob of each Kubernetes field is matched against (None: never matches).
_K8S_FIELDS: dict[str, Callable[[K8s], str | None]] = {
    "k8s.namespace": lambda k8s: k8s.namespace,
    "k8s.pod": lambda k8s: k8s.pod,
    "k8s.container": lambda k8s: k8s.container,
}


@attrs.frozen
class Matcher:
    """One parsed expression."""

    field: Field
    pattern: str
    label_key: str | None = None

    @classmethod
    def parse(cls, expression: str) -> Matcher:
        field, sep, value = expression.partition("=")

        def bad(problem: str) -> SelectionError:
            return SelectionError(
                f"bad selection {expression!r}: {problem}; accepted forms: {ACCEPTED_FORMS}"
            )

        if not sep:
            raise bad("missing '='")
        if not value:
            raise bad(f"nothing after '{field}='")
        match field:
            case "name" | "image" | "k8s.namespace" | "k8s.pod" | "k8s.container":
                return cls(field=field, pattern=value)
            case "id":
                if not _HEX.fullmatch(value):
                    raise bad("an id prefix is 1 to 64 lowercase hexadecimal digits")
                return cls(field="id", pattern=value)
            case "runtime":
                if value not in RUNTIMES:
                    raise bad(f"a runtime is one of {', '.join(RUNTIMES)}")
                return cls(field="runtime", pattern=value)
            case "label" | "k8s.label":
                key, has_value, glob = value.partition("=")
                if not key:
                    raise bad("empty label key")
                return cls(field=field, pattern=glob if has_value else "*", label_key=key)
            case _:
                raise bad(f"unknown field {field!r}")

    def matches(self, container: Container) -> bool:
        match self.field:
            case "name":
                return fnmatchcase(container.name, self.pattern)
            case "id":
                return container.id.startswith(self.pattern)
            case "image":
                untagged = _without_tag(container.image)
                return fnmatchcase(container.image, self.pattern) or fnmatchcase(
                    untagged, self.pattern
                )
            case "label":
                return self._label_matches(container.label_map)
            case "runtime":
                return container.runtime == self.pattern
            case "k8s.label":
                return container.k8s is not None and self._label_matches(dict(container.k8s.labels))
            case _:
                value = None if container.k8s is None else _K8S_FIELDS[self.field](container.k8s)
                return value is not None and fnmatchcase(value, self.pattern)

    def _label_matches(self, labels: dict[str, str]) -> bool:
        key = str(self.label_key)
        return key in labels and fnmatchcase(labels[key], self.pattern)


def _without_tag(image: str) -> str:
    # A ":" after the last "/" starts the tag; one before it belongs to a registry's port.
    head, slash, last = image.partition("@")[0].rpartition("/")
    return head + slash + last.partition(":")[0]


@attrs.frozen
class Selection:
    """A parsed selection; `Selection()` selects everything."""

    selects: tuple[Matcher, ...] = ()
    excludes: tuple[Matcher, ...] = ()
    host: bool = False

    @classmethod
    def parse(cls, selects: Sequence[str], excludes: Sequence[str], host: bool) -> Selection:
        """Parse CLI/API expressions; raises SelectionError naming the first bad one."""
        return cls(
            selects=tuple(Matcher.parse(s) for s in selects),
            excludes=tuple(Matcher.parse(e) for e in excludes),
            host=host,
        )

    @property
    def selects_everything(self) -> bool:
        return not self.selects and not self.host

    @property
    def includes_host(self) -> bool:
        return self.host or self.selects_everything

    def matches(self, container: Container) -> bool:
        if any(m.matches(container) for m in self.excludes):
            return False
        return self.selects_everything or any(m.matches(container) for m in self.selects)
