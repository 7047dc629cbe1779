"""``PrivateKerasModel``: DP-SGD training of any Keras model, with budget-checked ``fit``.

The facade over the swappable parts: the data loader's Poisson sampling
(:mod:`op_tensorflow.loader`), per-example clipping and noise (:mod:`op_tensorflow.clipping`
with the layer registry in :mod:`op_tensorflow.registry`), the user's unchanged Keras
optimizer, and the accountant and ledger (:mod:`op_tensorflow.accounting`,
:mod:`op_tensorflow.budget`).

Training metrics computed on private rows would leak them, so ``fit`` reports the epsilon
spent after each epoch (and metrics on ``validation_data`` only when that is public data).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import dp_accounting
import numpy as np
import pandas as pd
import tensorflow as tf

from op_tensorflow import _checks, accounting, arguments, clipping, keras_seam, preflight, saving
from op_tensorflow.frame import PrivateDataFrame, PrivateSeries, _raw
from op_tensorflow.loader import PrivateDataLoader, _as_frame, _column_bounds
from op_tensorflow.registry import make_registry
from op_tensorflow.validate import fix_model, validate_model

_OUTPUT_BOUNDS = {"sigmoid": (0.0, 1.0), "softmax": (0.0, 1.0), "tanh": (-1.0, 1.0)}


class PrivateKerasModel:
    """Wraps a Keras model for differentially private training with DP-SGD.

    Args:
        model: A Keras model: ``Sequential``, functional, or rebuilt with
            ``tf.keras.models.model_from_json`` (its weights are kept, so an imported model
            fine-tunes). Layers that mix examples in a batch (BatchNormalization) are refused.
        l2_norm_clip: Bound C on each example's gradient (global L2 norm), > 0.
        noise_multiplier: Noise standard deviation divided by C, > 0.
        seed: Makes the noise reproducible (for tests and debugging, not for production:
            a known seed makes the noise predictable). The loader's ``seed`` fixes sampling.
        fix: Replace layers that break per-example privacy (see ``fix_model``) instead of
            refusing the model.

    Example:
        >>> dp_model = PrivateKerasModel(model=seqM, l2_norm_clip=1, noise_multiplier=1.2)
        >>> dp_model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse", metrics=["accuracy"])
        >>> history = dp_model.fit(x=data_loader, epochs=20, target_delta=1e-5)
    """

    def __init__(
        self, model=None, l2_norm_clip: float = 1.0, noise_multiplier: float = 1.1, *, seed=None, fix: bool = False
    ):
        keras_seam.check_model(model)
        self.l2_norm_clip = _checks.positive_float("l2_norm_clip", l2_norm_clip)
        self.noise_multiplier = _checks.positive_float("noise_multiplier", noise_multiplier)
        _checks.clip_and_noise(self.l2_norm_clip, self.noise_multiplier)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}.")
        self._model = fix_model(model) if fix else model
        validate_model(self._model)
        self._noise_rng = np.random.default_rng(seed)
        self._loss_fn = None
        self._optimizer = None
        self._train_chunk = None
        self._train_chunk_loader = None
        self._plan = None
        self._plan_key = None
        self._independent_for = None
        self._trace_count = 0
        self._events = []
        self._registry = make_registry()
        self.privacy = {
            "l2_norm_clip": self.l2_norm_clip,
            "noise_multiplier": self.noise_multiplier,
            "epsilon": 0.0,
            "delta": None,
            "sampling_rate": None,
            "steps": 0,
        }

    # -- Keras-like surface --------------------------------------------------------------
    @property
    def model(self) -> tf.keras.Model:
        """The wrapped Keras model (its weights are the DP-trained weights)."""
        return self._model

    def get_weights(self):
        return self._model.get_weights()

    def set_weights(self, weights) -> None:
        """Sets the Keras model's weights from a list of arrays shaped like ``get_weights()``'s."""
        expected = [w.shape for w in self._model.get_weights()]
        if not isinstance(weights, (list, tuple)) or len(weights) != len(expected):
            raise ValueError(
                f"weights must be a list of {len(expected)} arrays (as get_weights() returns), got "
                f"{type(weights).__name__}{f' of length {len(weights)}' if isinstance(weights, (list, tuple)) else ''}."
            )
        try:
            arrays = [np.asarray(w, dtype=np.float32) for w in weights]
        except (TypeError, ValueError) as err:
            raise TypeError(f"weights must hold numeric arrays: {err}") from None
        shapes = [a.shape for a in arrays]
        if shapes != expected:
            raise ValueError(f"weights have shapes {shapes}, but the model's weights have shapes {expected}.")
        self._model.set_weights(arrays)

    def summary(self, *args, **kwargs):
        return self._model.summary(*args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"PrivateKerasModel({self._model.name}, l2_norm_clip={self.l2_norm_clip:g}, "
            f"noise_multiplier={self.noise_multiplier:g}, epsilon spent={self.privacy['epsilon']:.4g})"
        )

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs) -> None:
        """Like ``keras.Model.compile``: any Keras optimizer and loss, as objects, names or functions.

        Give a standard (non-DP) optimizer: clipping and noise are added by this model, and
        the optimizer receives the noisy gradient unchanged. The loss's reduction is
        handled here (per-example losses); do not set it.
        """
        if loss is None:
            raise ValueError("loss must be given, e.g. loss='mse' or tf.keras.losses.BinaryCrossentropy().")
        loss = arguments.single_loss(self._model, loss, kwargs)
        try:
            optimizer = tf.keras.optimizers.get(optimizer)
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"optimizer must be a Keras optimizer or its name, got {optimizer!r}: {err}") from None
        if arguments.is_dp_optimizer(optimizer):
            raise ValueError(
                f"optimizer {type(optimizer).__name__} already adds DP noise; pass its standard Keras counterpart "
                "(e.g. tf.keras.optimizers.Adam): PrivateKerasModel clips and adds noise itself."
            )
        self._loss_fn = arguments.per_example_loss(loss)
        self._model.compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        self._optimizer = self._model.optimizer
        self._train_chunk = None
        self._plan = None

    # -- training --------------------------------------------------------------------------
    def _ensure_built(self, input_shape) -> None:
        if not self._model.built or not getattr(self._model, "inputs", None):
            self._model.build((None, *input_shape))
        if not keras_seam.has_layer_graph(self._model):
            raise ValueError(
                "model must be a Sequential or functional Keras model (subclassed models have no layer graph for "
                "per-example clipping); rebuild it with the functional API."
            )
        arguments.check_single_output(self._model)
        expected = tuple(self._model.input_shape[1:])
        if tuple(d for d in expected) != tuple(input_shape):
            raise ValueError(
                f"the loader's input_shape {tuple(input_shape)} does not match the model's input shape "
                f"{expected}; use PrivateDataLoader(..., feature_shape=...) or change the model."
            )

    @property
    def clipping_plan(self) -> preflight.ClippingPlan | None:
        """How ``fit`` clips this model (ghost norms or exact per-example gradients, and why); None before ``fit``."""
        return self._plan

    def _run_preflight(self, loader: PrivateDataLoader) -> None:
        key = (loader.input_shape, loader._label_shape, tuple(loader._feature_bounds), tuple(loader._label_bounds))
        if self._plan is None or self._plan_key != key:
            self._plan = None
            self._train_chunk = None
            self._plan = preflight.run_preflight(self._model, self._loss_fn, loader, self._registry)
            self._plan_key = key

    def _build_train_chunk(self, loader: PrivateDataLoader):
        model, optimizer, loss_fn, registry = self._model, self._optimizer, self._loss_fn, self._registry
        variables = model.trainable_variables
        # Slots must exist before the graph loop that applies gradients is traced.
        if hasattr(optimizer, "build"):
            optimizer.build(variables)
        else:  # a tf.keras.optimizers.legacy optimizer
            optimizer._create_all_weights(variables)
        sample = loader._graph_sampler()
        clip, stddev = self.l2_norm_clip, self.l2_norm_clip * self.noise_multiplier
        path = self._plan.path
        expected_batch = float(loader.batch_size)  # q * n: the divisor must not depend on the data

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
            self._trace_count += 1  # Python side effect: runs once per trace
            finite = tf.constant(True)
            for step in tf.range(first_step, first_step + num_steps):
                x, y = sample(tf.random.experimental.stateless_fold_in(sampling_seed, step))
                # An empty Poisson batch contributes a zero sum (then noise); skipping the model also
                # avoids TF 2.15's oneDNN convolutions returning wrong shapes for 0-row inputs.
                grads = tf.cond(
                    tf.shape(x)[0] > 0,
                    lambda x=x, y=y: clipping.clipped_gradient_sum(
                        model, x, y, loss_fn, clip, registry=registry, path=path
                    )[0],
                    lambda: [tf.zeros_like(v) for v in variables],
                )
                noisy = clipping.add_noise(
                    grads, stddev, tf.random.experimental.stateless_fold_in(noise_seed, step), divide_by=expected_batch
                )
                finite = tf.logical_and(finite, tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in noisy]))
                optimizer.apply_gradients(zip(noisy, variables, strict=True))
            return finite

        return train_chunk

    def fit(
        self,
        x=None,
        epochs: int = 1,
        target_delta: float = 1e-5,
        callbacks=None,
        verbose="auto",
        *,
        validation_data=None,
        steps_per_execution: int = 32,
        accountant: str | None = None,
    ):
        """Trains with DP-SGD on a ``PrivateDataLoader``; returns a Keras ``History``.

        Before the first step the epsilon of the whole planned run is computed (the same
        way ``get_privacy_budget`` does) and reserved on the dataset's ledger: if it does
        not fit, ``BudgetExceededError`` is raised and nothing changes. The reservation is
        committed when training ends; if it stops early (a callback sets
        ``stop_training``) only the steps run are charged; if it crashes, the whole
        reservation stays charged.

        Args:
            x: A ``PrivateDataLoader``.
            epochs: Number of epochs; epoch k runs ``ceil((k+1) n / b) - ceil(k n / b)`` steps.
            target_delta: The delta at which epsilon is reported.
            callbacks: Keras callbacks (``EarlyStopping``, ``CSVLogger``, ...).
            verbose: 0, 1, 2 or "auto", as in Keras; the progress bar shows ``epsilon``.
            validation_data: Optional *public* ``(x, y)`` numpy data for Keras metrics.
            steps_per_execution: DP steps run per graph call (callbacks see one batch per call).
            accountant: "rdp" or "pld"; defaults to the ledger's accountant.

        Returns:
            A ``tf.keras.callbacks.History`` whose ``history["epsilon"]`` is the epsilon
            spent by this run after each epoch.
        """
        if not isinstance(x, PrivateDataLoader):
            raise TypeError(
                f"x must be a PrivateDataLoader, got {type(x).__name__}; wrap private data with "
                "PrivateDataLoader(feature_df=X, label_df=y, batch_size=...)."
            )
        if self._loss_fn is None:
            raise RuntimeError("call compile(optimizer=..., loss=...) before fit().")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}.")
        target_delta = _checks.open_unit("target_delta", target_delta)
        steps_per_execution = _checks.positive_int("steps_per_execution", steps_per_execution)
        loader, ledger = x, x.budget
        accountant = _checks.one_of(
            "accountant", ledger.accountant if accountant is None else accountant, accounting.ACCOUNTANTS
        )
        if validation_data is not None:
            arguments.check_public(validation_data, "validation_data")
        _checks.one_of("verbose", verbose, (0, 1, 2, "auto"))
        self._ensure_built(loader.input_shape)
        if validation_data is not None:  # checked before reserving: a typo here must not cost a whole run
            arguments.check_validation_data(validation_data, self._model)
        self._run_preflight(loader)  # refuses unsound models before anything is spent
        if verbose != 0 and self._plan.path != clipping.GHOST:
            print(f"PrivateKerasModel: clipping with {self._plan}.")
        if self._train_chunk is None or self._train_chunk_loader is not loader:
            self._train_chunk = self._build_train_chunk(loader)
            self._train_chunk_loader = loader
        with arguments.keras_input_errors("the training step"):
            self._train_chunk.get_concrete_function()  # graph errors surface now, not after the reservation
        if validation_data is not None:  # metrics and validation shapes fail here, not at epoch 1
            with arguments.keras_input_errors("validation_data"):
                self._model.evaluate(*(np.asarray(d)[:2] for d in validation_data[:2]), verbose=0)

        q, sigma = loader.sampling_rate, self.noise_multiplier
        planned_steps = loader.total_steps(epochs)
        description = (
            f"DP-SGD fit: {planned_steps} steps, q={q:.6g}, noise_multiplier={sigma:g}, "
            f"l2_norm_clip={self.l2_norm_clip:g}, model {self._model.name}"
        )
        listed = callbacks if isinstance(callbacks, (list, tuple)) else [] if callbacks is None else [callbacks]
        if not all(isinstance(c, tf.keras.callbacks.Callback) for c in listed):
            raise TypeError(f"callbacks must be a list of tf.keras.callbacks.Callback objects, got {callbacks!r}.")
        verbose = 1 if verbose == "auto" else verbose
        callback_list = tf.keras.callbacks.CallbackList(  # before reserving: bad callbacks raise here
            callbacks,
            add_history=True,
            add_progbar=verbose != 0,
            model=self._model,
            verbose=verbose,
            epochs=epochs,
            steps=loader.steps_in_epoch(0),
        )
        callback_list.on_train_begin()  # a callback's set-up error surfaces before the reservation
        try:
            reservation = ledger.reserve(loader.dp_event(epochs, sigma), description)  # refuses before any step
        except BaseException:
            callback_list.on_train_end()
            raise

        self._model.stop_training = False
        sampling_seed = tf.constant(loader._sampling_seed())
        noise_seed = tf.constant(self._noise_rng.integers(0, 2**62, size=2, dtype=np.int64))
        steps_done = 0
        with reservation:
            for epoch in range(epochs):
                steps = loader.steps_in_epoch(epoch)
                callback_list.set_params({"verbose": verbose, "epochs": epochs, "steps": steps})
                callback_list.on_epoch_begin(epoch)
                done_in_epoch = 0
                while done_in_epoch < steps:
                    chunk = min(steps_per_execution, steps - done_in_epoch)
                    callback_list.on_train_batch_begin(done_in_epoch)
                    finite = self._train_chunk(
                        tf.constant(steps_done, tf.int64), tf.constant(chunk, tf.int64), sampling_seed, noise_seed
                    )
                    steps_done += chunk
                    done_in_epoch += chunk
                    if not bool(finite):
                        raise FloatingPointError(
                            f"training produced a non-finite gradient at or before step {steps_done} (NaN or inf "
                            "loss: check the inputs' scale, the loss and the learning rate). The whole planned run "
                            "stays charged to the ledger."
                        )
                    callback_list.on_train_batch_end(done_in_epoch - 1, {})
                epsilon = accounting.epsilon_for_event(
                    accounting.dp_sgd_event(q, sigma, steps_done), target_delta, accountant
                )
                logs = {"epsilon": epsilon}
                if validation_data is not None:
                    val = self._model.evaluate(*validation_data, verbose=0, return_dict=True)
                    logs.update({f"val_{k}": v for k, v in val.items()})
                callback_list.on_epoch_end(epoch, logs)
                if self._model.stop_training:
                    break
            if steps_done < planned_steps:
                reservation.commit(accounting.dp_sgd_event(q, sigma, steps_done))
            callback_list.on_train_end()
        self._events.append(accounting.dp_sgd_event(q, sigma, steps_done))
        self.privacy.update(
            delta=target_delta,
            sampling_rate=q,
            steps=self.privacy["steps"] + steps_done,
            epsilon=accounting.epsilon_for_event(dp_accounting.ComposedDpEvent(self._events), target_delta, accountant),
        )
        return self._model.history

    # -- inference ------------------------------------------------------------------------
    def _features(self, frame) -> np.ndarray:
        """The model's input array of private rows, after checking that the model keeps rows apart.

        Predictions on private data are released row by row (and DP metrics add up per-row values), so a
        model whose output for one row depends on other rows of the batch is refused, as in ``fit``.
        """
        data = _as_frame(frame)
        shape = tuple(self._model.input_shape[1:])
        shape = shape if shape and None not in shape else (data.shape[1],)
        bounds = _column_bounds(frame, data.columns)
        if self._independent_for != (shape, tuple(bounds)):
            x, x_alt = preflight.synthetic_examples(bounds, shape)
            with arguments.keras_input_errors("x"):
                preflight.check_batch_independence(self._model, None, x, None, x_alt, None)
            self._independent_for = (shape, tuple(bounds))
        return data.to_numpy(dtype=np.float32).reshape((len(data), *shape))

    def predict(self, x=None, label_columns=None, *, batch_size: int = 1024, verbose=0):
        """Predictions. Private input gives a private output; public input gives numpy.

        Args:
            x: A ``PrivateDataFrame``/``PrivateSeries`` of features (e.g. a test split), or
                public numpy/pandas data.
            label_columns: Names of the output columns of the private result (default 0, 1, ...).

        Returns:
            A ``PrivateDataFrame`` on the input's ledger, row-aligned with it (so it can be
            compared with the labels of the same split through DP aggregates), or a numpy array.
        """
        batch_size = _checks.positive_int("batch_size", batch_size)
        if isinstance(x, (PrivateDataFrame, PrivateSeries)):
            if label_columns is not None and (
                isinstance(label_columns, (str, bytes)) or not isinstance(label_columns, Iterable)
            ):
                raise TypeError(f"label_columns must be a list of column names, got {label_columns!r}.")
            out = self._model.predict(self._features(x), batch_size=batch_size, verbose=verbose)
            out = out.reshape((len(out), -1))
            columns = list(range(out.shape[1])) if label_columns is None else list(label_columns)
            if len(columns) != out.shape[1]:
                raise ValueError(f"label_columns has {len(columns)} names but the model has {out.shape[1]} outputs.")
            frame = pd.DataFrame(out, index=_raw(x).index, columns=columns)
            bounds = _OUTPUT_BOUNDS.get(getattr(getattr(self._model.layers[-1], "activation", None), "__name__", None))
            metadata = {c: bounds for c in columns} if bounds else {}
            return PrivateDataFrame(metadata=metadata, _source=x._source, _data=frame)
        arguments.check_public(x, "x")
        if x is None or isinstance(x, (str, bytes, numbers.Number)):
            raise TypeError(f"x must be private data or public arrays of features, got {type(x).__name__}.")
        with arguments.keras_input_errors("x"):
            return self._model.predict(x, batch_size=batch_size, verbose=verbose)

    def evaluate(
        self,
        x=None,
        y=None,
        *,
        eps: float | None = None,
        loss_bound: float | None = None,
        batch_size: int = 1024,
        verbose=0,
    ) -> dict:
        """Metrics: DP (charged to the ledger) on private data, plain Keras on public data.

        On private data each metric is a DP mean of per-example values: accuracy metrics
        (values in [0, 1]) always, and the loss when ``loss_bound`` gives public bounds
        ``[0, loss_bound]`` for clamping it. ``eps`` is split evenly across the metrics.
        """
        batch_size = _checks.positive_int("batch_size", batch_size)
        if isinstance(x, (PrivateDataFrame, PrivateSeries)):
            if not isinstance(y, (PrivateDataFrame, PrivateSeries)):
                raise TypeError("y must be the private labels of the same rows as x.")
            if eps is None:
                raise ValueError("eps must be given to evaluate on private data: the metrics are DP answers.")
            PrivateDataLoader(x, y, 1)  # same checks as training: same source, aligned, numeric, finite
            y_true = _raw(y).to_numpy(dtype=np.float32)
            y_pred = self._model.predict(self._features(x), batch_size=batch_size, verbose=verbose)
            values = self._per_example_metrics(y_true, y_pred, loss_bound)
            if not values:
                raise ValueError(
                    "no metric can be computed privately: compile with metrics=['accuracy'] or pass "
                    "loss_bound to report a clamped DP mean loss."
                )
            share = _checks.positive_float("eps", eps) / len(values)
            index = _raw(x).index
            results = {}
            for name, (per_example, bounds) in values.items():
                series = PrivateSeries(pd.Series(per_example, index=index, name=name), x._source, {name: bounds})
                results[name] = series.mean(eps=share)
            return results
        arguments.check_public(x, "x")
        arguments.check_public(y, "y")
        with arguments.keras_input_errors("x and y"):
            return self._model.evaluate(x, y, batch_size=batch_size, verbose=verbose, return_dict=True)

    def _per_example_metrics(self, y_true, y_pred, loss_bound) -> dict:
        values = {}
        if loss_bound is not None:
            bound = _checks.positive_float("loss_bound", loss_bound)
            losses = clipping.per_example_losses(self._loss_fn, tf.constant(y_true), tf.constant(y_pred)).numpy()
            values["loss"] = (np.clip(losses, 0.0, bound), (0.0, bound))
        names = [
            m if isinstance(m, str) else getattr(m, "name", None) for m in keras_seam.compiled_metrics(self._model)
        ]
        if any(
            n in ("accuracy", "acc", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy")
            for n in names
        ):
            values["accuracy"] = (arguments.accuracy(y_true, y_pred), (0.0, 1.0))
        return values

    # -- persistence ----------------------------------------------------------------------
    def save(self, path) -> None:
        """Saves architecture, weights and privacy metadata to one file, atomically.

        The file (a zip holding ``model.keras`` and ``privacy.json``) is written to a
        temporary name and renamed, so ``path`` always holds the old or the new model.
        The temporary directory is ``.<name>.<pid>.<random>.saving`` next to ``path``; one
        left by a process killed mid-save is removed by the next save to ``path``.
        """
        saving.write_bundle(self._model, {"format": saving.FORMAT, "version": 1, **self.privacy}, path)


def load_private_model(path, *, seed=None) -> PrivateKerasModel:
    """Loads a model saved with ``PrivateKerasModel.save``: weights, architecture, privacy metadata."""
    model, meta = saving.read_bundle(path)
    dp_model = PrivateKerasModel(model, meta["l2_norm_clip"], meta["noise_multiplier"], seed=seed)
    dp_model.privacy.update({k: meta[k] for k in dp_model.privacy if k in meta})
    loss = keras_seam.compiled_loss(model)
    if getattr(model, "optimizer", None) is not None and loss is not None:
        dp_model._loss_fn = arguments.per_example_loss(arguments.single_loss(model, loss, {}))
        dp_model._optimizer = model.optimizer
    return dp_model
