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

import functools
import numbers
from collections.abc import Iterable

import numpy as np
import pandas as pd
import tensorflow as tf

from op_tensorflow import (
    _checks,
    accounting,
    arguments,
    clipping,
    coordination,
    distributed,
    dp_metrics,
    keras_seam,
    preflight,
    saving,
    sparse_embedding,
    training,
)
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
        embedding_noise: ``"dense"`` (the default: Gaussian noise on every coordinate) or ``"sparse"``:
            sparsity-preserving noise for the model's ``Embedding`` table (DP-AdaFEST,
            :mod:`op_tensorflow.sparse_noise`): only privately selected rows get a (noisy) update, and the
            optimizer receives a sparse gradient for the table. Same noise multiplier, same epsilon. Give a
            :class:`op_tensorflow.sparse_noise.SparseEmbeddingNoise` to tune the selection.

    Example:
        >>> dp_model = PrivateKerasModel(model=seqM, l2_norm_clip=1, noise_multiplier=1.2)
        >>> dp_model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse", metrics=["accuracy"])
        >>> history = dp_model.fit(x=data_loader, epochs=20)  # epsilon at the ledger's delta
    """

    def __init__(
        self,
        model=None,
        l2_norm_clip: float = 1.0,
        noise_multiplier: float = 1.1,
        *,
        seed=None,
        fix: bool = False,
        embedding_noise="dense",
    ):
        keras_seam.check_model(model)
        self.l2_norm_clip = _checks.positive_float("l2_norm_clip", l2_norm_clip)
        self.noise_multiplier = _checks.positive_float("noise_multiplier", noise_multiplier)
        _checks.clip_and_noise(self.l2_norm_clip, self.noise_multiplier)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}.")
        self._model = fix_model(model) if fix else model
        validate_model(self._model)
        self._sparse_noise = sparse_embedding.configure(embedding_noise, self._model, self.noise_multiplier)
        self._noise_rng = np.random.default_rng(seed)
        self._loss_fn = None
        self._optimizer = None
        self._train_chunk = None
        self._train_chunk_loader = None
        self._plan = None
        self._plan_key = None
        self._independent_for = None
        self._run = distributed.Run(None)
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
        self._model.set_weights(arguments.weight_arrays(weights, self._model))

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
        handled here (per-example losses); do not set it. ``metrics`` are checked now (names
        Keras resolves, metric objects or functions), not when ``fit`` first evaluates them.
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
        metrics = arguments.check_metrics(metrics)
        self._loss_fn = arguments.per_example_loss(loss)
        with distributed.strategy_scope(self._model):  # the optimizer's slots live where the model's variables do
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

    def fit(
        self,
        x=None,
        epochs: int = 1,
        target_delta: float | None = None,
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
        not fit, ``BudgetExceededError`` is raised and nothing changes. Everything that can
        fail on the user's input (the training step's graph, metrics on ``validation_data``,
        callbacks' set-up) runs before the reservation. The reservation is committed when
        training ends; if it stops early (a callback sets ``stop_training``) only the steps
        run are charged; if it crashes, the whole reservation stays charged, and ``privacy``
        counts it too before the error is re-raised.

        ``privacy`` (and ``repr``) always give the ledger's figure: epsilon at the ledger's
        delta, by the ledger's accountant, of everything this model was charged.

        Args:
            x: A ``PrivateDataLoader``.
            epochs: Number of epochs; epoch k runs ``ceil((k+1) n / b) - ceil(k n / b)`` steps.
            target_delta: The delta at which the History reports epsilon; None (the default)
                means the ledger's delta (``x.budget.delta``). Another delta only changes the
                report (with a UserWarning): the ledger always accounts at its own delta.
            callbacks: Keras callbacks (``EarlyStopping``, ``CSVLogger``, ...).
            verbose: 0, 1, 2 or "auto", as in Keras; the progress bar shows ``epsilon``.
            validation_data: Optional *public* ``(x, y)`` numpy data for Keras metrics.
            steps_per_execution: DP steps run per graph call (callbacks see one batch per call).
            accountant: "rdp" or "pld" for the History's epsilon; defaults to the ledger's accountant.

        Returns:
            A ``tf.keras.callbacks.History`` whose ``history["epsilon"]`` is the epsilon
            spent by this run after each epoch, at ``params["target_delta"]``;
            ``params["ledger_delta"]`` is the ledger's delta and ``params["accountant"]``
            the accountant of the report.
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
        loader, ledger = x, x.budget
        target_delta = ledger.delta if target_delta is None else _checks.open_unit("target_delta", target_delta)
        steps_per_execution = _checks.positive_int("steps_per_execution", steps_per_execution)
        accountant = _checks.one_of(
            "accountant", ledger.accountant if accountant is None else accountant, accounting.ACCOUNTANTS
        )
        if validation_data is not None:
            arguments.check_public(validation_data, "validation_data")
        _checks.one_of("verbose", verbose, (0, 1, 2, "auto"))
        self._ensure_built(loader.input_shape)
        self._run = run = distributed.run_of(self._model)
        distributed.check_optimizer(run, self._optimizer)
        if validation_data is not None:  # checked before reserving: a typo here must not cost a whole run
            arguments.check_validation_data(validation_data, self._model)
        self._run_preflight(loader)  # refuses unsound models before anything is spent
        sparse_embedding.check_run(self._sparse_noise, self._plan, run)
        if verbose != 0 and self._plan.path != clipping.GHOST:
            print(f"PrivateKerasModel: clipping with {self._plan}.")
        if self._train_chunk is None or self._train_chunk_loader is not loader:
            self._train_chunk = training.build_train_chunk(self, loader)
            self._train_chunk_loader = loader
        with arguments.keras_input_errors("the training step"):
            self._train_chunk.get_concrete_function()  # graph errors surface now, not after the reservation
        if validation_data is not None:  # the very call made after each epoch: metrics fail here, not at epoch 1
            with arguments.keras_input_errors("validation_data"):
                self._model.evaluate(*validation_data, verbose=0, return_dict=True)

        q, sigma = loader.sampling_rate, self.noise_multiplier
        planned_steps, planned = loader.total_steps(epochs), loader.dp_event(epochs, sigma)
        accounting.epsilon_for_event(planned, target_delta, accountant)  # the report's accounting fails now
        description = (
            f"DP-SGD fit: {planned_steps} steps, q={q:.6g}, noise_multiplier={sigma:g}, "
            f"l2_norm_clip={self.l2_norm_clip:g}, model {self._model.name}"
        )
        verbose = 1 if verbose == "auto" else verbose
        params = {"verbose": verbose, "epochs": epochs, "steps": loader.steps_in_epoch(0)}
        params.update(target_delta=target_delta, ledger_delta=ledger.delta, accountant=accountant)
        callback_list = training.callback_list(callbacks, self._model, params)  # before reserving: bad ones raise
        callback_list.on_train_begin()  # a callback's set-up error surfaces before the reservation
        try:
            settings = functools.partial(coordination.run_settings, self, loader, epochs, steps_per_execution)
            coordination.agree_on_run(run, loader._x, loader._y, settings)  # multi-worker: the same run, or refused
            seeds = training.run_seeds(self, loader, run)
            reservation = coordination.reserve_for_run(run, ledger, planned, description)  # refuses before any step
        except BaseException:
            callback_list.on_train_end()
            raise

        charged_steps = planned_steps
        try:
            with reservation:
                coordination.announce_reservation(run)
                steps_done = training.train_epochs(
                    self, loader, epochs, steps_per_execution, callback_list, params, validation_data, seeds
                )
                if steps_done < planned_steps:
                    reservation.commit(accounting.dp_sgd_event(q, sigma, steps_done))
                    charged_steps = steps_done
                callback_list.on_train_end()
        finally:  # also on a crash: what stays charged on the ledger is counted in privacy
            training.record_run(self, reservation.event, charged_steps, q, ledger)
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
        error_bound: float | None = None,
        batch_size: int = 1024,
        verbose=0,
    ) -> dict:
        """Metrics: DP (charged to the ledger) on private data, plain Keras on public data.

        On private data each metric is a DP mean of bounded per-example values
        (:mod:`op_tensorflow.dp_metrics`): accuracy (values in [0, 1]) when an accuracy
        metric is compiled; mean absolute error (each |y - y_pred| clamped to
        ``[0, error_bound]``) and mean squared error (clamped to ``[0, error_bound**2]``)
        when compiled (``'mae'``, ``'mse'``, their long names, metric objects or functions)
        and ``error_bound``, a public bound on |y - y_pred|, is given; and the loss when
        ``loss_bound`` gives public bounds ``[0, loss_bound]`` for clamping it. Results are
        keyed by the compiled name (``'mae'`` or ``'mean_absolute_error'``), ``'accuracy'``
        and ``'loss'``. ``eps`` is split evenly across the metrics; if their total does not
        fit in the budget nothing is charged.
        """
        batch_size = _checks.positive_int("batch_size", batch_size)
        if isinstance(x, (PrivateDataFrame, PrivateSeries)):
            if not isinstance(y, (PrivateDataFrame, PrivateSeries)):
                raise TypeError("y must be the private labels of the same rows as x.")
            if eps is None:
                raise ValueError("eps must be given to evaluate on private data: the metrics are DP answers.")
            if self._loss_fn is None:
                raise RuntimeError("call compile(optimizer=..., loss=..., metrics=[...]) before evaluate().")
            plan = dp_metrics.metric_plan(self._model, self._loss_fn, loss_bound=loss_bound, error_bound=error_bound)
            PrivateDataLoader(x, y, 1)  # same checks as training: same source, aligned, numeric, finite
            y_true = _raw(y).to_numpy(dtype=np.float32)
            y_pred = self._model.predict(self._features(x), batch_size=batch_size, verbose=verbose)
            values = dp_metrics.per_example_values(plan, self._loss_fn, y_true, y_pred)
            return dp_metrics.release_means(values, x, eps)
        arguments.check_public(x, "x")
        arguments.check_public(y, "y")
        with arguments.keras_input_errors("x and y"):
            return self._model.evaluate(x, y, batch_size=batch_size, verbose=verbose, return_dict=True)

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
    q, steps = dp_model.privacy["sampling_rate"], dp_model.privacy["steps"]
    if steps:  # the saved runs, so that further fits compose with them (exact when all used one sampling rate)
        dp_model._events = [accounting.dp_sgd_event(q, dp_model.noise_multiplier, steps)]
    loss = keras_seam.compiled_loss(model)
    if getattr(model, "optimizer", None) is not None and loss is not None:
        dp_model._loss_fn = arguments.per_example_loss(arguments.single_loss(model, loss, {}))
        dp_model._optimizer = model.optimizer
    return dp_model
