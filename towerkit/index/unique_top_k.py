"""Top-k over a row of (score, candidate row) pairs that may name the same candidate twice."""

import tensorflow as tf


def unique_top_k(scores: tf.Tensor, rows: tf.Tensor, k) -> tuple[tf.Tensor, tf.Tensor]:
    """Keeps, for each query, the `k` best distinct candidate rows (max score per row).

    Used by every index to merge the per-interest results of multi-vector queries and to
    deduplicate candidates collected from several trees or leaves. Rows `< 0` are padding
    and never returned unless a query has fewer than `k` distinct valid rows, in which case
    the tail holds score `-inf` and row `-1`.

    Args:
        scores: float32 `[batch, m]` candidate scores.
        rows: int32 `[batch, m]` candidate row indices (`-1` for padding).
        k: int or int32 scalar tensor, `k <= m`.

    Returns:
        `(scores [batch, k], rows [batch, k])`, scores in descending order.
    """
    scores = tf.convert_to_tensor(scores, tf.float32)
    rows = tf.cast(rows, tf.int32)
    m = tf.shape(scores)[1]
    neg_inf = tf.fill(tf.shape(scores), float("-inf"))
    scores = tf.where(rows < 0, neg_inf, scores)
    # Best first, then a stable sort by row: inside each run of equal rows the first
    # element is that row's maximum score, and every later one is a duplicate.
    by_score, order = tf.math.top_k(scores, k=m)
    rows_by_score = tf.gather(rows, order, batch_dims=1)
    perm = tf.argsort(rows_by_score, axis=1, stable=True)
    grouped_rows = tf.gather(rows_by_score, perm, batch_dims=1)
    grouped_scores = tf.gather(by_score, perm, batch_dims=1)
    duplicate = tf.concat(
        [tf.zeros_like(grouped_rows[:, :1], tf.bool),
         tf.equal(grouped_rows[:, 1:], grouped_rows[:, :-1])], axis=1)
    invalid = tf.logical_or(duplicate, grouped_rows < 0)
    grouped_scores = tf.where(invalid, tf.fill(tf.shape(grouped_scores), float("-inf")),
                              grouped_scores)
    top_scores, top = tf.math.top_k(grouped_scores, k=k)
    top_rows = tf.gather(grouped_rows, top, batch_dims=1)
    top_rows = tf.where(tf.math.is_inf(top_scores) & (top_scores < 0), -tf.ones_like(top_rows),
                        top_rows)
    return top_scores, top_rows
