"""Merkle tree hashing and proofs of RFC 6962 §2.1, verified as RFC 9162 §2.1 says.

The audit log is an append-only list of entries; its tree hash commits to every
entry and to their order, and two short proofs let anyone holding only a
signed root check a claim against it:

- *inclusion* (RFC 6962 §2.1.1 "audit path"): entry ``i`` is leaf ``i`` of the
  tree of size ``n`` whose root is ``r``;
- *consistency* (RFC 6962 §2.1.2): the tree of size ``m`` is a prefix of the
  tree of size ``n``, so nothing before ``m`` was changed, removed or reordered.

Hashing is SHA-256 with the RFC's domain separation, which stops a leaf from
being passed off as an inner node (a second-preimage attack on the tree)::

    MTH({})       = SHA-256()
    MTH({d(0)})   = SHA-256(0x00 || d(0))
    MTH(D[n])     = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
                    where k is the largest power of two smaller than n

Everything below works on *leaf hashes* (``leaf_hash(entry)``), never on the
entries, so a caller can keep 32 bytes per event and still prove anything.
Every algorithm is iterative and the :class:`Tree` keeps each level once, so a
proof in a tree of a million leaves costs O(log² n) hashes and no recursion.

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step (the
numbered steps are quoted at each loop) and answers ``True``/``False``; any
malformed input (negative sizes, hashes of the wrong length) is ``False`` too,
never an exception, because a verifier reads its input from an attacker.
Checked against the published vectors of RFC 6962's reference tree and the
transparency-dev/merkle probe set (tests/unit/security/test_security_merkle.py).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "Tree",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}): the root of the empty tree, SHA-256 of the empty string."""


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d): the hash of one entry as a leaf."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): an inner node over two subtree hashes."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2): RFC 6962's k."""
    return 1 << ((n - 1).bit_length() - 1)


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """Hash a right edge of perfect subtrees, largest first, into one root.

    MTH of a range whose size has the bits h1 > h2 > … splits at 2^h1 first,
    then at 2^h2 within the rest, so the root is
    node(s1, node(s2, node(…, s_last))): fold from the right.
    """
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


def _check_hashes(hashes: Iterable[bytes]) -> list[bytes]:
    checked = list(hashes)
    for h in checked:
        if len(h) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
    return checked


class Tree:
    """All perfect subtrees of a list of leaf hashes, to answer any proof fast.

    ``levels[h][i]`` is the hash of the perfect subtree of ``2**h`` leaves that
    starts at leaf ``i * 2**h``. Building costs n - 1 hashes once (~0.1 s for
    100,000 leaves); then a root, an inclusion proof or a consistency proof for
    the whole tree *or any earlier size* costs O(log² n), because every
    subtree RFC 6962's recursion asks for is a short right edge of those
    perfect subtrees. Earlier sizes share the same perfect subtrees: that is
    what lets the log prove against a checkpoint taken before the last append.
    """

    def __init__(self, leaves: Sequence[bytes]) -> None:
        """Build the levels of ``leaves`` (each a 32-byte leaf hash)."""
        level = _check_hashes(leaves)
        self._levels: list[list[bytes]] = [level]
        while len(level) >= 2:
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            self._levels.append(level)

    @property
    def size(self) -> int:
        """The number of leaves."""
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        return self._levels[0][index]

    def _range(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) where ``start`` is a multiple of the range's bit ceiling.

        RFC 6962's recursion only ever asks for such ranges, and each is the
        fold of at most log n perfect subtrees read from the levels.
        """
        parts: list[bytes] = []
        position = start
        for height in range((end - start).bit_length() - 1, -1, -1):
            if (end - start) >> height & 1:
                parts.append(self._levels[height][position >> height])
                position += 1 << height
        return _fold_right(parts)

    def _size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError("tree size out of range")
        return size

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (all by default); EMPTY_ROOT for none."""
        size = self._size(size)
        return EMPTY_ROOT if size == 0 else self._range(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(m, D[n]) of RFC 6962 §2.1.1 for leaf ``index`` in the tree of ``size``.

        ``PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])`` when m < k, else
        ``PATH(m - k, D[k:n]) : MTH(D[0:k])``; walking down from the root
        collects the outermost sibling first, so the list is reversed at the
        end (the proof goes from the leaf up).
        """
        size = self._size(size)
        if not 0 <= index < size:
            raise ValueError("leaf index out of range")
        proof: list[bytes] = []
        low, high = 0, size
        while high - low > 1:
            k = _split(high - low)
            if index < low + k:
                proof.append(self._range(low + k, high))
                high = low + k
            else:
                proof.append(self._range(low, low + k))
                low += k
        proof.reverse()
        return proof

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(m, D[n]) of RFC 6962 §2.1.2 between the trees of ``old_size`` and ``new_size``.

        ``SUBPROOF(m, D[m], true) = {}``, ``SUBPROOF(m, D[m], false) = {MTH(D[m])}``;
        for m < n: ``SUBPROOF(m, D[0:k], b) : MTH(D[k:n])`` when m <= k, else
        ``SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])``. Equal sizes give an
        empty proof. A proof from the empty tree means nothing (the empty tree
        is a prefix of every tree), so ``old_size`` 0 is refused.
        """
        new_size = self._size(new_size)
        if not 0 < old_size <= new_size:
            raise ValueError("consistency needs 0 < old_size <= new_size")
        tail: list[bytes] = []
        low, high, m, whole = 0, new_size, old_size, True
        while m != high - low:
            k = _split(high - low)
            if m <= k:
                tail.append(self._range(low + k, high))
                high = low + k
            else:
                tail.append(self._range(low, low + k))
                low += k
                m -= k
                whole = False
        proof = [] if whole else [self._range(low, high)]
        proof.extend(reversed(tail))
        return proof


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (RFC 6962 §2.1), in one pass and O(log n) memory."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``leaves`` (RFC 6962 §2.1.1).

    Builds a :class:`Tree`; use one directly to prove many leaves of one tree.
    """
    return Tree(leaves).inclusion_proof(index)


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The proof that the first ``old_size`` leaves are a prefix of ``leaves`` (RFC 6962 §2.1.2)."""
    return Tree(leaves).consistency_proof(old_size)


def _equal(a: bytes, b: bytes) -> bool:
    # Roots are public, but the comparison costs nothing in constant time.
    return hmac.compare_digest(a, b)


def _lsb(n: int) -> bool:
    return bool(n & 1)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size`` with ``root``.

    RFC 9162 §2.1.3.2, step by step.
    """
    # 1. "If leaf_index is greater than or equal to tree_size, then stop and fail."
    if not 0 <= index < size or len(leaf) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        return False
    # 2. "Set fn to leaf_index and sn to tree_size - 1."  3. "Set r to hash."
    fn, sn, r = index, size - 1, leaf
    # 4. "For each value p in the inclusion_path array:"
    for p in proof:
        #   "If sn is 0, then stop the iteration and fail the proof verification."
        if sn == 0:
            return False
        #   "If LSB(fn) is set, or if fn is equal to sn, then:"
        if _lsb(fn) or fn == sn:
            r = node_hash(p, r)
            #   "If LSB(fn) is not set, then right-shift both fn and sn equally
            #    until either LSB(fn) is set or fn is 0."
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        #   "Finally, right-shift both fn and sn one time."
        fn >>= 1
        sn >>= 1
    # 5. "Compare sn to 0. Compare r against the root_hash."
    return sn == 0 and _equal(r, root)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` shows the tree (old_size, old_root) is a prefix of (new_size, new_root).

    RFC 9162 §2.1.4.2, step by step. Equal sizes need an empty proof and equal
    roots. ``old_size`` 0 is refused (``False``), as transparency-dev/merkle
    does: the empty tree is a prefix of every tree, so there is nothing to
    prove and a caller comparing against an empty first checkpoint must skip
    the pair rather than rely on this answer.
    """
    if not 0 < old_size <= new_size or any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and _equal(old_root, new_root)
    # 1. "If consistency_path is an empty array, stop and fail the proof verification."
    if not proof:
        return False
    path = list(proof)
    # 2. "If first is an exact power of 2, then prepend first_hash to the consistency_path array."
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3. "Set fn to first - 1 and sn to second - 1."
    fn, sn = old_size - 1, new_size - 1
    # 4. "If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set."
    while _lsb(fn):
        fn >>= 1
        sn >>= 1
    # 5. "Set both fr and sr to the first value in the consistency_path array."
    fr = sr = path[0]
    # 6. "For each subsequent value c in the consistency_path array:"
    for c in path[1:]:
        #   "If sn is 0, then stop the iteration and fail the proof verification."
        if sn == 0:
            return False
        #   "If LSB(fn) is set, or if fn is equal to sn, then:"
        if _lsb(fn) or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            #   "If LSB(fn) is not set, then right-shift both fn and sn equally
            #    until either LSB(fn) is set or fn is 0."
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        #   "Finally, right-shift both fn and sn one time."
        fn >>= 1
        sn >>= 1
    # 7. "verify that the fr calculated is equal to the first_hash supplied, that
    #    the sr calculated is equal to the second_hash supplied, and that sn is 0."
    return sn == 0 and _equal(fr, old_root) and _equal(sr, new_root)


class Frontier:
    """The right edge of a growing tree: enough to append and to compute the root.

    For a tree of ``size`` leaves it holds one hash per set bit of ``size``,
    the roots of its perfect subtrees from the largest (leftmost) down, i.e. a
    compact range [0, size) in transparency-dev/merkle's terms. Appending a
    leaf merges equal-height subtrees like a binary carry, so ``append`` costs
    at most log2(size) hashes (one on average) and the state stays ≤ 64 * 32
    bytes, which the audit sequencer stores in one row next to the size.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        """An empty tree."""
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        """Restore a frontier saved by :meth:`to_bytes` for a tree of ``size`` leaves.

        Refuses (``ValueError``) data whose length does not match ``size``:
        one 32-byte hash per set bit.
        """
        if size < 0 or len(data) != HASH_SIZE * size.bit_count():
            raise ValueError("frontier data does not match the tree size")
        frontier = cls()
        frontier._size = size
        frontier._hashes = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        return frontier

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def to_bytes(self) -> bytes:
        """The subtree roots, largest first, concatenated (32 bytes * popcount(size))."""
        return b"".join(self._hashes)

    def copy(self) -> Frontier:
        """An independent frontier at the same state (to try appends and roll back)."""
        twin = Frontier()
        twin._size = self._size
        twin._hashes = list(self._hashes)
        return twin

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash at the right edge."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        node = leaf
        size = self._size
        # Each trailing 1 bit of the old size is a perfect subtree of the same
        # height as the node being carried: merge it in, as in binary addition.
        while size & 1:
            node = node_hash(self._hashes.pop(), node)
            size >>= 1
        self._hashes.append(node)
        self._size += 1

    def root(self) -> bytes:
        """MTH of everything appended so far (EMPTY_ROOT when nothing was)."""
        return _fold_right(self._hashes) if self._hashes else EMPTY_ROOT
