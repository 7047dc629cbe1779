"""Graph-side Poisson sampling of a ``PrivateDataLoader``'s rows, for op_tensorflow's training loop."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["graph_sampler"]


def graph_sampler(x_rows: np.ndarray, y_rows: np.ndarray, q: float):
    """A graph-side Poisson sampler ``seed -> (x, y)`` for op_tensorflow's training loop.

    Inclusion is a Bernoulli(q) process over the rows; the gaps between included rows are
    Geometric(q), so drawing gaps costs O(batch), not O(n). Gaps are drawn in chunks of
    ``q n + 10 sd + 16`` until they pass row ``n - 1`` (more than one chunk has probability
    below 1e-20, and is still handled exactly). The batch is in row order. Seeds come
    from the loader's ``_sampling_seed`` (its ``seed=``, else OS entropy) folded with the
    step number, so a run is reproducible exactly when the loader's seed is fixed.

    Under ``tf.distribute`` each replica draws the same global sample (the same seed) and keeps its shard
    of it (:func:`op_tensorflow.distributed.replica_shard`); on one device the shard is the whole sample.
    """
    import tensorflow as tf

    from op_tensorflow.distributed import replica_shard, replicas_in_sync

    x, y, n = tf.constant(x_rows), tf.constant(y_rows), int(x_rows.shape[0])
    if q >= 1.0:  # every row, with the batch dimension unknown as for Poisson batches

        def every_row(seed):
            if replicas_in_sync() == 1:  # no copy of the data per step
                return tuple(tf.compat.v1.placeholder_with_default(t, [None, *t.shape[1:]]) for t in (x, y))
            rows = replica_shard(tf.range(n, dtype=tf.int64))
            return tf.gather(x, rows), tf.gather(y, rows)

        return every_row
    chunk = int(q * n + 10 * math.sqrt(n * q * (1 - q)) + 16)
    log1m_q = math.log1p(-q)

    def positions(seed):
        def draw(i, offset, found):
            u = tf.random.stateless_uniform(
                [chunk], seed=tf.random.experimental.stateless_fold_in(seed, i), dtype=tf.float64
            )
            gaps = tf.floor(tf.math.log1p(-u) / log1m_q)  # failures before each success: Geometric(q)
            pos = offset + tf.cumsum(gaps + 1.0) - 1.0
            return i + 1, pos[-1] + 1.0, tf.concat([found, pos], axis=0)

        _, _, found = tf.while_loop(
            lambda i, offset, found: offset < n,
            draw,
            (tf.constant(0, tf.int64), tf.constant(0.0, tf.float64), tf.zeros([0], tf.float64)),
            shape_invariants=(tf.TensorShape([]), tf.TensorShape([]), tf.TensorShape([None])),
        )
        return tf.cast(tf.boolean_mask(found, found < n), tf.int64)

    def sample(seed):
        rows = replica_shard(positions(seed))
        return tf.gather(x, rows), tf.gather(y, rows)

    return sample
