"""Selection expressions: every form, the semantics of --select/--exclude/--host, bad syntax."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import SelectionError
from engine.sources.containers import Container
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


names = st.text(min_size=0, max_size=30)
containers = st.builds(
    Container,
    id=st.text("0123456789abcdef", min_size=64, max_size=64),
    name=names,
    image=names,
    pid=st.integers(0, 2**22),
    labels=st.dictionaries(names, names, max_size=4),
)


expressions = st.one_of(
    st.text(),
    st.builds(
        str.__add__, st.sampled_from(["name=", "id=", "image=", "label=", "label=k="]), st.text()
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
