"""The message tree of one chat, in memory: paths, siblings and branch tips.

Only the skeleton (id, parent, creation time) is loaded, which stays small even for
long chats; the store then fetches the full rows of the one path it needs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    parent_id: str | None
    created_at: datetime


class Tree:
    """Children are ordered oldest first (ties broken by id), as siblings are shown."""

    def __init__(self, nodes: Iterable[Node]) -> None:
        self._nodes = {node.id: node for node in nodes}
        children: defaultdict[str | None, list[Node]] = defaultdict(list)
        for node in self._nodes.values():
            children[node.parent_id].append(node)
        self._children = {
            parent: [n.id for n in sorted(kids, key=lambda n: (n.created_at, n.id))]
            for parent, kids in children.items()
        }

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._nodes

    def path_to(self, message_id: str) -> list[str]:
        """Ids from the root down to `message_id`, inclusive."""
        path: list[str] = []
        current: str | None = message_id
        while current is not None:
            path.append(current)
            current = self._nodes[current].parent_id
        path.reverse()
        return path

    def siblings(self, message_id: str) -> list[str]:
        """The message and the others with the same parent, oldest first."""
        return list(self._children[self._nodes[message_id].parent_id])

    def latest_leaf(self, message_id: str) -> str:
        """The most recently created leaf under `message_id` (itself if it is a leaf)."""
        leaves: list[Node] = []
        stack = [message_id]
        while stack:
            current = stack.pop()
            kids = self._children.get(current)
            if kids:
                stack.extend(kids)
            else:
                leaves.append(self._nodes[current])
        return max(leaves, key=lambda n: (n.created_at, n.id)).id

    def latest(self) -> str | None:
        """The most recently created leaf of the whole tree (None: it is empty)."""
        leaves = [n for n in self._nodes.values() if n.id not in self._children]
        return max(leaves, key=lambda n: (n.created_at, n.id)).id if leaves else None
