"""Where the Vera Edit node's nodes live, and connecting them so that a refusal is never silent.

A gizmo's button runs with the gizmo as Nuke's current group: `nuke.nodes.X`, `createNode`, `allNodes()`
and `toNode()` then act *inside* the gizmo, and `setInput` across groups returns False without raising
(Foundry nuke.allNodes / nuke.thisGroup docs; the bug fixed in tk-nuke-writenode PR 35 and Cryptomatte
PR 127). So everything a button makes is made inside `parent_group(node)` (root for a node at root, the
enclosing Group for a node inside one), nodes are found by full name from root, and every connection is
checked.
"""

from __future__ import annotations


class ConnectError(Exception):
    """Nuke refused a connection (setInput returned False): a one-line message for the artist."""


def _nuke():
    import nuke

    return nuke


def parent_group(node):
    """The group holding `node`: nuke.root(), or the Group from its full name (`Group1.VeraEdit1`)."""
    nuke = _nuke()
    path = node.fullName().rpartition(".")[0]
    if not path:
        return nuke.root()
    with nuke.root():
        group = nuke.toNode(path)
    if group is None:
        raise ConnectError(f"{node.fullName()}: cannot find its group {path}")
    return group


def node_by_full_name(full_name: str):
    """A node by its full name (`Group1.VeraEdit1`), whatever group is current."""
    nuke = _nuke()
    with nuke.root():
        return nuke.toNode(full_name)


def all_nodes_everywhere():
    """Every node of the script, inside groups too (not only the current group's)."""
    nuke = _nuke()
    return nuke.allNodes(group=nuke.root(), recurseGroups=True)


def connect(node, index: int, upstream) -> None:
    """node.setInput(index, upstream), raising ConnectError when Nuke refuses (returns False)."""
    if not node.setInput(index, upstream):
        raise ConnectError(f"Nuke refused to connect {upstream.fullName() if upstream else 'nothing'} to input "
                           f"{index} of {node.fullName()} (they must be in the same group)")
