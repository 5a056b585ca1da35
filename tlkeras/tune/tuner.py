"""The tuner: runs trials through :class:`~tlkeras.tune.hypermodel.TransferHyperModel` under a
wall-clock budget, alone or as KerasTuner's chief (the oracle as a gRPC service) or a worker.

The oracle stops handing out trials after the deadline (:func:`make_oracle`); a running trial is
stopped by a callback and recorded as STOPPED, not as a failure.
"""

from __future__ import annotations

import os
import time

from tlkeras._backend import keras, keras_tuner
from tlkeras.errors import TLKerasError
from tlkeras.tune.hypermodel import TransferHyperModel

kt = keras_tuner()

__all__ = ["BUDGET_MESSAGE", "TransferTuner", "make_oracle", "distributed_role"]

BUDGET_MESSAGE = "stopped by the time budget"


def distributed_role() -> str:
    """``single``, or ``chief``/``worker`` when KerasTuner's distributed variables are set."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    for var in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(var):
            raise TLKerasError(f"KERASTUNER_ORACLE_IP is set but {var} is not; set both (see docs/tuning.md)")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


class _OutOfTime(Exception):
    """Raised inside a trial's fit when the search's time budget runs out."""


class _DeadlineCallback(keras.callbacks.Callback):
    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline

    def _check(self, *_args, **_kwargs):
        if time.monotonic() >= self.deadline:
            raise _OutOfTime()

    on_train_begin = on_train_batch_end = on_epoch_end = _check


def _budgeted(base_cls):
    """A subclass of a KerasTuner oracle that stops handing out trials after a deadline."""

    class Budgeted(base_cls):
        deadline: float | None = None
        stopped_by: str | None = None
        initial_values: dict | None = None

        def _random_values(self):
            # Every oracle draws its first (random) points here: hand out the base
            # configuration once, then sample. The oracle's record of tried values (saved with
            # its state) keeps a resumed search from proposing it again.
            initial = self.initial_values
            if initial is not None and not self._duplicate(initial):
                return dict(initial)
            return super()._random_values()

        @kt.synchronized
        def create_trial(self, tuner_id):
            if self.deadline is not None and time.monotonic() >= self.deadline and tuner_id not in self.ongoing_trials:
                self.stopped_by = "time_budget"
                # Like KerasTuner's own STOPPED answer: forget the tuner so a chief can exit.
                self.tuner_ids.discard(tuner_id)
                return kt.engine.trial.Trial(self.hyperparameters.copy(), status="STOPPED")
            return super().create_trial(tuner_id)

    Budgeted.__name__ = Budgeted.__qualname__ = f"Budgeted{base_cls.__name__}"
    return Budgeted


def _serve_oracle(oracle) -> None:
    """Runs KerasTuner's gRPC oracle service until every worker has been told to stop."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise TLKerasError(f"the chief cannot listen on {address} (port in use or not this machine's address); set KERASTUNER_ORACLE_PORT to a free port")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(0.5)
    finally:
        server.stop(grace=2)


class TransferTuner(kt.engine.base_tuner.BaseTuner):
    """Runs trials through :class:`TransferHyperModel` (KerasTuner's documented ``run_trial`` override)."""

    def __init__(self, oracle, hypermodel: TransferHyperModel, *, deadline: float | None, worker_log: bool, **kwargs):
        self.deadline = deadline
        self.worker_log = worker_log
        self.trials_run = 0
        self.trials_started = 0
        self._stopped: set[str] = set()
        super().__init__(oracle, hypermodel, **kwargs)

    def search(self, *fit_args, **fit_kwargs):
        if distributed_role() != "chief":
            return super().search(*fit_args, **fit_kwargs)
        # KerasTuner's chief (BaseTuner.search -> oracle_chief.start_server) polls for the end of
        # the search every 20 s; serving the same OracleServicer here ends it within a second and
        # turns a port that cannot be bound into a one-line error.
        if "verbose" in fit_kwargs:
            self.oracle.verbose = fit_kwargs["verbose"]
        self.save()
        _serve_oracle(self.oracle)

    def _populate_initial_space(self):
        # The space has no conditional parts; declaring it is enough (KerasTuner's default would
        # build a real model here just to discover the hyperparameters).
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        start = time.perf_counter()
        callbacks = [_DeadlineCallback(self.deadline)] if self.deadline is not None else []
        model = None
        self.trials_started += 1
        from tlkeras.train.run import precision_policy

        try:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise _OutOfTime()
            with precision_policy(self.hypermodel.base.train.mixed_precision):
                model = self.hypermodel.build(hp)
                result = self.hypermodel.fit(hp, model, callbacks=callbacks)
        except _OutOfTime:
            self._stopped.add(trial.trial_id)
            raise kt.errors.FailedTrialError(BUDGET_MESSAGE) from None
        except TLKerasError as exc:
            # A configuration this data/backbone cannot train: the trial fails, the search goes on.
            raise kt.errors.FailedTrialError(str(exc)) from None
        finally:
            del model
            keras.backend.clear_session()
        result["seconds"] = time.perf_counter() - start
        self.trials_run += 1
        if self.worker_log:
            objective = self.oracle.objective.name
            print(f"tlkeras.tune: [{self.tuner_id}] trial {trial.trial_id}: {objective} {result.get(objective, float('nan')):.4f} ({result['seconds']:.1f}s)", flush=True)
        return result

    def on_trial_end(self, trial):
        if trial.trial_id in self._stopped:
            trial.status = "STOPPED"  # not a failure, not a result: the budget ran out
            trial.message = BUDGET_MESSAGE
        super().on_trial_end(trial)


def make_oracle(options, objective: str, direction: str, seed: int, epoch_unit: int):
    """A budgeted KerasTuner oracle for ``options.tuner`` (a :class:`~tlkeras.tune.search.SearchOptions`)."""
    objective_obj = kt.Objective(objective, direction)
    common = {"objective": objective_obj, "seed": seed, "max_consecutive_failed_trials": 3}
    if options.tuner == "hyperband":
        oracle = _budgeted(kt.oracles.HyperbandOracle)(
            max_epochs=epoch_unit, factor=int(options.hyperband_factor),
            hyperband_iterations=int(options.hyperband_iterations), **common,
        )
        oracle.max_trials = options.max_trials  # Hyperband has no max_trials argument; the base Oracle honours it
        return oracle
    cls = kt.oracles.RandomSearchOracle if options.tuner == "random" else kt.oracles.BayesianOptimizationOracle
    return _budgeted(cls)(max_trials=options.max_trials or 10, **common)
