"""Inclusion proofs for many leaves of one tree at once.

``Levels`` keeps every level of the RFC 6962 tree over ``leaves``: level 0 is
the leaves, and a node of level ``l + 1`` is ``node_hash`` of two siblings of
level ``l``, or the last node of level ``l`` carried up unchanged when it has
no sibling. That carried-up node is exactly the right subtree RFC 6962 §2.1's
split at the largest power of two gives, so the tree, its root and its audit
paths are the RFC's (the tests check them against ``bastion.security.merkle``
and the published vectors it is tested on). Building it costs one hash per
inner node (n - 1); each proof then costs a walk up, not a pass over the leaves.
"""

from __future__ import annotations

from collections.abc import Sequence

from bastion.security.merkle import EMPTY_ROOT, node_hash


class Levels:
    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.size = len(leaves)
        levels: list[list[bytes]] = [list(leaves)]
        while len(levels[-1]) > 1:
            below = levels[-1]
            above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            if len(below) % 2:
                above.append(below[-1])
            levels.append(above)
        self.levels = levels

    def root(self) -> bytes:
        return self.levels[-1][0] if self.size else EMPTY_ROOT

    def inclusion(self, index: int) -> list[bytes]:
        """The audit path of leaf ``index`` (RFC 9162 §2.1.3.1), leaf to root."""
        if not 0 <= index < self.size:
            raise IndexError(index)
        path: list[bytes] = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index //= 2
        return path
