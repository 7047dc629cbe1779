"""The DP-SGD training loop of ``PrivateKerasModel.fit``: the graph step and the epochs around it.

:func:`build_train_chunk` traces one ``tf.function`` running several DP-SGD steps (Poisson sample, clipped
gradient sum, Gaussian noise, the user's optimizer) with an unknown batch dimension, so Poisson batches of any
size never retrace. :func:`train_epochs` runs the epochs with Keras callbacks; it runs only after the budget
for the whole run was reserved on the ledger.
"""

from __future__ import annotations

import math
import warnings

import dp_accounting
import numpy as np
import tensorflow as tf

from op_tensorflow import accounting, clipping, coordination, distributed, sparse_embedding
from op_tensorflow.loader import PrivateDataLoader

__all__ = ["build_train_chunk", "callback_list", "record_run", "run_seeds", "train_epochs"]


def callback_list(callbacks, model, params: dict) -> tf.keras.callbacks.CallbackList:
    """The Keras callbacks of a run (with History and, unless silent, the progress bar), given ``params``.

    ``params`` holds Keras's ``verbose``, ``epochs`` and ``steps`` and the report's ``target_delta``,
    ``ledger_delta`` and ``accountant``; a ``target_delta`` other than the ledger's is warned about.
    """
    listed = callbacks if isinstance(callbacks, (list, tuple)) else [] if callbacks is None else [callbacks]
    if not all(isinstance(c, tf.keras.callbacks.Callback) for c in listed):
        raise TypeError(f"callbacks must be a list of tf.keras.callbacks.Callback objects, got {callbacks!r}.")
    target_delta, ledger_delta = params["target_delta"], params["ledger_delta"]
    if not math.isclose(target_delta, ledger_delta, rel_tol=1e-12, abs_tol=0.0):
        warnings.warn(
            f"the history reports epsilon at delta={target_delta:g}, while the ledger accounts at "
            f"delta={ledger_delta:g} (model.privacy gives the ledger's figure); omit target_delta to report "
            "the ledger's.",
            UserWarning,
            stacklevel=3,
        )
    return tf.keras.callbacks.CallbackList(
        list(listed), add_history=True, add_progbar=params["verbose"] != 0, model=model, **params
    )


def build_train_chunk(dp_model, loader: PrivateDataLoader):
    """The traced DP-SGD steps of ``dp_model`` on ``loader``: ``(first_step, num_steps, seeds) -> weights finite``."""
    model, optimizer, loss_fn, registry = dp_model._model, dp_model._optimizer, dp_model._loss_fn, dp_model._registry
    variables = model.trainable_variables
    # Slots must exist before the graph loop that applies gradients is traced (mirrored, under a strategy).
    with distributed.strategy_scope(model):
        if hasattr(optimizer, "build"):
            optimizer.build(variables)
        else:  # a tf.keras.optimizers.legacy optimizer
            optimizer._create_all_weights(variables)
    sample = loader._graph_sampler()
    clip, stddev = dp_model.l2_norm_clip, dp_model.l2_norm_clip * dp_model.noise_multiplier
    path = dp_model._plan.path
    expected_batch = float(loader.batch_size)  # q * n: the divisor must not depend on the data
    strategy = dp_model._run.strategy
    # each noise group is drawn once, by one of the chief's replicas; the optimizer sums the shares
    sizes = [int(np.prod(v.shape)) for v in variables]
    group_sizes = [sum(sizes[i] for i in group) for group in clipping.noise_groups(sizes)]
    owners = distributed.noise_owners(group_sizes, dp_model._run.local_replicas)

    sparse_config = dp_model._sparse_noise

    def clipped_sums(x, y):
        return clipping.clipped_gradient_sum(
            model, x, y, loss_fn, clip, registry=registry, path=path, sparse=sparse_config is not None
        )[0]

    def step_fn(step, sampling_seed, noise_seed):
        """One DP-SGD step, or one replica's share of it (see :mod:`op_tensorflow.distributed`)."""
        x, y = sample(tf.random.experimental.stateless_fold_in(sampling_seed, step))
        # An empty Poisson batch (or shard) contributes a zero sum (then noise); skipping the model also
        # avoids TF 2.15's oneDNN convolutions returning wrong shapes for 0-row inputs.
        kinds = []  # which sums are sparse: known once the first branch is traced

        def nonempty():
            sums = clipped_sums(x, y)
            kinds.extend(clipping.sum_kind(g) for g in sums)
            return sums

        def empty():
            return [clipping.zero_sum(v, kind) for v, kind in zip(variables, kinds, strict=True)]

        grads = tf.cond(tf.shape(x)[0] > 0, nonempty, empty)
        seed = tf.random.experimental.stateless_fold_in(noise_seed, step)
        if sparse_config is None:
            drawn = [distributed.is_replica(owner) for owner in owners]
            contribution = clipping.add_noise(grads, stddev, seed, divide_by=expected_batch, drawn=drawn)
        else:
            contribution = sparse_embedding.noisy_update(
                grads, variables, sparse_config, l2_norm_clip=clip, seed=seed, divide_by=expected_batch
            )
        optimizer.apply_gradients(zip(contribution, variables, strict=True))

    @tf.function(
        input_signature=[
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec([2], tf.int64),
            tf.TensorSpec([2], tf.int64),
        ],
        reduce_retracing=True,
    )
    def train_chunk(first_step, num_steps, sampling_seed, noise_seed):
        dp_model._trace_count += 1  # Python side effect: runs once per trace
        for step in tf.range(first_step, first_step + num_steps):
            if strategy is None:
                step_fn(step, sampling_seed, noise_seed)
            else:
                strategy.run(step_fn, args=(step, sampling_seed, noise_seed))
        # Checked once per call, on the weights: a non-finite update leaves a non-finite weight (inf and NaN
        # stay non-finite through every later update), on every replica and worker alike.
        return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in model.trainable_variables])

    return train_chunk


def run_seeds(dp_model, loader, run: distributed.Run) -> tuple[tf.Tensor, tf.Tensor]:
    """The run's sampling and noise seeds: fresh from the loader's and the model's generators.

    In a multi-worker run every worker takes the chief's sampling seed (all replicas must draw the same
    global sample); the noise seed stays where it is drawn: only the chief's replicas use it.
    """
    sampling = coordination.sampling_seed(run, loader._sampling_seed())
    noise = dp_model._noise_rng.integers(0, 2**62, size=2, dtype=np.int64)
    return tf.constant(sampling), tf.constant(noise)


def train_epochs(dp_model, loader, epochs, steps_per_execution, callbacks, params, validation_data, seeds) -> int:
    """The epochs of ``fit`` (run after the reservation), with callbacks; returns the number of steps run.

    Raises ``FloatingPointError`` when an update is not finite, ``DistributedTrainingError`` when another
    worker fails (the caller keeps the run charged in both cases).
    """
    q, sigma, run = loader.sampling_rate, dp_model.noise_multiplier, dp_model._run
    dp_model._model.stop_training = False
    sampling_seed, noise_seed = seeds
    steps_done = 0
    for epoch in range(epochs):
        steps = loader.steps_in_epoch(epoch)
        callbacks.set_params({**params, "steps": steps})
        callbacks.on_epoch_begin(epoch)
        done_in_epoch = 0
        while done_in_epoch < steps:
            chunk = min(steps_per_execution, steps - done_in_epoch)
            callbacks.on_train_batch_begin(done_in_epoch)
            during = (
                f"during steps {steps_done + 1}-{steps_done + chunk}; the whole planned run stays charged to the "
                "chief's ledger: restart every worker to train again"
            )
            with coordination.reported_failure(run, during):
                finite = dp_model._train_chunk(
                    tf.constant(steps_done, tf.int64), tf.constant(chunk, tf.int64), sampling_seed, noise_seed
                )
                finite = bool(finite)
            steps_done += chunk
            done_in_epoch += chunk
            if not finite:
                raise FloatingPointError(
                    f"training produced a non-finite gradient at or before step {steps_done} (NaN or inf "
                    "loss: check the inputs' scale, the loss and the learning rate). The whole planned run "
                    "stays charged to the ledger."
                )
            callbacks.on_train_batch_end(done_in_epoch - 1, {})
        event = accounting.dp_sgd_event(q, sigma, steps_done)
        logs = {"epsilon": accounting.epsilon_for_event(event, params["target_delta"], params["accountant"])}
        if validation_data is not None:
            val = dp_model._model.evaluate(*validation_data, verbose=0, return_dict=True)
            logs.update({f"val_{k}": v for k, v in val.items()})
        callbacks.on_epoch_end(epoch, logs)
        # every worker must run the same steps: the chief's decision to stop counts
        dp_model._model.stop_training = coordination.chief_stops(run, dp_model._model.stop_training)
        if dp_model._model.stop_training:
            break
    return steps_done


def record_run(dp_model, event, steps: int, sampling_rate: float, ledger) -> None:
    """Counts a charged run in ``dp_model.privacy``: epsilon of all its charged runs at the ledger's delta."""
    dp_model._events.append(event)
    dp_model.privacy.update(
        delta=ledger.delta,
        sampling_rate=sampling_rate,
        steps=dp_model.privacy["steps"] + steps,
        epsilon=accounting.epsilon_for_event(
            dp_accounting.ComposedDpEvent(dp_model._events), ledger.delta, ledger.accountant
        ),
    )
