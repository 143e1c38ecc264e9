"""Reads the tree forest of an Annoy 1.17 `dot` index file into NumPy arrays.

Annoy stores every node in one fixed-size record (`annoylib.h`, `DotProduct::Node` in 1.17):

        int32 n_descendants | int32 children[2] | float32 dot_factor | float32 v[dim]

so a record is `16 + 4 * dim` bytes and its "children" area holds `K = dim + 3` int32s.
Nodes `0 .. n_items-1` are the items (`v` = the vector). Other nodes are either buckets
(`n_descendants <= K`: `children[:n_descendants]` lists item ids) or splits (`v` is the
hyperplane normal, `children[0/1]` the sides). annoy 1.17's `DotProduct::margin` for a query
vector is `dot(v, q) + dot_factor**2` (the split's bias), reproduced here as `split_bias`.
Roots are copied to the end of the file and recognised, as annoy's own `load` does, as the
trailing run of nodes sharing `n_descendants`.
"""

import dataclasses
import os

import numpy as np

KIND_ITEM, KIND_BUCKET, KIND_SPLIT = 0, 1, 2


@dataclasses.dataclass
class AnnoyForest:
    """The forest of an Annoy `dot` index, as arrays.

    Attributes:
        items: float32 `[n_items, dim]` item vectors.
        roots: int32 `[n_trees]` root node ids, in annoy's order.
        kind: int8 `[n_nodes]` KIND_ITEM / KIND_BUCKET / KIND_SPLIT.
        children: int32 `[n_nodes, 2]` split sides (0 elsewhere).
        hyperplane_row: int32 `[n_nodes]` row in `hyperplanes` of a split node (0 elsewhere).
        hyperplanes: float32 `[n_splits, dim]` split normals.
        split_bias: float32 `[n_splits]` `dot_factor**2` added to the margin by annoy 1.17.
        leaf_offset: int32 `[n_nodes]` start of a node's items in `leaf_items`.
        leaf_count: int32 `[n_nodes]` number of items of an item/bucket node (0 for splits).
        leaf_items: int32 `[total + K]` concatenated bucket item ids (K padding at the end).
        max_leaf: int. `K`, the largest number of items a bucket holds.
        depth: int. Largest root-to-leaf depth.
    """
    items: np.ndarray
    roots: np.ndarray
    kind: np.ndarray
    children: np.ndarray
    hyperplane_row: np.ndarray
    hyperplanes: np.ndarray
    split_bias: np.ndarray
    leaf_offset: np.ndarray
    leaf_count: np.ndarray
    leaf_items: np.ndarray
    max_leaf: int
    depth: int


def read_annoy_forest(path, dim: int) -> AnnoyForest:
    """Parses an Annoy 1.17 `dot` index file.

    Args:
        path: the file written by `AnnoyIndex.save`.
        dim: int. The index dimension `f`.

    Returns:
        An `AnnoyForest`.

    Raises:
        ValueError: missing, empty or corrupt file, or a file of another metric/dimension.
    """
    record = 16 + 4 * dim
    if not os.path.isfile(path):
        raise ValueError(f"Annoy index file {path} does not exist: build the index or pass the "
                         "path of a file written by AnnoyIndex.save.")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % record:
        raise ValueError(f"Annoy index file {path} is corrupt or not a dot-metric index of dim "
                         f"{dim}: {raw.size} bytes is not a positive multiple of the {record}-byte "
                         "node record. Rebuild it.")
    nodes = raw.reshape(-1, record)
    n_nodes = nodes.shape[0]
    header = np.ascontiguousarray(nodes[:, :4]).view("<i4")[:, 0]
    slots = np.ascontiguousarray(nodes[:, 4:]).view("<i4")          # children area, K ints
    dot_factor = np.ascontiguousarray(nodes[:, 12:16]).view("<f4")[:, 0]
    vectors = np.ascontiguousarray(nodes[:, 16:]).view("<f4")
    max_leaf = slots.shape[1]

    # Roots: trailing run of equal n_descendants (annoy's `load`), minus the duplicate.
    roots, m = [], None
    for i in range(n_nodes - 1, -1, -1):
        if m is None or header[i] == m:
            roots.append(i)
            m = header[i]
        else:
            break
    if len(roots) > 1 and slots[roots[0], 0] == slots[roots[-1], 0]:
        roots.pop()
    n_items = int(m)
    if not 0 < n_items <= n_nodes:
        raise ValueError(
            f"Annoy index file {path} is corrupt: {n_items} items for {n_nodes} nodes.")

    kind = np.full(n_nodes, KIND_SPLIT, np.int8)
    kind[header <= max_leaf] = KIND_BUCKET
    is_item = (header == 1) & (np.arange(n_nodes) < n_items)
    kind[is_item] = KIND_ITEM
    split = kind == KIND_SPLIT
    children = np.where(split[:, None], slots[:, :2], 0).astype(np.int32)
    if split.any() and (children[split].min() < 0 or children[split].max() >= n_nodes):
        raise ValueError(f"Annoy index file {path} is corrupt: split children out of range.")
    hyperplane_row = np.zeros(n_nodes, np.int32)
    hyperplane_row[split] = np.arange(int(split.sum()), dtype=np.int32)

    leaf_count = np.where(kind == KIND_SPLIT, 0, header).astype(np.int32)
    leaf_count[is_item] = 1
    leaf_offset = np.zeros(n_nodes, np.int32)
    leaf_offset[1:] = np.cumsum(leaf_count)[:-1]
    pieces = []
    for i in np.flatnonzero(kind != KIND_SPLIT):
        pieces.append(np.array([i], np.int32) if is_item[i] else slots[i, :header[i]])
    leaf_items = np.concatenate(pieces + [np.zeros(max_leaf, np.int32)]).astype(np.int32)
    if leaf_items[:-max_leaf].size and (leaf_items[:-max_leaf].max() >= n_items
                                        or leaf_items[:-max_leaf].min() < 0):
        raise ValueError(f"Annoy index file {path} is corrupt: bucket item ids out of range.")

    return AnnoyForest(
        items=vectors[:n_items].astype(np.float32), roots=np.asarray(roots, np.int32),
        kind=kind, children=children, hyperplane_row=hyperplane_row,
        hyperplanes=vectors[split].astype(np.float32),
        split_bias=(dot_factor[split] * dot_factor[split]).astype(np.float32),
        leaf_offset=leaf_offset, leaf_count=leaf_count, leaf_items=leaf_items,
        max_leaf=int(max_leaf), depth=_depth(roots, kind, children))


def _depth(roots, kind, children) -> int:
    depth, frontier = 0, np.asarray(roots)
    while frontier.size:
        frontier = frontier[kind[frontier] == KIND_SPLIT]
        if not frontier.size:
            break
        depth += 1
        frontier = children[frontier].ravel()
        if depth > 10_000:
            raise ValueError("Annoy forest is corrupt: a cycle in the trees.")
    return depth
