"""Near-duplicate communities from dedup's proximity graph, without chaining.

A near-duplicate graph chains: an original, its copies, a look-alike of one copy, a look-alike of
that look-alike... and connected components (or Louvain inside them) put all of them in one
community (on the demo an orange slice joined a group of glossy buttons at cosine 0.84). The
default rule, ``star``, bounds every community's diameter:

* **Centres.** Nodes are visited by degree (most edges first: an original is linked to each of
  its copies, a copy mostly to its original), ties by the quality rank of
  ``engine.vectors.dedup.representative_order``. An unassigned node becomes a centre.
* **Members.** The centre's unassigned graph neighbours join it, best edge first, each only when
  its cosine to *every* member already in is at least ``min_cosine`` (complete link against the
  ``diameter`` bound). Every member is thus one edge from the centre (within the threshold or the
  pHash distance of it) and no two members are further apart than ``min_cosine``: A ~ B ~ C with A
  and C unrelated is never one community. Rejected neighbours stay free for a later centre.

Without vectors (the pHash pass alone) the bound needs no check: Hamming distance is a metric, so
two members within d bits of their centre are within 2d bits of each other.

``louvain`` / ``leiden`` keep the earlier rule: connected components, large sparse ones split by
modularity (no bound on the diameter). Labels are canonical either way (the smallest node of each
community), so a run on a grown workspace equals a run from nothing.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

METHODS = ("star", "louvain", "leiden")
ROUND = 4  # decimals of an edge weight that order a centre's neighbours (star_communities)


def canonical(labels: np.ndarray) -> np.ndarray:
    """Each label replaced by the smallest node that carries it."""
    n = len(labels)
    smallest = np.full(labels.max() + 1, n, np.int64)
    np.minimum.at(smallest, labels, np.arange(n))
    return smallest[labels]


def star_communities(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    weight: np.ndarray,
    rank: np.ndarray,
    vectors: np.ndarray | None = None,
    min_cosine: float = -1.0,
) -> np.ndarray:
    """Community label per node by the ``star`` rule (module docstring).

    Args:
        n: nodes; (i, j, weight): undirected edges, each pair once.
        rank: quality rank per node (0 = best), the tie-break among equal degrees.
        vectors: (n, d) unit vectors of the nodes (NaN rows: no vector), or None (no diameter check).
        min_cosine: the diameter bound: the least cosine between two members.
    """
    labels = np.arange(n, dtype=np.int64)
    if n == 0 or len(i) == 0:
        return labels
    rows, cols = np.concatenate([i, j]), np.concatenate([j, i])
    # rounded: a search over a grown index and a fresh one differ in the last float bits, and
    # identical images tie; so equal edges are ordered by node, the same in both runs
    w = np.round(np.concatenate([weight, weight]).astype(np.float64), ROUND)
    order = np.lexsort((cols, -w, rows))  # per node: neighbours best edge first (ties: smaller id)
    rows, cols = rows[order], cols[order]
    start = np.searchsorted(rows, np.arange(n + 1))
    degree = np.diff(start)
    assigned = np.zeros(n, bool)
    for c in np.lexsort((np.arange(n), rank, -degree)):
        if assigned[c] or degree[c] == 0:
            continue
        assigned[c] = True
        members = [c]
        for m in cols[start[c] : start[c + 1]]:
            if assigned[m]:
                continue
            if vectors is not None and len(members) > 1:
                cos = vectors[members[1:]].astype(np.float32) @ vectors[m].astype(np.float32)
                if (cos < min_cosine).any():  # NaN (a node without a vector) is no objection
                    continue
            assigned[m] = True
            labels[m] = c
            members.append(m)
    return canonical(labels)


def modularity_communities(
    n: int, i: np.ndarray, j: np.ndarray, weight: np.ndarray, method: str, config
) -> tuple[np.ndarray, int]:
    """Connected components, those of ``config.louvain_min_size`` or more nodes that are sparser than
    ``config.dense`` split by Louvain or Leiden (networkx, seeded); labels and how many were split."""
    graph = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    _, comp = connected_components(graph, directed=False)
    labels = comp.astype(np.int64)
    size = np.bincount(comp)
    edges = np.bincount(comp[i], minlength=len(size)) if len(i) else np.zeros(len(size), np.int64)
    density = np.divide(edges, size * (size - 1) / 2, out=np.ones(len(size)), where=size > 1)
    split = np.flatnonzero((size >= config.louvain_min_size) & (density < config.dense))
    if len(split):
        import networkx as nx

        edge_comp = comp[i]
        next_label = len(size)
        for c in split:
            sel = edge_comp == c
            g = nx.Graph()
            g.add_nodes_from(np.flatnonzero(comp == c).tolist())
            g.add_weighted_edges_from(
                zip(i[sel].tolist(), j[sel].tolist(), weight[sel].tolist(), strict=True)
            )
            if method == "louvain":
                parts = nx.community.louvain_communities(g, resolution=config.resolution, seed=config.seed)
            else:
                try:
                    parts = nx.community.leiden_communities(g, resolution=config.resolution, seed=config.seed)
                except NotImplementedError as e:
                    raise ValueError(
                        "leiden needs a networkx backend that implements it (e.g. nx-cugraph); "
                        "use star or louvain"
                    ) from e
            for part in sorted(parts, key=min):
                labels[list(part)] = next_label
                next_label += 1
    return canonical(labels), len(split)
