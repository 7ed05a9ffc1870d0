"""Selection expressions: every form, the semantics of --select/--exclude/--host, bad syntax."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import SelectionError
from engine.sources.containers import Container, K8s
from engine.world.selection import Selection

WEB = Container(
    id="3f2a9c" + "0" * 58,
    name="web-1",
    image="registry.local:5000/shop/web:1.2",
    pid=10,
    labels={"app": "frontend", "tier": "edge"},
)
DB = Container(id="b7e1" + "1" * 60, name="db", image="postgres:16", pid=11, labels={"app": "db"})
SIDECAR = Container(id="c0ffee" + "2" * 58, name="web-sidecar", image="busybox", pid=12)
ALL = (WEB, DB, SIDECAR)


def selected(selection: Selection) -> set[str]:
    return {c.name for c in ALL if selection.matches(c)}


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("name=web*", {"web-1", "web-sidecar"}),
        ("name=db", {"db"}),
        ("name=DB", set()),
        ("id=3f2a", {"web-1"}),
        ("id=" + DB.id, {"db"}),
        ("id=0", set()),
        ("image=postgres*", {"db"}),
        ("image=postgres", {"db"}),
        ("image=busybox", {"web-sidecar"}),
        ("image=registry.local:5000/shop/web", {"web-1"}),
        ("image=*/web:1.*", {"web-1"}),
        ("label=app=db", {"db"}),
        ("label=app=front*", {"web-1"}),
        ("label=app", {"web-1", "db"}),
        ("label=tier=db", set()),
        ("label=nope=*", set()),
    ],
)
def test_each_form_selects(expression: str, names: set[str]) -> None:
    selection = Selection.parse([expression], [], host=False)
    assert selected(selection) == names
    assert not selection.includes_host


def test_nothing_given_selects_everything_and_the_host() -> None:
    selection = Selection.parse([], [], host=False)
    assert selected(selection) == {"web-1", "db", "web-sidecar"}
    assert selection.includes_host
    assert selection == Selection()


def test_selects_are_alternatives_and_excludes_win() -> None:
    selection = Selection.parse(["name=web*", "label=app=db"], ["name=*sidecar"], host=False)
    assert selected(selection) == {"web-1", "db"}


def test_excludes_alone_keep_the_rest_and_the_host() -> None:
    selection = Selection.parse([], ["image=busybox"], host=False)
    assert selected(selection) == {"web-1", "db"}
    assert selection.includes_host


def test_host_alone_selects_only_the_host() -> None:
    selection = Selection.parse([], [], host=True)
    assert selected(selection) == set()
    assert selection.includes_host


def test_host_with_selects() -> None:
    selection = Selection.parse(["name=db"], [], host=True)
    assert selected(selection) == {"db"}
    assert selection.includes_host


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("web", "missing '='"),
        ("runtime=cri-o", "one of docker, containerd, podman"),
        ("k8s.label==x", "empty label key"),
        ("k8s.ns=shop", "unknown field 'k8s.ns'"),
        ("k8s.pod=", "nothing after"),
        ("name=", "nothing after"),
        ("colour=red", "unknown field 'colour'"),
        ("id=XYZ", "hexadecimal"),
        ("id=3F2A", "hexadecimal"),
        ("label==x", "empty label key"),
        ("", "missing '='"),
    ],
)
def test_bad_expressions_name_themselves_and_the_forms(expression: str, problem: str) -> None:
    with pytest.raises(SelectionError) as caught:
        Selection.parse(["name=ok"], [expression], host=False)
    message = str(caught.value)
    assert repr(expression) in message
    assert problem in message
    assert "name=GLOB" in message
    assert "label=KEY=GLOB" in message
    assert "k8s.namespace=GLOB" in message


names = st.text(min_size=0, max_size=30)
containers = st.builds(
    Container,
    id=st.text("0123456789abcdef", min_size=64, max_size=64),
    name=names,
    image=names,
    pid=st.integers(0, 2**22),
    labels=st.dictionaries(names, names, max_size=4),
    runtime=st.sampled_from(["docker", "containerd", "podman"]),
    k8s=st.none() | st.builds(K8s, names, names, names, st.none() | names),
)


expressions = st.one_of(
    st.text(),
    st.builds(
        str.__add__,
        st.sampled_from(
            [
                "name=",
                "id=",
                "image=",
                "label=",
                "label=k=",
                "runtime=",
                "k8s.namespace=",
                "k8s.pod=",
                "k8s.container=",
                "k8s.label=",
                "k8s.label=k=",
            ]
        ),
        st.text(),
    ),
)


@given(
    selects=st.lists(expressions, max_size=3),
    excludes=st.lists(expressions, max_size=3),
    host=st.booleans(),
    container=containers,
)
def test_no_input_crashes_the_parser(
    selects: list[str], excludes: list[str], host: bool, container: Container
) -> None:
    try:
        selection = Selection.parse(selects, excludes, host=host)
    except SelectionError:
        return
    assert isinstance(selection.matches(container), bool)
    assert selection.includes_host == (host or not selects)


@given(container=containers)
def test_name_and_id_of_a_container_select_it(container: Container) -> None:
    if not container.name:
        return
    exact = container.name.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")
    selection = Selection.parse([f"name={exact}", f"id={container.id[:5]}"], [], host=False)
    assert selection.matches(container)
    assert not Selection.parse([], [f"id={container.id[:5]}"], host=False).matches(container)


# --- Kubernetes pods (containerd's CRI) and runtimes -----------------------------------------

SHOP = K8s("shop", "web-1", "uid-1", None, labels={"app": "web", "tier": "edge"})
PAY = K8s("payments", "api-7", "uid-2", None, labels={"app": "api"})


def cri(pod: K8s, container: str | None, pid: int) -> Container:
    """A container of ``pod`` (None: its sandbox), as the containerd source reports it."""
    name = pod.pod if container is None else f"{pod.pod}/{container}"
    return Container(
        id=f"{pid:x}" * 8,
        name=name,
        image="docker.io/library/engine-test:latest",
        pid=pid,
        runtime="containerd",
        containerd_namespace="k8s.io",
        k8s=attrs.evolve(pod, container=container),
    )


PODS = (
    cri(SHOP, None, 20),
    cri(SHOP, "app", 21),
    cri(SHOP, "sidecar", 22),
    cri(PAY, None, 30),
    cri(PAY, "app", 31),
)
PODMAN = Container(id="d" * 64, name="cache", image="redis", pid=40, runtime="podman")
EVERYONE = (*ALL, *PODS, PODMAN)


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("k8s.namespace=shop", {"web-1", "web-1/app", "web-1/sidecar"}),
        ("k8s.namespace=pay*", {"api-7", "api-7/app"}),
        ("k8s.namespace=*", {"web-1", "web-1/app", "web-1/sidecar", "api-7", "api-7/app"}),
        ("k8s.namespace=default", set()),
        ("k8s.pod=api-*", {"api-7", "api-7/app"}),
        ("k8s.container=app", {"web-1/app", "api-7/app"}),  # never a sandbox
        ("k8s.container=*", {"web-1/app", "web-1/sidecar", "api-7/app"}),
        ("k8s.label=app=web", {"web-1", "web-1/app", "web-1/sidecar"}),
        ("k8s.label=tier", {"web-1", "web-1/app", "web-1/sidecar"}),
        ("k8s.label=app=db", set()),  # a container label, not a pod's
        ("runtime=podman", {"cache"}),
        ("runtime=docker", {"web-1", "db", "web-sidecar"}),
        ("runtime=containerd", {"web-1", "web-1/app", "web-1/sidecar", "api-7", "api-7/app"}),
    ],
)
def test_kubernetes_and_runtime_forms(expression: str, names: set[str]) -> None:
    selection = Selection.parse([expression], [], host=False)
    # A Docker container named like a pod ("web-1") is not one: compare by identity.
    chosen = [c for c in EVERYONE if selection.matches(c)]
    assert {c.name for c in chosen} == names
    if expression.startswith("k8s."):
        assert all(c.runtime == "containerd" for c in chosen)


def test_a_namespace_without_one_of_its_pods() -> None:
    selection = Selection.parse(["k8s.namespace=shop"], ["k8s.container=sidecar"], host=False)
    assert {c.name for c in PODS if selection.matches(c)} == {"web-1", "web-1/app"}
