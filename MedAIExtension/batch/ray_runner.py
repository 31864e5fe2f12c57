"""``medai batch`` on Ray: a fixed set of actors, each loading the model once, segments the studies.

Why actors and not Ray Data: a study is one file or folder in and one committed folder out, the unit of retry and
of the journal; a fixed pool of actors gives one model load per worker, a per-study result the driver records as it
arrives (resume, progress, one bad study does not stop the rest), and actor restarts when a worker process dies.
Ray Data's ``map_batches`` would add a dataset layer between the driver and the journal for no gain here.

Embedded (default): a local Ray started in this process, every server bound to 127.0.0.1, no dashboard, stopped
at the end. With an address: this process joins an existing cluster (``auto`` or ``HOST:PORT``); every node needs
MedAI installed and the input and output folders at the same paths (a shared file system).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MedAIExtension.batch.dicomweb_input import DicomWebSource
from MedAIExtension.batch.inputs import StudyInput
from MedAIExtension.batch.journal import Journal
from MedAIExtension.batch.records import StudyRecord
from MedAIExtension.batch.study import one_line_error, process_study
from MedAIExtension.errors import CancelledError, InputError
from MedAIExtension.models.backends import load_backend
from MedAIExtension.models.catalog import load_catalog
from MedAIExtension.models.variants import runtime_entry

__all__ = ["BatchSummary", "StudyWorker", "import_ray", "run_on_ray"]

#: Ray takes the node's address to be the loopback one when this is "0" (``ray_constants.ENABLE_RAY_CLUSTER``);
#: a node started with node IP 127.0.0.1 then binds its servers to 127.0.0.1 only. Read when ``ray`` is imported.
_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray(loopback: bool) -> Any:
    """Import ``ray``; with ``loopback`` (embedded runs, tests), first make Ray keep its servers on 127.0.0.1."""
    if loopback:
        os.environ[_LOOPBACK_SWITCH] = "0"
    import ray  # lazy: Ray is an optional dependency (requirements-ray.txt); the Slicer modules never import it

    if loopback:
        from ray._private import ray_constants  # lazy: part of the optional Ray

        ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the switch was set
    return ray


class StudyWorker:
    """A Ray actor's state: the model loaded once (files verified once), then one study per :meth:`run` call.

    :attr:`loads` counts the model loads of this worker process (1; a restarted worker loads it again). With a
    ``dicomweb`` source, the worker opens its own client to retrieve the DICOMweb studies it is given.
    """

    def __init__(
        self,
        model: str,
        device: str,
        studies_dir: str,
        uncertainty: bool = False,
        dicomweb: DicomWebSource | None = None,
    ) -> None:
        self.model = model
        self.device = device
        self.uncertainty = uncertainty
        self.studies_dir = Path(studies_dir)
        self.catalog = load_catalog()
        entry = self.catalog.get(model)
        runs_as = runtime_entry(entry, device, self.catalog)
        if runs_as is not entry:
            entry.verify_files()  # as medai segment: the requested model's files must be intact too
        self.backend = load_backend(runs_as, device)
        self.loads = 1
        self.store = dicomweb.open() if dicomweb is not None else None

    def pid(self) -> int:
        """The worker's process id."""
        return os.getpid()

    def run(self, study: StudyInput, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Segment one study; its record as a dict (``done`` or ``failed``, never an exception)."""
        import ray  # lazy: this runs inside a Ray worker

        context = ray.get_runtime_context()
        gpus = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
        where = {"node_id": context.get_node_id(), "pid": os.getpid(), "model_loads": self.loads, "gpu_ids": gpus}
        record = process_study(
            study,
            self.model,
            self.studies_dir,
            catalog=self.catalog,
            device=self.device,
            extra={**(extra or {}), **where},
            uncertainty=self.uncertainty,
            backend=self.backend,
            store=self.store,
            keep_retrieved=self.uncertainty,  # the annotation queue opens a DICOMweb study from its folder
        )
        return record.to_dict()


@dataclass
class BatchSummary:
    """What a run did."""

    total: int
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    workers: int = 0
    nodes: set[str] = field(default_factory=set)


def _eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _report(progress: Callable[[float, str], None], summary: BatchSummary, started: float) -> None:
    finished = summary.done + summary.failed
    elapsed = max(time.perf_counter() - started, 1e-6)
    rate = finished / elapsed
    eta = (summary.total - finished) / rate if rate > 0 else float("inf")
    progress(
        finished / max(summary.total, 1),
        f"{summary.done} ok {summary.failed} failed {rate * 60:.1f}/min ETA {_eta(eta)}",
    )


def _gpus_per_worker(ray: Any, device: str, workers: int) -> float:
    if device == "cpu":
        return 0.0
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    return min(1.0, gpus / workers) if gpus > 0 else 0.0


def _start(ray: Any, address: str | None, workers: int | None, studies: int) -> int:
    """Start the embedded Ray or join the cluster; the number of workers to run."""
    count = workers or (os.cpu_count() or 1)
    if address is None:
        ray.init(
            address="local",
            num_cpus=count,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    else:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, ValueError) as exc:
            raise InputError(
                f"Cannot join the Ray cluster at {address} ({one_line_error(exc)}). Check --address, or leave it "
                "out to run on this machine."
            ) from None
        if workers is None:
            count = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(count, studies))


def run_on_ray(
    studies: Sequence[StudyInput],
    journal: Journal,
    model: str,
    *,
    address: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    progress: Callable[[float, str], None] | None = None,
    on_workers: Callable[[list[int]], None] | None = None,
    on_record: Callable[[StudyRecord], None] | None = None,
    uncertainty: bool = False,
    dicomweb: DicomWebSource | None = None,
) -> BatchSummary:
    """Segment ``studies`` on Ray, recording each outcome in ``journal`` as it arrives.

    Args:
        studies: what to run (the journal's :meth:`~Journal.todo`).
        journal: the batch's journal (the driver is its only writer).
        model: the catalogue model name.
        address: None for an embedded Ray on 127.0.0.1; ``auto`` or ``HOST:PORT`` to join a cluster.
        workers: actors to start (default: one per CPU, at most one per study).
        device: ``auto``, ``cpu`` or ``cuda``; with a GPU in the cluster, each actor asks for a share of one.
        progress: receives (fraction, "N ok M failed R/min ETA").
        on_workers: receives the actors' process ids once they are up (diagnostics, tests).
        on_record: receives each study's record after the journal has it.
        uncertainty: also each study's predictive entropy (for the annotation queue; two more model passes).
        dicomweb: where DICOMweb studies are retrieved from (each worker opens its own client).

    Raises:
        CancelledError: Ctrl-C / SIGTERM: actors killed, Ray stopped, unfinished studies back to pending.
    """
    summary = BatchSummary(total=len(studies))
    if not studies:
        return summary
    report = progress or (lambda _f, _m: None)
    ray = import_ray(loopback=address is None)
    started = time.perf_counter()
    actors: list[Any] = []
    try:
        count = _start(ray, address, workers, len(studies))
        summary.workers = count
        actor_class = ray.remote(StudyWorker).options(
            num_cpus=1,
            num_gpus=_gpus_per_worker(ray, device, count),
            max_restarts=-1,  # a killed worker process comes back (loading the model again) ...
            max_task_retries=2,  # ... and its unfinished study is run again (the commit keeps it exactly once)
            scheduling_strategy="SPREAD",
        )
        arguments = (model, device, str(journal.studies_dir), uncertainty, dicomweb)
        actors = [actor_class.remote(*arguments) for _ in range(count)]
        pids = ray.get([a.pid.remote() for a in actors])
        if on_workers is not None:
            on_workers(list(pids))
        queue = list(studies)
        running: dict[Any, tuple[Any, StudyInput]] = {}
        idle = list(actors)
        _report(report, summary, started)

        def submit() -> None:  # keep every idle worker busy
            while idle and queue:
                actor, study = idle.pop(), queue.pop(0)
                journal.start(study.key)
                running[actor.run.remote(study)] = (actor, study)

        submit()
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            finished: list[StudyRecord] = []
            for ref in ready:
                actor, study = running.pop(ref)
                idle.append(actor)
                try:
                    record = StudyRecord.from_dict(ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - the worker died for good, or Ray failed the task
                    record = StudyRecord(study.key, study.source, "failed", error=f"worker: {one_line_error(exc)}")
                journal.finish(record)
                summary.done += record.status == "done"
                summary.failed += record.status != "done"
                if "node_id" in record.extra:
                    summary.nodes.add(str(record.extra["node_id"]))
                finished.append(record)
            submit()  # before the callbacks: the workers never wait for them
            for record in finished:
                if on_record is not None:
                    on_record(record)
            _report(report, summary, started)
    except KeyboardInterrupt:
        cancelled = True
    else:
        cancelled = False
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        ray.shutdown()
    if cancelled:
        back = journal.release_running()
        raise CancelledError(
            f"Interrupted: {summary.done} studies done, {summary.failed} failed, {back} put back to pending. "
            "Run the same command again to resume where it stopped."
        )
    summary.seconds = time.perf_counter() - started
    return summary
