"""Two-level partitioned MIPS search in stock TensorFlow ops (the search core of `PortableIndex`).

Layout (built once by `build_layout`, NumPy):
  * level 1, leaves: the k-means leaves of the partition (ScaNN's), each with a centre and a
    spread (root-mean-square residual per dimension);
  * level 2, blocks: every leaf is split into blocks of at most `block_size` candidates (k-means
    inside the leaf, then sub-clusters laid out along the leaf's main direction and cut into
    consecutive blocks), each with its own centre and radius (the largest distance of one of
    its candidates from the centre). The blocks of leaf `l` are
    `leaf_blocks[l]:leaf_blocks[l + 1]`; their candidates are stored padded as one
    `[num_blocks, block_size, dim]` float32 tensor (about 3% padding at 1M), so a block is read
    with one contiguous copy.

A leaf of more than `leaf_width` blocks is cut into several leaves, and `leaf_table` lists every
leaf's blocks in one fixed-width row (padded with an empty block), so that a small search is
one fixed-shape graph (`_search_padded`); a large one gathers the ragged block ranges.

Search (the same results for every batch size, no per-leaf loop):
  1. score the leaf centres, `q . c + leaf_spread_weight * |q| * spread`, and keep the best
     `leaves_to_search` leaves (on large partitions, about that many: see `select_leaves`);
  2. score the blocks of those leaves, `q . c + block_spread_weight * |q| * radius`, and keep
     the best `blocks_to_search` blocks;
  3. score the candidates of those blocks exactly (float32) and return the top k.
The spread term ranks a wide leaf or block above a tight one whose centre scores the same: over
a region with isotropic spread, `q . x` has standard deviation `|q| * spread` around the
centre's score, so the region's best score exceeds it by a multiple of that; and large-norm
candidates, the inner-product winners, live in the wide regions. For a block,
`q . c + |q| * radius` bounds the score of every candidate in it (Cauchy-Schwarz); a fraction
of that margin ranks better than the full bound or the block's spread, since a residual is
rarely aligned with q. On the 1M benchmark (NumPy, 300 queries, 200 of 2,000 leaves) the
radius at weight 0.2 reached recall@10 0.954 with 24 blocks and 0.963 with 32, where the
spread at its best weight (2-3) needed 48 blocks for 0.957 (`benchmarks/index/RESULTS.md`).
Large batches run in chunks (`chunk_size`: 16 queries on the 1M benchmark, a whole batch of
256 on small searches) so that no intermediate tensor grows past about 16 MB (larger ones are
page-faulted in on every call by the C allocator).

References:
  Guo et al., "Accelerating Large-Scale Inference with Anisotropic Vector Quantization", ICML 2020,
  https://arxiv.org/abs/1908.10396 (ScaNN: k-means tree partition, exact re-scoring).
  Jegou et al., "Product Quantization for Nearest Neighbor Search", TPAMI 2011 (inverted file,
  residual vector quantization).
  Babenko and Lempitsky, "The Inverted Multi-Index", CVPR 2012 (finer second-level cells).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

# Queries per chunk of a large batch (bounds the size of the gathered block tensors; 16 was
# fastest on the 1M benchmark, against 8, 32 and 64).
CHUNK = 16
# A chunk's gathered tensors are kept near CHUNK_BYTES (see `chunk_size`); at most MAX_CHUNK
# queries per chunk.
CHUNK_BYTES = 16 * 2**20
MAX_CHUNK = 256
# Leaf selection switches from an exact top-k to a sampled threshold (see `select_leaves`) for
# partitions of at least SAMPLED_MIN_LEAVES leaves when at least SAMPLED_MIN_PROBES are kept.
SAMPLED_MIN_LEAVES = 1024
SAMPLED_MIN_PROBES = 64
SAMPLE_STRIDE = 4
_NEG_INF = float("-inf")
# Searches gathering at most this many floats per query (keys and candidates) run as one
# fixed-shape graph (`_search_padded`): 96 KB a query, 24 MB for a batch of 256.
PADDED_MAX_FLOATS = 24_576
# Leaves per group of the two-step leaf selection of small searches (`_leaf_table_rows`).
LEAF_GROUP = 16
_KMEANS_ITERATIONS = 6


def split_leaf(points: np.ndarray, block_size: int, rng: np.random.Generator) -> np.ndarray:
    """Order of one leaf's points such that consecutive runs of `block_size` are tight blocks.

    k-means with `ceil(m / block_size)` centres (a few Lloyd steps from distinct random points),
    sub-clusters sorted along the first principal direction of their centres, points sorted by
    (sub-cluster, projection on that direction). Cutting the result into consecutive runs of
    `block_size` gives blocks that are sub-clusters or the ends of two neighbouring ones, with
    no padding except in the leaf's last block.

    Args:
      points: `[m, dim]` float32 points of the leaf.
      block_size: int >= 1.
      rng: NumPy generator (initial centres).

    Returns:
      `[m]` int64 permutation of `range(m)`.
    """
    m = points.shape[0]
    if m <= block_size:
        return np.arange(m, dtype=np.int64)
    k = int(np.ceil(m / block_size))
    centres = points[rng.choice(m, k, replace=False)].astype(np.float64)
    x = points.astype(np.float64)
    sq = (x * x).sum(1)
    for _ in range(_KMEANS_ITERATIONS):
        labels = np.argmin(sq[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1), axis=1)
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, x)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    centred = centres - centres.mean(0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    cluster_rank = np.argsort(np.argsort(centred @ direction, kind="stable"), kind="stable")
    return np.lexsort((x @ direction, cluster_rank[labels])).astype(np.int64)


def default_leaf_width(blocks_per_leaf: np.ndarray) -> int:
    """Row width of the leaf table: the power of two >= the mean blocks of a non-empty leaf.

    Leaves with more blocks are cut (see `build_layout`). On the small-search benchmark (894
    k-means leaves of 7.5 blocks on average, the largest 371) this is 8 and gives 1,251
    leaves; at recall@10 0.95 it searched 4 leaves / 2 blocks, against 5 / 2 with width 12
    and 6 / 3 with width 16, and ran 1.5x (batch 256) and 1.1x (batch 1) as many queries per
    CPU second as width 16 (`benchmarks/index/RESULTS.md`).
    """
    filled = blocks_per_leaf[blocks_per_leaf > 0]
    mean = float(filled.mean()) if filled.size else 1.0
    return int(2 ** np.ceil(np.log2(max(mean, 1.0))))


def build_layout(embeddings: np.ndarray, centroids: np.ndarray, assignment: np.ndarray,
                 block_size: int = 32, leaf_width: Optional[int] = None, seed: int = 0,
                 progress: Optional[Callable[[str], None]] = None) -> dict[str, np.ndarray]:
    """Splits every leaf into blocks and lays the candidates out for `search`.

    A leaf of more than `leaf_width` blocks is cut into consecutive runs of at most that many
    blocks (balanced), each a leaf of its own with the centre and spread of its candidates: the
    blocks of a leaf are laid out along its main direction, so a run is a compact region. Then
    every leaf's blocks fit one row of `leaf_table`, which lets small searches run as one
    fixed-shape graph (`_search_padded`).

    Args:
      embeddings: `[n, dim]` float32 candidates.
      centroids: `[num_leaves, dim]` float32 leaf centres (the k-means partition).
      assignment: `[n]` int leaf of every candidate.
      block_size: int. Candidates per block (the last block of a leaf may hold fewer).
      leaf_width: Optional int >= 1, the most blocks of one leaf (default `default_leaf_width`).
      seed: int. Seed of the per-leaf k-means initialisation (the layout is deterministic).
      progress: Optional callable receiving progress messages (about every 10% of the leaves).

    Returns:
      dict of arrays, with `L` leaves after splitting and padding (empty leaves make `L` a
      multiple of `LEAF_GROUP`) and `B` blocks:
      `leaf_keys [dim + 2, L]` (leaf centres, transposed, a row of leaf spreads and a row of
      biases: 0, and -inf for the padding leaves),
      `leaf_blocks [L + 1]` int64 (the blocks of leaf `l` are `leaf_blocks[l]:leaf_blocks[l+1]`),
      `leaf_table [L / LEAF_GROUP, LEAF_GROUP, leaf_width]` int32 (the same blocks, padded
      with block `B`; row `l` of the flattened `[L, leaf_width]` table is leaf `l`),
      `block_keys [B + 1, dim + 2]` (block centres, a column of block radii and a column of
      biases: 0, and -inf for the empty block `B`), `blocks [B + 1, block_size, dim]` float32
      (zero padding; block `B` is empty) and `block_rows [B + 1, block_size]` int32 (original
      candidate row, -1 for padding). With the spread or radius stored beside the centre,
      `[q, weight * |q|, 1] . key` is the whole ranking score in one product.
    """
    embeddings = np.asarray(embeddings, np.float32)
    centroids = np.asarray(centroids, np.float32)
    num_leaves, dim = centroids.shape
    rng = np.random.default_rng(seed)
    order = np.argsort(assignment, kind="stable")
    bounds = np.searchsorted(assignment[order], np.arange(num_leaves + 1))
    blocks_per_leaf = -(-np.diff(bounds) // block_size)
    width = int(leaf_width) if leaf_width is not None else default_leaf_width(blocks_per_leaf)
    leaf_centres, leaf_spreads, leaf_sizes, row_chunks = [], [], [], []
    step = max(1, num_leaves // 10)
    total = 0

    def add_leaf(rows, centre):
        points = embeddings[rows[rows >= 0]]
        residual = points - centre
        leaf_centres.append(centre)
        leaf_spreads.append(np.sqrt((residual * residual).sum(1).mean() / dim)
                            if len(points) else 0.0)
        leaf_sizes.append(rows.shape[0])
        row_chunks.append(rows)

    for leaf in range(num_leaves):
        members = order[bounds[leaf]:bounds[leaf + 1]]
        if members.size:
            members = members[split_leaf(embeddings[members], block_size, rng)]
        padded = -np.ones(-(-members.size // block_size) * block_size, np.int32)
        padded[:members.size] = members
        rows = padded.reshape(-1, block_size)
        if rows.shape[0] <= width:
            add_leaf(rows, centroids[leaf])
        else:
            for part in np.array_split(rows, -(-rows.shape[0] // width)):
                add_leaf(part, embeddings[part[part >= 0]].mean(0))
        total += rows.shape[0]
        if progress is not None and (leaf + 1) % step == 0:
            progress(f"split {leaf + 1}/{num_leaves} leaves into {total} blocks")
    # Empty leaves pad the leaf count to a multiple of LEAF_GROUP (`_leaf_table_rows`).
    real_leaves = len(leaf_sizes)
    for _ in range(-real_leaves % LEAF_GROUP):
        leaf_centres.append(np.zeros(dim, np.float32))
        leaf_spreads.append(0.0)
        leaf_sizes.append(0)
    leaf_blocks = np.concatenate([[0], np.cumsum(leaf_sizes)]).astype(np.int64)
    num_blocks = int(leaf_blocks[-1])
    block_rows = np.concatenate(row_chunks + [-np.ones((1, block_size), np.int32)])
    leaf_table = np.full((len(leaf_sizes), width), num_blocks, np.int32)
    for leaf, (start, end) in enumerate(zip(leaf_blocks[:-1], leaf_blocks[1:])):
        leaf_table[leaf, :end - start] = np.arange(start, end)
    real = block_rows >= 0
    blocks = np.where(real[..., None], embeddings[np.maximum(block_rows, 0)], 0.0
                      ).astype(np.float32)
    counts = np.maximum(real.sum(1), 1).astype(np.float32)
    block_centres = (blocks.sum(1) / counts[:, None]).astype(np.float32)
    residual = np.where(real[..., None], blocks - block_centres[:, None], 0.0)
    block_radius = np.sqrt((residual * residual).sum(2).max(1)).astype(np.float32)
    bias = np.zeros(num_blocks + 1, np.float32)
    bias[num_blocks] = _NEG_INF
    leaf_bias = np.zeros(len(leaf_sizes), np.float32)
    leaf_bias[real_leaves:] = _NEG_INF
    leaf_keys = np.concatenate([np.asarray(leaf_centres, np.float32).reshape(-1, dim).T,
                                np.asarray(leaf_spreads, np.float32)[None],
                                leaf_bias[None]]).astype(np.float32)
    block_keys = np.concatenate([block_centres, block_radius[:, None], bias[:, None]], 1)
    return {"leaf_keys": np.ascontiguousarray(leaf_keys), "leaf_blocks": leaf_blocks,
            "leaf_table": leaf_table.reshape(-1, LEAF_GROUP, width),
            "block_keys": block_keys.astype(np.float32),
            "blocks": blocks, "block_rows": block_rows}


def search(layout, queries, k, leaves_to_search, blocks_to_search, leaf_spread_weight=1.0,
           block_spread_weight=0.2, max_k=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-k by inner product over a layout from `build_layout` (arrays, tensors or variables).

    The knobs are Python numbers, fixed in the traced graph: a small search (a few leaves and
    blocks, see `PADDED_MAX_FLOATS`) runs as one fixed-shape graph for every batch size
    (`_search_padded`), a large one gathers exactly the blocks of its leaves, in chunks of
    queries (`_search_one`, `_search_chunk`). Both return the same results.

    Args:
      layout: dict with the keys `build_layout` returns.
      queries: `[batch, dim]` float32.
      k: int32 scalar (Python int or tensor).
      leaves_to_search: int. Leaves kept per query (clipped to `[1, number of leaves]`).
      blocks_to_search: int >= 1. Blocks of those leaves scored exactly per query.
      leaf_spread_weight: float. Weight of `|q| * spread` in the leaf ranking.
      block_spread_weight: float. Weight of `|q| * radius` in the block ranking.
      max_k: Optional Python int, the largest `k` a tensor `k` can take (lets the graphs pad
        with a constant; default: `k` when it is a Python int).

    Returns:
      `(scores [batch, k] float32, rows [batch, k] int32)`: original candidate rows, best first;
      `(-inf, -1)` fill the tail when the searched blocks hold fewer than `k` candidates.
    """
    queries = tf.convert_to_tensor(queries, tf.float32)
    num_leaves = int(layout["leaf_keys"].shape[1])
    probes = int(min(max(int(leaves_to_search), 1), num_leaves))
    knobs = (probes, int(blocks_to_search), float(leaf_spread_weight),
             float(block_spread_weight))
    pad = max_k if max_k is not None else (k if isinstance(k, int) else None)
    padded = padded_floats(layout, *knobs[:2]) <= PADDED_MAX_FLOATS
    # Read each variable the graph uses once into a tensor: the search gathers from plain
    # tensors (a sparse read of a resource variable mixed with dense reads makes TF copy the
    # variable per read), and an unused variable would still be an input of the signature.
    used = _PADDED_INPUTS if padded else tuple(layout)
    t = {name: tf.convert_to_tensor(layout[name]) for name in used}
    if padded:
        return _search_padded(t, queries, k, *knobs, pad)
    batch = tf.shape(queries)[0]
    if queries.shape[0] == 1:
        return _search_one(t, queries, k, *knobs, pad)
    if queries.shape[0] is not None and queries.shape[0] <= CHUNK:
        return _search_chunk(t, queries, k, *knobs)

    def chunked(chunk):
        chunks = (batch + chunk - 1) // chunk
        empty = (tf.TensorArray(tf.float32, size=chunks, infer_shape=False),
                 tf.TensorArray(tf.int32, size=chunks, infer_shape=False))

        def step(i, scores, rows):
            s, r = _search_chunk(t, queries[i * chunk:(i + 1) * chunk], k, *knobs)
            return i + 1, scores.write(i, s), rows.write(i, r)

        # An explicit while loop (not AutoGraph), so that callers need not be tf.functions.
        _, scores, rows = tf.while_loop(lambda i, *_: i < chunks, step, (0, *empty))
        return scores.concat(), rows.concat()

    def small():
        chunk = chunk_size(t, probes, knobs[1])
        return tf.cond(batch <= chunk, lambda: _search_chunk(t, queries, k, *knobs),
                       lambda: chunked(chunk))

    return tf.cond(tf.equal(batch, 1), lambda: _search_one(t, queries, k, *knobs, pad), small)


# The layout arrays `_search_padded` reads (not `leaf_blocks`).
_PADDED_INPUTS = ("leaf_keys", "leaf_table", "block_keys", "blocks", "block_rows")


def _key_query(queries, norm, weight):
    """`[q, weight * |q|, 1]`: its product with a leaf or block key (centre, spread or radius,
    bias) is the ranking score."""
    return tf.concat([queries, weight * norm, tf.ones_like(norm)], 1)


def _padded_sizes(t, probes: int, blocks_to_search: int):
    """`(leaf width, block size, dim, blocks searched)` of `_search_padded`."""
    width = int(t["leaf_table"].shape[-1])
    _, size, dim = (int(d) for d in t["blocks"].shape)
    return width, size, dim, min(blocks_to_search, probes * width)


def padded_floats(t, probes: int, blocks_to_search: int) -> int:
    """Floats one query gathers in `_search_padded`: the keys of `probes` full leaf-table rows
    and the candidates of `blocks_to_search` blocks."""
    width, size, dim, searched = _padded_sizes(t, probes, blocks_to_search)
    return probes * width * (dim + 2) + searched * size * dim


def _search_padded(t, queries, k, probes, blocks_to_search, leaf_weight, block_weight, pad):
    """The three-step search as one fixed-shape graph for any batch, without `tf.cond`.

    Every leaf's blocks are one row of `leaf_table`, padded with the empty block, whose key
    scores -inf: a query scores `probes * leaf_width` block keys, about twice the blocks its
    leaves hold, and in exchange needs no ragged ranges, masks per query, chunks or branches.
    Through TensorFlow's C API (TF Serving's path) every executed op costs about half a
    microsecond whatever it computes, and on a small search the arithmetic costs about as much:
    a batch-1 call of the exported signature executes 73 nodes (with the signature's own
    checks, constants and variable reads), where the ragged graph behind a `tf.cond` executed
    120 (and the executor also walked the untaken branch's ops). What keeps it there: only the
    variables it reads are inputs (each costs a handle, an identity and a read), the leaf table
    is stored in its groups (no reshape), and identifiers are one gather at `rows + 1`
    (`Index._gather_ids`). Tried and not kept: candidate rows `[x, 0, bias]` scored by the
    block key query (padding -inf without the mask and select: 69 nodes, about 9% faster at
    batch 1 here) made the 1M searches, which gather and score those 66-float rows, about 4%
    slower at batch 1 and up to 9% at batch 256.
    """
    width, size, dim, searched = _padded_sizes(t, probes, blocks_to_search)
    norm = tf.raw_ops.EuclideanNorm(input=queries, axis=tf.constant([1]), keep_dims=True)
    leaf_scores = tf.matmul(_key_query(queries, norm, leaf_weight), t["leaf_keys"])
    blocks = tf.reshape(_leaf_table_rows(t["leaf_table"], leaf_scores, probes),
                        [-1, probes * width])
    block_query = tf.expand_dims(_key_query(queries, norm, block_weight), 1)
    # Multiply and sum, not a batched matmul: at batch 1 it is faster here.
    coarse = tf.reduce_sum(tf.gather(t["block_keys"], blocks) * block_query, axis=2)
    _, at = tf.math.top_k(coarse, searched, sorted=False)
    chosen = tf.gather(blocks, at, batch_dims=1)  # [b, searched]
    vectors = tf.reshape(tf.gather(t["blocks"], chosen), [-1, searched * size, dim])
    scores = tf.reduce_sum(vectors * tf.expand_dims(queries, 1), axis=2)
    rows = tf.reshape(tf.gather(t["block_rows"], chosen), [-1, searched * size])
    scores = tf.where(rows >= 0, scores, _NEG_INF)
    if pad is None or searched * size < pad:
        return _top_k_padded(scores, rows, k)
    top_scores, index = tf.math.top_k(scores, k)
    return top_scores, tf.gather(rows, index, batch_dims=1)


def _leaf_table_rows(table, leaf_scores, probes):
    """`leaf_table` rows `[b, probes, width]` of the `probes` best leaves of each query.

    `table` is `[L / LEAF_GROUP, LEAF_GROUP, width]`, as `build_layout` stores it (the groups
    of the first step; no reshape op in the graph).

    On a partition of many leaves, in two steps: the best `probes` groups of `LEAF_GROUP`
    consecutive leaves by their best leaf score, then the best `probes` leaves of those groups.
    The best leaves lie in those groups (a group holding one of them scores at least the
    `probes`-th best score, up to ties), so the result is the exact top-k, from two top-ks over
    `L / LEAF_GROUP` and `probes * LEAF_GROUP` scores instead of one over `L`: TensorFlow's CPU
    top-k costs several nanoseconds per element, and over all leaves it was a third of a
    batch-256 search on the small-search benchmark.
    """
    width = int(table.shape[-1])
    num_leaves = int(np.prod(table.shape[:-1]))
    if num_leaves % LEAF_GROUP or 2 * probes * LEAF_GROUP > num_leaves:
        _, leaf = tf.math.top_k(leaf_scores, probes, sorted=False)
        return tf.gather(tf.reshape(table, [num_leaves, width]), leaf)
    groups = tf.reshape(leaf_scores, [-1, num_leaves // LEAF_GROUP, LEAF_GROUP])
    _, best = tf.math.top_k(tf.reduce_max(groups, axis=2), probes, sorted=False)  # [b, probes]
    inner = tf.reshape(tf.gather(groups, best, batch_dims=1), [-1, probes * LEAF_GROUP])
    _, at = tf.math.top_k(inner, probes, sorted=False)
    rows = tf.gather(table, best)
    return tf.gather(tf.reshape(rows, [-1, probes * LEAF_GROUP, width]), at, batch_dims=1)


def chunk_size(t, probes, blocks_to_search):
    """Queries per chunk of a large batch: as many as keep the gathered tensors near CHUNK_BYTES.

    Per query, a chunk gathers the keys of every block of its `probes` leaves (about
    `probes * num_blocks / num_leaves` rows of `dim + 1` floats) and the candidates of
    `blocks_to_search` blocks (`block_size * dim` floats each). Clipped to
    `[CHUNK, MAX_CHUNK]`: on the 1M benchmark (200 leaves, 32 blocks: about 1 MB a query) this
    is CHUNK; a small search (a few leaves and blocks) runs a batch of 256 in one chunk instead
    of 16, and the per-chunk op count no longer dominates.

    Args:
      t: the layout's tensors.
      probes: int, leaves searched.
      blocks_to_search: int32 scalar.

    Returns:
      int32 scalar.
    """
    num_blocks, size, dim = (t["blocks"].shape[i] or tf.shape(t["blocks"])[i] for i in range(3))
    num_leaves = t["leaf_keys"].shape[1] or tf.shape(t["leaf_keys"])[1]
    per_query = 4.0 * (tf.cast(probes * num_blocks // num_leaves + 1, tf.float32) * (dim + 1)
                       + tf.cast(blocks_to_search * size * dim, tf.float32))
    return tf.clip_by_value(tf.cast(CHUNK_BYTES / per_query, tf.int32), CHUNK, MAX_CHUNK)


def select_leaves(leaf_scores, probes):
    """The leaves each query keeps: `(query [m] int64, leaf [m] int64)`, grouped by query.

    Exact top-`probes` per row on small partitions or small `probes`. With at least
    `SAMPLED_MIN_LEAVES` leaves and `SAMPLED_MIN_PROBES` probes, a row keeps every leaf scoring
    at least the `ceil(probes / SAMPLE_STRIDE)`-th best score among every `SAMPLE_STRIDE`-th
    leaf: about `probes` leaves (the best ones, a number that varies a little per query) for a
    top-k over a quarter of the row. TensorFlow's CPU top-k with k in the hundreds costs about
    25 ns per element, and this selection was a sixth of the whole search at batch 256.

    Args:
      leaf_scores: `[b, L]` float32 leaf scores (`L` known when tracing).
      probes: int, `1 <= probes <= L`.

    Returns:
      `(query, leaf)`: int64 `[m]` each; `query` is non-decreasing.
    """
    batch = tf.shape(leaf_scores)[0]

    def exact():
        _, leaves = tf.math.top_k(leaf_scores, probes, sorted=False)
        query = tf.repeat(tf.range(batch, dtype=tf.int64), probes)
        return query, tf.cast(tf.reshape(leaves, [-1]), tf.int64)

    def sampled():
        sample = leaf_scores[:, ::SAMPLE_STRIDE]
        keep = tf.minimum((probes + SAMPLE_STRIDE - 1) // SAMPLE_STRIDE, tf.shape(sample)[1])
        cut = tf.reduce_min(tf.math.top_k(sample, keep, sorted=False).values, axis=1,
                            keepdims=True)
        where = tf.where(leaf_scores >= cut)
        return where[:, 0], where[:, 1]

    if int(leaf_scores.shape[1]) >= SAMPLED_MIN_LEAVES and probes >= SAMPLED_MIN_PROBES:
        return sampled()
    return exact()


def _search_one(t, queries, k, probes, blocks_to_search, leaf_weight, block_weight, pad):
    """`_search_chunk` for a single query `[1, dim]`, in as few executed ops as possible.

    Through TensorFlow's C API (TF Serving's path) every executed op costs about 1 us whatever
    it computes, and a small search (a few leaves, a few blocks) computes little: one query
    needs no per-query padding, masks or segment sums, the leaves' block ranges come from one
    `RaggedRange` op, and the candidates are padded to `pad` (>= k) with one constant instead
    of a dynamic `tf.pad`.
    """
    norm = tf.sqrt(tf.reduce_sum(queries * queries, axis=1, keepdims=True))  # [1, 1]
    leaf_scores = tf.matmul(_key_query(queries, norm, leaf_weight), t["leaf_keys"])
    _, leaf = tf.math.top_k(leaf_scores, probes, sorted=False)
    leaf = tf.reshape(leaf, [-1])
    blocks = tf.raw_ops.RaggedRange(starts=tf.gather(t["leaf_blocks"], leaf),
                                    limits=tf.gather(t["leaf_blocks"], leaf + 1),
                                    deltas=tf.constant(1, tf.int64)).rt_dense_values
    # Multiply and sum, not a matmul: `m` changes with every query, and oneDNN's matmul
    # builds (JIT-compiles) a new kernel for every new shape.
    coarse = tf.reduce_sum(tf.gather(t["block_keys"], blocks)
                           * _key_query(queries, norm, block_weight), axis=1)  # [m]
    _, at = tf.math.top_k(coarse, tf.minimum(blocks_to_search, tf.size(blocks)), sorted=False)
    chosen = tf.gather(blocks, at)  # [searched]
    dim = t["blocks"].shape[2] or tf.shape(t["blocks"])[2]
    scores = tf.matmul(queries, tf.reshape(tf.gather(t["blocks"], chosen), [-1, dim]),
                       transpose_b=True)  # [1, searched * block_size]
    rows = tf.reshape(tf.gather(t["block_rows"], chosen), [1, -1])
    # [1, -1]: a lowered tf.cond may run this branch's ops on a larger batch too (their result
    # is discarded); the reshape keeps them shape-valid.
    scores = tf.where(rows >= 0, tf.reshape(scores, [1, -1]), _NEG_INF)
    if isinstance(pad, int):
        scores = tf.concat([scores, tf.fill([1, pad], _NEG_INF)], 1)
        rows = tf.concat([rows, tf.fill([1, pad], tf.constant(-1, rows.dtype))], 1)
        top_scores, index = tf.math.top_k(scores, k)
        return top_scores, tf.gather(rows, index, batch_dims=1)
    return _top_k_padded(scores, rows, k)


def _search_chunk(t, queries, k, probes, blocks_to_search, leaf_weight, block_weight):
    """The three-step search for a batch of at most a few `CHUNK`s of queries.

    `probes` is `leaves_to_search` clipped to `[1, num_leaves]` (by `search`).
    """
    batch = tf.shape(queries)[0]
    dim = tf.shape(queries)[1]
    norms = tf.norm(queries, axis=1, keepdims=True)  # [b, 1]
    # 1. Leaves.
    leaf_scores = tf.matmul(_key_query(queries, norms, leaf_weight), t["leaf_keys"])
    query, leaf = select_leaves(leaf_scores, probes)
    # 2. Blocks of those leaves, padded per query with -1.
    starts = tf.gather(t["leaf_blocks"], leaf)
    ends = tf.gather(t["leaf_blocks"], leaf + 1)
    per_query = tf.math.unsorted_segment_sum(ends - starts, query, batch)
    flat = tf.ragged.range(starts, ends).flat_values
    candidates = tf.RaggedTensor.from_row_lengths(flat, per_query).to_tensor(default_value=-1)
    safe = tf.maximum(candidates, 0)
    # Multiply and sum, not a batched matmul: the padded width changes with every batch, and
    # oneDNN's matmul builds (JIT-compiles) a new kernel for every new shape (at batch 256 on
    # the small-search benchmark that took most of the call).
    block_query = _key_query(queries, norms, block_weight)[:, tf.newaxis, :]
    coarse = tf.reduce_sum(tf.gather(t["block_keys"], safe) * block_query, axis=2)
    coarse = tf.where(candidates >= 0, coarse, _NEG_INF)
    searched = tf.minimum(blocks_to_search, tf.shape(coarse)[1])
    best_coarse, at = tf.math.top_k(coarse, searched, sorted=False)  # [b, searched]
    chosen = tf.gather(candidates, at, batch_dims=1)
    usable = tf.logical_and(chosen >= 0, best_coarse > _NEG_INF)
    chosen = tf.maximum(chosen, 0)
    # 3. Exact scores of the chosen blocks' candidates.
    vectors = tf.reshape(tf.gather(t["blocks"], chosen), [batch, -1, dim])
    scores = tf.matmul(vectors, queries[:, :, tf.newaxis])  # [b, searched * size, 1]
    rows = tf.gather(t["block_rows"], chosen)  # [b, searched, size]
    keep = tf.logical_and(usable[:, :, tf.newaxis], rows >= 0)
    scores = tf.where(keep, tf.reshape(scores, tf.shape(rows)), _NEG_INF)
    # The top k candidates lie in the k blocks with the best maxima: a top-k over block maxima,
    # then over those blocks' candidates, is exact and cheaper than one over every candidate.
    _, best_blocks = tf.math.top_k(tf.reduce_max(scores, axis=2),
                                   tf.minimum(k, tf.shape(scores)[1]), sorted=False)
    scores = tf.reshape(tf.gather(scores, best_blocks, batch_dims=1), [batch, -1])
    rows = tf.reshape(tf.gather(rows, best_blocks, batch_dims=1), [batch, -1])
    return _top_k_padded(scores, rows, k)


def _top_k_padded(scores, rows, k):
    """Row-wise top-k of `scores [b, m]` carrying `rows [b, m]`; (-inf, -1) pad if m < k."""
    short = tf.maximum(k - tf.shape(scores)[1], 0)
    scores = tf.pad(scores, [[0, 0], [0, short]], constant_values=_NEG_INF)
    rows = tf.pad(rows, [[0, 0], [0, short]], constant_values=-1)
    top_scores, index = tf.math.top_k(scores, k)
    top_rows = tf.gather(rows, index, batch_dims=1)
    return top_scores, tf.where(top_scores > _NEG_INF, top_rows, tf.constant(-1, rows.dtype))
