"""Tests for bastion.security.merkle against published RFC 6962 vectors.

Sources:
- the reference tree of eight leaves used by google/certificate-transparency
  (``cpp/merkletree/merkle_tree_test.cc``) and transparency-dev/merkle
  (``testonly/constants.go``: leaf inputs, node hashes and the roots of sizes
  0..8; ``cmd/proofgen/main.go``: inclusion and consistency proofs);
- transparency-dev/merkle's probe set (``testdata/inclusion`` and
  ``testdata/consistency`` at commit 417fb0c3), copied unchanged into
  ``vectors/transparency_dev_merkle.json``: valid proofs and their mutations
  (flipped bits, truncated, extended, swapped roots, wrong sizes) that a
  verifier must refuse.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from bastion.security import merkle, token_bytes
from bastion.security.merkle import (
    EMPTY_ROOT,
    Frontier,
    Tree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

LEAF_INPUTS = [
    h(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]

LEAF_HASHES = [
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
    h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
    h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
    h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
    h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
]

# Roots of the trees of the first n leaves, n = 0..8.
ROOTS = [
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

# (leaf index, tree size, proof): proofgen lists leaves 1-based, shifted here.
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]

# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]

PROBES: dict[str, Any] = json.loads((Path(__file__).parent / "vectors" / "transparency_dev_merkle.json").read_text())


def b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def test_empty_root_and_leaf_hashes() -> None:
    """V16.4.2: the tree hash is RFC 6962's: leaf = SHA-256(0x00||d), empty = SHA-256()."""
    assert ROOTS[0] == EMPTY_ROOT
    assert root([]) == EMPTY_ROOT
    assert [leaf_hash(d) for d in LEAF_INPUTS] == LEAF_HASHES
    assert node_hash(LEAF_HASHES[0], LEAF_HASHES[1]) == ROOTS[2]


@pytest.mark.parametrize("size", range(9))
def test_roots_of_the_reference_tree(size: int) -> None:
    """V16.4.2: the root of every prefix of the reference tree, three ways."""
    leaves = LEAF_HASHES[:size]
    assert root(leaves) == ROOTS[size]
    assert Tree(LEAF_HASHES).root(size) == ROOTS[size]
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    assert frontier.size == size
    assert frontier.root() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, proof: list[bytes]) -> None:
    """V16.4.2: our audit paths are the published ones and they verify."""
    assert inclusion_proof(index, LEAF_HASHES[:size]) == proof
    assert Tree(LEAF_HASHES).inclusion_proof(index, size) == proof
    assert verify_inclusion(LEAF_HASHES[index], index, size, proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_published_consistency_proofs(old: int, new: int, proof: list[bytes]) -> None:
    """V16.4.2: our consistency proofs are the published ones and they verify."""
    assert consistency_proof(old, LEAF_HASHES[:new]) == proof
    assert Tree(LEAF_HASHES).consistency_proof(old, new) == proof
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


@pytest.mark.parametrize("name", sorted(PROBES["inclusion"]))
def test_transparency_dev_inclusion_probes(name: str) -> None:
    """V16.4.2: every published inclusion probe, valid or mutated, gets the expected answer."""
    p = PROBES["inclusion"][name]
    proof = [b64(x) for x in p["proof"] or []]
    got = verify_inclusion(b64(p["leafHash"]), p["leafIdx"], p["treeSize"], proof, b64(p["root"]))
    assert got is not p["wantErr"], p["desc"]


@pytest.mark.parametrize("name", sorted(PROBES["consistency"]))
def test_transparency_dev_consistency_probes(name: str) -> None:
    """V16.4.2: every published consistency probe, valid or mutated, gets the expected answer."""
    p = PROBES["consistency"][name]
    proof = [b64(x) for x in p["proof"] or []]
    got = verify_consistency(p["size1"], p["size2"], b64(p["root1"]), b64(p["root2"]), proof)
    assert got is not p["wantErr"], p["desc"]


def test_every_proof_of_small_trees_round_trips() -> None:
    """Every inclusion and consistency proof of trees up to 40 leaves verifies, and
    fails for a neighbour leaf, a neighbour index, or a flipped proof byte.

    (The size is not always bound by an audit path alone: leaf 0's path in the
    tree of 3 also verifies as size 4 against that same root. A checkpoint
    signs the size with the root, which is what binds it.)"""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(40)]
    tree = Tree(leaves)
    roots = [root(leaves[:n]) for n in range(41)]
    for n in range(1, 41):
        assert tree.root(n) == roots[n]
        for i in range(n):
            proof = tree.inclusion_proof(i, n)
            assert proof == inclusion_proof(i, leaves[:n])
            assert verify_inclusion(leaves[i], i, n, proof, roots[n])
            assert not verify_inclusion(leaves[(i + 1) % 40], i, n, proof, roots[n])
            if i ^ 1 < n:
                assert not verify_inclusion(leaves[i], i ^ 1, n, proof, roots[n])
            if proof:
                bad = [*proof[:-1], bytes([proof[-1][0] ^ 1]) + proof[-1][1:]]
                assert not verify_inclusion(leaves[i], i, n, bad, roots[n])
        for m in range(1, n + 1):
            proof = tree.consistency_proof(m, n)
            assert verify_consistency(m, n, roots[m], roots[n], proof)
            if m < n:
                assert not verify_consistency(m, n, roots[m - 1], roots[n], proof)
                assert not verify_consistency(m, n, roots[m], roots[n - 1], proof)
                assert not verify_consistency(m, n, roots[m], roots[n], proof[:-1])


def test_rewritten_history_fails_consistency() -> None:
    """V16.4.2: changing, dropping or swapping one old leaf breaks consistency with
    the old signed root, wherever the leaf is."""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(33)]
    old_root = root(leaves[:20])
    for victim in (0, 7, 19):
        altered = list(leaves)
        altered[victim] = leaf_hash(b"forged")
        assert not verify_consistency(20, 33, old_root, root(altered), Tree(altered).consistency_proof(20))
        dropped = leaves[:victim] + leaves[victim + 1 :]
        assert not verify_consistency(20, 32, old_root, root(dropped), Tree(dropped).consistency_proof(20))
        swapped = list(leaves)
        swapped[victim], swapped[victim + 1] = swapped[victim + 1], swapped[victim]
        assert not verify_consistency(20, 33, old_root, root(swapped), Tree(swapped).consistency_proof(20))


def test_frontier_round_trips_through_bytes() -> None:
    """The sequencer saves (size, frontier bytes) and resumes with the same roots."""
    frontier = Frontier()
    leaves = [token_bytes(32) for _ in range(300)]
    for n, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        data = frontier.to_bytes()
        assert len(data) == 32 * n.bit_count()
        restored = Frontier.from_bytes(n, data)
        assert restored.root() == frontier.root() == root(leaves[:n])
        frontier = restored
    twin = frontier.copy()
    twin.append(leaves[0])
    assert frontier.size == 300
    assert twin.size == 301


@pytest.mark.parametrize(("size", "data"), [(1, b""), (3, b"\0" * 32), (-1, b""), (4, b"\0" * 64)])
def test_frontier_refuses_mismatched_state(size: int, data: bytes) -> None:
    with pytest.raises(ValueError, match="frontier"):
        Frontier.from_bytes(size, data)


def test_bad_arguments_are_refused() -> None:
    tree = Tree(LEAF_HASHES)
    with pytest.raises(ValueError, match="out of range"):
        tree.inclusion_proof(8)
    with pytest.raises(ValueError, match="out of range"):
        tree.inclusion_proof(0, 9)
    with pytest.raises(ValueError, match="old_size"):
        tree.consistency_proof(0)
    with pytest.raises(ValueError, match="old_size"):
        tree.consistency_proof(5, 4)
    with pytest.raises(ValueError, match="32 bytes"):
        Tree([b"short"])
    with pytest.raises(ValueError, match="32 bytes"):
        Frontier().append(b"short")
    # Verifiers never raise on attacker input: they answer False.
    assert not verify_inclusion(LEAF_HASHES[0], -1, 8, [], ROOTS[8])
    assert not verify_inclusion(b"short", 0, 1, [], ROOTS[1])
    assert not verify_inclusion(LEAF_HASHES[0], 0, 2, [b"short"], ROOTS[2])
    assert not verify_consistency(-1, 8, ROOTS[0], ROOTS[8], [])
    assert not verify_consistency(2, 4, ROOTS[2], ROOTS[4], [b"x" * 31])


def test_100k_leaves_are_fast_and_iterative() -> None:
    """A tree of 100,000 leaves: root by frontier and by levels agree, and proofs
    against an earlier size verify (no recursion limit anywhere)."""
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(100_000)]
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    tree = Tree(leaves)
    assert tree.root() == frontier.root()
    old = 65_537
    old_root = tree.root(old)
    assert verify_consistency(old, tree.size, old_root, tree.root(), tree.consistency_proof(old))
    for index in (0, 65_536, 99_999):
        assert verify_inclusion(leaves[index], index, tree.size, tree.inclusion_proof(index), tree.root())
    assert verify_inclusion(leaves[4], 4, old, tree.inclusion_proof(4, old), old_root)


def test_module_exports() -> None:
    assert set(merkle.__all__) >= {"leaf_hash", "node_hash", "root", "Frontier", "EMPTY_ROOT"}
