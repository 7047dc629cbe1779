"""``PrivateKerasModel(..., embedding_noise="sparse")``: where the engine uses :mod:`op_tensorflow.sparse_noise`.

Host side: :func:`configure` checks the option against the model when the model is wrapped, and
:func:`check_run` against the clipping plan and the run before ``fit`` reserves anything. Graph side:
:func:`noisy_update` turns one step's clipped sums (the table's kept sparse, as
:class:`op_tensorflow.clipping.SparseRows`) into the update given to the optimizer: the table's noise only on
privately selected rows, the other variables' noise with ``sigma_gradient``.
"""

from __future__ import annotations

import tensorflow as tf

from op_tensorflow import clipping
from op_tensorflow.sparse_noise import SparseEmbeddingNoise, noisy_selected_rows
from op_tensorflow.validate import all_layers

__all__ = ["EMBEDDING_NOISE", "check_run", "configure", "noisy_update"]

EMBEDDING_NOISE = ("dense", "sparse")
# The tables' seeds are fold_in(step seed, _TABLE_SEED + i), far from the dense noise groups' 0, 1, 2, ...
_TABLE_SEED = 1 << 30


def configure(embedding_noise, model, noise_multiplier: float) -> SparseEmbeddingNoise | None:
    """The run's sparse-noise configuration (None for dense noise), or a ``ValueError`` saying what to change."""
    if isinstance(embedding_noise, SparseEmbeddingNoise):
        config = embedding_noise
        if abs(config.noise_multiplier - noise_multiplier) > 1e-12 * noise_multiplier:
            raise ValueError(
                f"embedding_noise has noise_multiplier={config.noise_multiplier:g} but the model has "
                f"noise_multiplier={noise_multiplier:g}; build it with SparseEmbeddingNoise(noise_multiplier="
                f"{noise_multiplier:g}, ...)."
            )
    elif isinstance(embedding_noise, str) and embedding_noise in EMBEDDING_NOISE:
        if embedding_noise == "dense":
            return None
        config = SparseEmbeddingNoise(noise_multiplier=noise_multiplier)
    else:
        raise ValueError(
            f"embedding_noise must be 'dense', 'sparse' or a SparseEmbeddingNoise, got {embedding_noise!r}."
        )
    # exact class, as the registry matches it; nested models and custom sublayers included
    tables = [layer for layer in all_layers(model) if type(layer) is tf.keras.layers.Embedding]
    if len(tables) != 1:
        raise ValueError(
            f"embedding_noise='sparse' needs exactly one tf.keras.layers.Embedding in the model, found {len(tables)}: "
            "the selection's sensitivity is derived for one table. Use embedding_noise='dense'."
        )
    return config


def check_run(config: SparseEmbeddingNoise | None, plan, run) -> None:
    """Refuses, before any budget is spent, runs the sparse noise does not cover."""
    if config is None:
        return
    if plan.path != clipping.GHOST:
        raise ValueError(
            f"embedding_noise='sparse' needs the ghost-norm clipping path, but this model is clipped with {plan}; "
            "use embedding_noise='dense'."
        )
    if run.replicas > 1:
        raise ValueError(
            f"embedding_noise='sparse' runs on one device; this run has {run.replicas} replicas. Use "
            "embedding_noise='dense' under a tf.distribute strategy."
        )


def noisy_update(grads, variables, config: SparseEmbeddingNoise, *, l2_norm_clip, seed, divide_by) -> list:
    """The step's update: sparse noise on each table's selected rows, ``C sigma_gradient`` noise elsewhere.

    Raises ``ValueError`` while tracing if no sum is sparse (the table's layer took another path).
    """
    tables = [i for i, g in enumerate(grads) if isinstance(g, clipping.SparseRows)]
    if not tables:
        raise ValueError(
            "embedding_noise='sparse': the Embedding table's gradient did not come from the registry's sparse "
            "sum (was its registry function replaced?); use embedding_noise='dense'."
        )
    dense = [i for i in range(len(grads)) if i not in tables]
    stddev = l2_norm_clip * config.sigma_gradient  # the dense variables' share, as on the selected rows
    noisy = dict(
        zip(dense, clipping.add_noise([grads[i] for i in dense], stddev, seed, divide_by=divide_by), strict=True)
    )
    for n, i in enumerate(tables):
        table = grads[i]
        lookups = tf.IndexedSlices(table.values, table.indices, tf.constant(variables[i].shape.as_list(), tf.int64))
        noisy[i] = noisy_selected_rows(
            lookups,
            table.rows,
            table.counts,
            config=config,
            l2_norm_clip=l2_norm_clip,
            vocab_size=int(variables[i].shape[0]),
            seed=tf.random.experimental.stateless_fold_in(seed, _TABLE_SEED + n),
            divide_by=divide_by,
        )
    return [noisy[i] for i in range(len(grads))]
