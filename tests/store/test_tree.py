"""The in-memory message tree: paths, sibling order and branch tips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streamkeep.store.tree import Node, Tree

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def node(id: str, parent: str | None, minute: int) -> Node:
    return Node(id, parent, T0 + timedelta(minutes=minute))


# u1 -> a1 -> u2 -> a2
#          \-> u2b (edit) -> a2b
#    \-> a1b (regenerated)
TREE = Tree(
    [
        node("u1", None, 0),
        node("a1", "u1", 1),
        node("u2", "a1", 2),
        node("a2", "u2", 3),
        node("a1b", "u1", 4),
        node("u2b", "a1", 5),
        node("a2b", "u2b", 6),
    ]
)


def test_path_runs_from_the_root_to_the_message() -> None:
    assert TREE.path_to("a2") == ["u1", "a1", "u2", "a2"]
    assert TREE.path_to("u1") == ["u1"]


def test_siblings_are_oldest_first_and_include_the_message() -> None:
    assert TREE.siblings("a1b") == ["a1", "a1b"]
    assert TREE.siblings("u2") == ["u2", "u2b"]
    assert TREE.siblings("a2") == ["a2"]


def test_roots_are_siblings_of_each_other() -> None:
    tree = Tree([node("r2", None, 1), node("r1", None, 0)])
    assert tree.siblings("r2") == ["r1", "r2"]


def test_ties_in_time_are_ordered_by_id() -> None:
    tree = Tree([node("p", None, 0), node("b", "p", 1), node("a", "p", 1)])
    assert tree.siblings("b") == ["a", "b"]


def test_latest_leaf_is_the_newest_leaf_below() -> None:
    assert TREE.latest_leaf("u1") == "a2b"
    assert TREE.latest_leaf("u2") == "a2"
    assert TREE.latest_leaf("a1b") == "a1b"


def test_latest_leaf_ignores_an_inner_message_of_the_same_time() -> None:
    # A user message and its reply are written with one timestamp.
    tree = Tree([node("z-user", None, 0), node("a-reply", "z-user", 0)])
    assert tree.latest_leaf("z-user") == "a-reply"


def test_membership() -> None:
    assert "a2" in TREE
    assert "nope" not in TREE
