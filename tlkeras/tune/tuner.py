"""The tuner: runs trials through :class:`~tlkeras.tune.hypermodel.TransferHyperModel` under a
wall-clock budget, alone or as KerasTuner's chief (the oracle as a gRPC service) or a worker.

The oracle stops handing out trials after the deadline (:func:`make_oracle`); a running trial is
stopped by a callback and recorded as STOPPED, not as a failure. With device limits, a trial's
shape is measured (:class:`~tlkeras.tune.device.DeviceMeter`) before it trains; one that breaks a
limit, or whose architecture has no weights, ends FAILED with a message starting ``infeasible:``
without training, and the oracle does not count it towards its consecutive-failure stop.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from tlkeras._backend import keras, keras_tuner
from tlkeras.errors import TLKerasError
from tlkeras.runs import atomic_path
from tlkeras.tune.device import INFEASIBLE, DeviceMeter
from tlkeras.tune.hypermodel import NoWeightsError, TransferHyperModel

kt = keras_tuner()

__all__ = ["BUDGET_MESSAGE", "TransferTuner", "is_infeasible", "make_oracle", "distributed_role"]

BUDGET_MESSAGE = "stopped by the time budget"


def distributed_role() -> str:
    """``single``, or ``chief``/``worker`` when KerasTuner's distributed variables are set."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    for var in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(var):
            raise TLKerasError(f"KERASTUNER_ORACLE_IP is set but {var} is not; set both (see docs/tuning.md)")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def wait_for_chief(timeout: float = 3600.0, poll: float = 0.5) -> None:
    """Block until the chief oracle's port accepts connections.

    KerasTuner's client relies on gRPC's ``wait_for_ready``, whose reconnect backoff grows to two
    minutes: a worker started before the chief would join up to two minutes late, and a faster
    worker could take every trial meanwhile. Polling the port first makes every waiting worker
    ask for its first trial within ``poll`` seconds of the chief coming up.

    Side effects: prints one line while waiting.

    Raises:
        TLKerasError: if nothing listens on ``KERASTUNER_ORACLE_IP:PORT`` within ``timeout`` seconds.
    """
    ip, port = os.environ["KERASTUNER_ORACLE_IP"], int(os.environ["KERASTUNER_ORACLE_PORT"])
    end, said = time.monotonic() + timeout, False
    while True:
        try:
            with socket.create_connection((ip, port), timeout=poll):
                return
        except OSError:
            if time.monotonic() >= end:
                raise TLKerasError(
                    f"no chief oracle answered at {ip}:{port} within {timeout / 60:.0f} min; start the chief "
                    "(KERASTUNER_TUNER_ID=chief) or check KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT"
                ) from None
            if not said:
                print(f"tlkeras.tune: [{os.environ['KERASTUNER_TUNER_ID']}] waiting for the chief oracle at {ip}:{port}", flush=True)
                said = True
            time.sleep(poll)


class _Infeasible(Exception):
    """Raised before a trial trains when its shape breaks a device limit or has no weights."""


def is_infeasible(trial) -> bool:
    """Whether a finished KerasTuner trial was skipped as infeasible (never trained)."""
    return trial.status == "FAILED" and (trial.message or "").startswith(INFEASIBLE)


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

        def _check_consecutive_failures(self):
            # KerasTuner's rule (stop after N failures in a row), blind to infeasible trials: a
            # shape skipped for a device limit is not a broken search.
            count = 0
            for trial_id in self.end_order:
                trial = self.trials[trial_id]
                if is_infeasible(trial):
                    continue
                count = count + 1 if trial.status == "FAILED" else 0
                if count == self.max_consecutive_failed_trials:
                    raise RuntimeError(f"Number of consecutive failures exceeded the limit of {self.max_consecutive_failed_trials}.\n" + (trial.message or ""))

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
    """Runs trials through :class:`TransferHyperModel` (KerasTuner's documented ``run_trial`` override).

    Args:
        oracle: from :func:`make_oracle`.
        hypermodel: the trials' HyperModel.
        deadline: ``time.monotonic()`` after which no trial starts and a running one stops.
        worker_log: print one line per finished trial (distributed workers).
        meter: measures each trial's shape on LiteRT before it trains (None: no device limits).
        save_models: keep each trained trial's model as ``trial_<id>/model.keras`` (to export
            the winner without retraining it).
    """

    def __init__(
        self, oracle, hypermodel: TransferHyperModel, *, deadline: float | None, worker_log: bool,
        meter: DeviceMeter | None = None, save_models: bool = False, **kwargs,
    ):
        self.deadline = deadline
        self.worker_log = worker_log
        self.meter = meter
        self.save_models = save_models
        self.trials_run = 0
        self.trials_started = 0
        self.trials_infeasible = 0
        self._stopped: set[str] = set()
        self._infeasible: dict[str, str] = {}
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
            if self.save_models:
                with atomic_path(Path(self.get_trial_dir(trial.trial_id)) / "model.keras") as tmp:
                    model.save(tmp)
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

    def _try_run_and_update_trial(self, trial, *fit_args, **fit_kwargs):
        # The feasibility check runs here, before KerasTuner's run_trial wrapper, so a skipped
        # trial ends FAILED with a one-line reason instead of a printed traceback.
        if self.deadline is None or time.monotonic() < self.deadline:
            try:
                self._check_feasible(trial)
            except _Infeasible as exc:
                self._infeasible[trial.trial_id] = INFEASIBLE + str(exc)
                self.trials_infeasible += 1
                trial.status = "FAILED"
                trial.message = INFEASIBLE + str(exc)
                if self.worker_log:
                    print(f"tlkeras.tune: [{self.tuner_id}] trial {trial.trial_id}: {INFEASIBLE}{exc}", flush=True)
                return
        super()._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)

    def _check_feasible(self, trial) -> None:
        """Raises _Infeasible, before anything trains, for a shape over a limit or without weights.

        Side effects: measures a new shape (converts an untrained copy, times it) and records
        the trial's shape in ``device.json``.
        """
        try:
            config = self.hypermodel.config_for(trial.hyperparameters)
        except NoWeightsError as exc:
            raise _Infeasible(str(exc)) from None
        if self.meter is None:
            return
        bundle = self.hypermodel.data.get(config.data.image_size)
        measurement = self.meter.measure(config, bundle.num_outputs, bundle.train.x, trial.trial_id)
        problems = self.meter.problems(measurement)
        if problems:
            raise _Infeasible("; ".join(problems))

    def on_trial_end(self, trial):
        if trial.trial_id in self._stopped:
            trial.status = "STOPPED"  # not a failure, not a result: the budget ran out
            trial.message = BUDGET_MESSAGE
        elif trial.trial_id in self._infeasible:
            trial.message = self._infeasible[trial.trial_id]  # the reason, not a traceback
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
