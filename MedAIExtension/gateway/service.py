"""The PACS gateway service: notice stable studies, route them by rule, run jobs, store results, set priority.

One :class:`Gateway` owns a work folder (journal, job folders, log). Its main loop reads the PACS change feed
(Orthanc's ``/changes``: ``StableStudy`` events) or polls QIDO-RS, journals each new study as a job (or as
ignored when no rule matches), and worker threads run due jobs. Faults are handled where they happen:

* PACS unreachable or restarted mid-job: the job goes back to the queue with a growing delay
  (``retry_seconds``) and resumes; after ``max_attempts`` it fails with the reason.
* a series that cannot be read or processed: the job fails with the reason; the gateway keeps running.
* STOW rejected: the results stay in the job folder (state ``outbox``) and are sent again later.
* killed at any point: :meth:`Journal.recover` resumes on the next start; results are stored from the files
  listed in the journal, so the PACS gets exactly one copy.
* wrong credentials: a clear error at start-up.

Everything read from the PACS passes :class:`~MedAIExtension.gateway.boundary.PacsBoundary` (UIDs checked against
the DICOM grammar, retrieved series verified); objects it refuses are logged and listed in the job's ``skipped``
record, and no file-system path is built from PACS data (job folders are ``jobs/<journal id>/``).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

from MedAIExtension.deid.deidentify import DeidOptions, deidentify_files
from MedAIExtension.deid.uids import load_key
from MedAIExtension.errors import InputError, MedAIError
from MedAIExtension.gateway.boundary import PacsBoundary, Skipped
from MedAIExtension.gateway.config import GatewayConfig
from MedAIExtension.gateway.dicom_node import INCOMING_FOLDER, DicomNode, LocalFirstStore
from MedAIExtension.gateway.journal import FINAL_STATES, JOURNAL_NAME, Job, JobState, Journal, StudyCandidate
from MedAIExtension.gateway.kill_points import kill_point
from MedAIExtension.gateway.logs import GatewayLog
from MedAIExtension.gateway.pacs_store import GatewayStore, open_pacs_store
from MedAIExtension.gateway.report_delivery import deliver_due_reports, queue_job_report
from MedAIExtension.gateway.results import RESULTS_KEY, describe_results, job_folder
from MedAIExtension.gateway.work_folder_lock import WorkFolderLock
from MedAIExtension.pacs.credentials import credentials_from_config
from MedAIExtension.pacs.errors import PacsAuthError, PacsError, PacsRejectedError, PacsUnavailableError
from MedAIExtension.pacs.folder_store import FolderStore
from MedAIExtension.pacs.orthanc import OrthancClient
from MedAIExtension.secret_files import check_private_file

__all__ = ["ORTHANC_METADATA", "Gateway"]

#: Orthanc study metadata the gateway writes (declare them under "UserMetadata" in Orthanc's configuration).
ORTHANC_METADATA = {"MedAIPriority": 1024, "MedAIPriorityReason": 1025, "MedAIStatus": 1026}
_CURSOR = "orthanc-changes"


def _orthanc_time(text: str) -> float | None:
    """Orthanc's change dates (``20261125T101500``, local time) as a Unix time."""
    try:
        return dt.datetime.strptime(text[:15], "%Y%m%dT%H%M%S").timestamp()
    except (TypeError, ValueError):
        return None


class Gateway:
    """The gateway of one configuration (see the module docstring).

    Args:
        config: the validated configuration.
        log: where structured log lines go (default: ``<workdir>/gateway.log``, and stderr unless ``quiet``).
        environ: environment for credentials (default ``os.environ``).
        quiet: with the default log, write to the work folder only.
    """

    def __init__(
        self,
        config: GatewayConfig,
        log: GatewayLog | None = None,
        environ: Mapping[str, str] | None = None,
        quiet: bool = False,
    ) -> None:
        self.config = config
        try:
            config.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"The gateway work folder {config.workdir} cannot be created ({exc.strerror or exc}). "
                "Set 'workdir' to a writable folder."
            ) from None
        self.store = open_pacs_store(config.pacs, environ)
        self.orthanc: OrthancClient | None = None
        if config.pacs.type == "orthanc":
            credentials = credentials_from_config(config.pacs.section, environ if environ is not None else os.environ)
            self.orthanc = OrthancClient(config.pacs.url, credentials, config.pacs.timeout)
        self.log = log or GatewayLog(config.workdir / "gateway.log", quiet=quiet)
        self.node: DicomNode | None = None
        boundary_store: GatewayStore | LocalFirstStore = self.store
        if config.listen is not None:  # studies arrive by C-STORE; the PACS gives priors and takes results
            incoming = FolderStore(config.workdir / INCOMING_FOLDER, create=True)
            self.node = DicomNode(config.listen, incoming, self.log)
            boundary_store = LocalFirstStore(incoming, self.store)
        self._boundary_store = boundary_store
        self.pacs = PacsBoundary(boundary_store, self.orthanc, self.log)
        if config.pacs.section.get("allow_plaintext_password") and (
            config.pacs.section.get("password") or config.pacs.section.get("token")
        ):
            self.log(
                "plaintext_secret",
                level="warning",
                error="the PACS secret is written in plain text in the configuration (allow_plaintext_password: "
                "true); move it to password_file (chmod 600) or password_env",
            )
        self._lock = WorkFolderLock(config.workdir)
        self._lock.acquire()
        self.journal = Journal(config.workdir / JOURNAL_NAME)
        self._export_key = self._load_export_key(environ if environ is not None else os.environ)
        self._stop = threading.Event()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._polled: dict[str, tuple[int, float]] = {}
        self._classified: dict[str, int] = {}  # polling: instance count of each study when it was last classified

    def _load_export_key(self, environ: Mapping[str, str]) -> bytes | None:
        if self.config.export is None:
            return None
        try:
            if self.config.export.key_file is not None:
                check_private_file(self.config.export.key_file, "export.key_file")
            key, persistent = load_key(self.config.export.key_file, environ)
        except MedAIError:
            self.close()
            raise
        if not persistent:
            self.close()
            raise InputError(
                "The de-identified export needs a fixed key so that the same patient keeps the same pseudonym and "
                "UIDs across studies: set export.key_file in the configuration or MEDAI_DEID_KEY in the environment."
            )
        return key

    # -- lifecycle --------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the journal, the work-folder lock and the log."""
        self.journal.close()
        self._lock.release()
        self.log.close()

    def stop(self) -> None:
        """Ask the loop and the workers to stop after their current step."""
        self._stop.set()

    def check(self) -> bool:
        """Check the PACS answers and accepts the credentials.

        Returns:
            True when reachable; False when unreachable (the gateway keeps trying).

        Raises:
            PacsAuthError: the PACS refused the credentials (fix the configuration; nothing would work).
        """
        try:
            if self.orthanc is not None:
                self.orthanc.system()
            self.store.check()
        except PacsAuthError:
            raise
        except PacsUnavailableError as exc:
            self.log("pacs_unreachable", level="warning", error=str(exc))
            return False
        return True

    def run(self, once: bool = False, max_seconds: float | None = None) -> None:
        """Run until :meth:`stop` or ``max_seconds``; with ``once``, until nothing new came and no job is left to
        run (jobs waiting in the outbox stay there for the next run).

        Raises:
            PacsAuthError: wrong credentials (at start-up or later).
            PacsUnavailableError: with ``once``, the PACS could not be reached in ``max_attempts`` tries.
        """
        self.check()
        if self.node is not None:
            self.node.start()
        recovered = self.journal.recover()
        self.log("gateway_started", shadow=self.config.shadow, workers=self.config.workers, recovered=recovered)
        workers = [
            threading.Thread(target=self._worker_loop, name=f"medai-gateway-{i}", daemon=True)
            for i in range(self.config.workers)
        ]
        for worker in workers:
            worker.start()
        started = time.monotonic()
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    new = self.discover()
                    failures = 0
                except PacsAuthError:
                    raise
                except PacsError as exc:
                    failures += 1
                    self.log("discover_failed", level="warning", error=str(exc), failures=failures)
                    if once and failures >= self.config.max_attempts:
                        raise  # a one-off run that cannot reach the PACS must not look like success
                    if max_seconds is not None and time.monotonic() - started > max_seconds:
                        break
                    self._stop.wait(self.config.retry_delay(failures))
                    continue
                if self.config.ris is not None and not self.config.shadow:
                    deliver_due_reports(
                        self.journal, self.config.workdir, self.config.ris, self.config.retry_delay,
                        self.config.max_attempts, self.log,
                    )  # fmt: skip
                active = self.journal.count([JobState.QUEUED, JobState.RUNNING, JobState.RESULTS, JobState.STORING])
                active += sum(1 for report in self.journal.reports() if report.state == "pending")
                active += int(self.node is not None and self.node.receiving())
                if once and new == 0 and not self._polled and active == 0 and self._idle():
                    break
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
                self._stop.wait(self.config.pacs.poll_seconds)
        finally:
            self._stop.set()
            if self.node is not None:
                self.node.stop()
            for worker in workers:
                worker.join()
            self.log("gateway_stopped", pending=self.journal.pending())

    def _idle(self) -> bool:
        with self._busy_lock:
            return self._busy == 0

    # -- discovering studies ----------------------------------------------------------------------------------

    def classify(
        self, study_uid: str, stable_at: float | None = None, skipped: Skipped | None = None
    ) -> list[StudyCandidate]:
        """One candidate per rule matching a series of the study, or one ignored candidate saying why.

        Series whose UIDs are refused at the boundary are left out and listed in every candidate's ``skipped``.
        """
        skipped = [] if skipped is None else skipped
        series = self.pacs.series(study_uid, skipped)
        found = []
        for rule in self.config.rules:
            for item in series:
                if rule.matches(item.modality, item.body_part, item.description):
                    found.append(StudyCandidate(study_uid, rule.name, item.series_uid, stable_at, "", tuple(skipped)))
                    break
        if found:
            return found
        kinds = sorted({f"{s.modality or '?'}/{s.body_part or '?'}" for s in series})
        detail = f"no rule matches its series ({', '.join(kinds) or 'none'})"
        if skipped:
            detail += f"; {len(skipped)} object(s) refused (see skipped)"
        return [StudyCandidate(study_uid, None, "", stable_at, detail, tuple(skipped))]

    def _refused_study(self, skipped: Skipped, stable_at: float | None, raw: str) -> StudyCandidate:
        """An ignored journal entry for a study whose StudyInstanceUID was refused (named by a hash of it)."""
        import hashlib

        name = "refused-" + hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        reason = skipped[-1]["reason"] if skipped else "refused"
        return StudyCandidate(name, None, "", stable_at, f"refused: StudyInstanceUID {reason}", tuple(skipped))

    def discover(self) -> int:
        """Journal the studies that became stable since the last call; returns how many jobs were created.

        Nothing is read while ``max_queued`` jobs wait (back-pressure); the feed position is kept, so nothing is
        lost.
        """
        if self.journal.count([JobState.QUEUED]) >= self.config.max_queued:
            return 0
        if self.node is not None:
            return self._discover_node(self.node)
        if self.orthanc is not None:
            return self._discover_orthanc(self.orthanc)
        return self._discover_polling()

    def _discover_node(self, node: DicomNode) -> int:
        """Journal the studies the DICOM node received completely (no instance for ``stable_seconds``)."""
        candidates: list[StudyCandidate] = []
        for study_uid, last in node.take_stable():
            if not self.journal.known(study_uid, ignored=False):
                candidates.extend(self.classify(study_uid, last))
        return self._record(candidates, None) if candidates else 0

    def _release_incoming(self, job: Job) -> None:
        """Remove a received study's files once every job of it has ended (no patient data kept)."""
        if self.node is None:
            return
        if all(other.state in FINAL_STATES for other in self.journal.jobs() if other.study_uid == job.study_uid):
            self.node.incoming.remove_study(job.study_uid)

    def _record(self, candidates: list[StudyCandidate], cursor: tuple[str, str] | None) -> int:
        created = self.journal.record_candidates(candidates, cursor)
        for job in created:
            if job.state is JobState.IGNORED:
                self.log("study_ignored", study_uid=job.study_uid, reason=job.detail)
            else:
                self.log("job_queued", job=job.id, rule=job.rule, study_uid=job.study_uid)
        return sum(1 for job in created if job.state is JobState.QUEUED)

    def _discover_orthanc(self, orthanc: OrthancClient) -> int:
        since = int(self.journal.cursor(_CURSOR, "0") or 0)  # a fresh journal reads the whole feed
        total = 0
        while True:
            changes, last, done = orthanc.changes(since=since, limit=100)
            candidates: list[StudyCandidate] = []
            for change in changes:
                if change.change_type != "StableStudy":
                    continue
                skipped: Skipped = []
                try:
                    study_uid = self.pacs.study_of_change(change.resource_id, skipped)
                except PacsError as exc:
                    if isinstance(exc, (PacsUnavailableError, PacsAuthError)):
                        raise
                    continue  # deleted since
                if study_uid is None:
                    if skipped:
                        candidates.append(self._refused_study(skipped, _orthanc_time(change.date), change.resource_id))
                    continue
                if self.journal.known(study_uid, ignored=False):
                    continue  # e.g. stable again after our own results were stored into it
                # new, or only ignored so far: a junk series stored first must not hide the real one arriving later
                candidates.extend(self.classify(study_uid, _orthanc_time(change.date), skipped))
            total += self._record(candidates, (_CURSOR, str(last)))
            since = last
            if done or not changes or self._stop.is_set():
                return total
            if self.journal.count([JobState.QUEUED]) >= self.config.max_queued:
                return total  # back-pressure: the rest of the feed waits for the next call

    def _discover_polling(self) -> int:
        now = time.time()
        stable_after = max(2 * self.config.pacs.poll_seconds, 1.0)
        candidates: list[StudyCandidate] = []
        refused_studies = []
        for study in self.store.search_studies():
            skipped: Skipped = []
            if self.pacs.checked(study.study_uid, "StudyInstanceUID of a search answer", skipped) is None:
                refused = self._refused_study(skipped, now, study.study_uid)
                if not self.journal.known(refused.study_uid):
                    refused_studies.append(refused)
                continue
            if self.journal.known(study.study_uid, ignored=False):
                self._polled.pop(study.study_uid, None)
                continue
            series = self.store.search_series(study.study_uid)
            count = sum(s.number_of_instances or 0 for s in series) + len(series)
            if self._classified.get(study.study_uid) == count:
                continue  # ignored as it is now; looked at again once it changes
            previous = self._polled.get(study.study_uid)
            if previous is None or previous[0] != count:
                self._polled[study.study_uid] = (count, now)
            elif now - previous[1] >= stable_after:
                candidates.extend(self.classify(study.study_uid, previous[1]))
                self._polled.pop(study.study_uid, None)
                self._classified[study.study_uid] = count
        candidates.extend({c.study_uid: c for c in refused_studies}.values())
        return self._record(candidates, None) if candidates else 0

    # -- running jobs -----------------------------------------------------------------------------------------

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            with self._busy_lock:
                job = self.journal.claim()
                if job is not None:
                    self._busy += 1
            if job is None:
                self._stop.wait(0.2)
                continue
            try:
                self.process(job)
            except Exception as exc:  # noqa: BLE001 - a worker thread must survive any one job
                self._internal_error(job, exc)
            finally:
                with self._busy_lock:
                    self._busy -= 1

    def _internal_error(self, job: Job, exc: Exception) -> Job:
        """A bug or an unforeseen failure: the job fails with the error (traceback in the log), the gateway goes on."""
        self.log(
            "job_failed",
            level="error",
            job=job.id,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=8),
        )
        shutil.rmtree(self.job_dir(job), ignore_errors=True)
        return self.journal.finish(job.id, JobState.FAILED, f"internal error: {type(exc).__name__}: {exc}")

    def job_dir(self, job: Job) -> Path:
        """The folder holding a job's retrieved series and results."""
        return job_folder(self.config.workdir, job)

    def process(self, job: Job) -> Job:
        """Run one claimed job's next step (the pipeline, or storing its results); returns the updated job."""
        if job.state is JobState.RUNNING:
            done = self._run_pipeline(job)
        elif job.state is JobState.STORING:
            done = self._store(job)
        else:
            raise ValueError(f"job {job.id} is {job.state}, not claimed")
        if done.state in FINAL_STATES:
            self._release_incoming(done)
        return done

    def _retry_or_fail(self, job: Job, state: JobState, attempts: int, error: str) -> Job:
        """Put the job back with a growing delay; fail it after ``max_attempts`` (never from the outbox)."""
        if attempts >= self.config.max_attempts and state is not JobState.OUTBOX:
            self.log("job_failed", level="error", job=job.id, study_uid=job.study_uid, error=error, attempts=attempts)
            return self.journal.finish(job.id, JobState.FAILED, f"gave up after {attempts} attempts: {error}")
        delay = self.config.retry_delay(attempts)
        self.log("job_retry", level="warning", job=job.id, state=state.value, error=error, retry_in=delay)
        return self.journal.retry_later(job.id, state, delay, error)

    def _run_pipeline(self, job: Job) -> Job:
        from MedAIExtension.gateway.pipelines import run_pipeline  # lazy: medai --help loads gateway, not tracking

        rule = self.config.rule(job.rule)
        folder = self.job_dir(job)
        self.log("job_started", job=job.id, rule=rule.name, pipeline=rule.pipeline.value, attempt=job.attempts)
        started = time.perf_counter()
        skipped: Skipped = []
        pacs = PacsBoundary(
            self._boundary_store, self.orthanc, lambda event, **fields: self.log(event, job=job.id, **fields)
        )
        try:
            output = run_pipeline(
                rule, pacs, job.study_uid, job.series_uid, folder, self.config.device, skipped=skipped,
                ris=self.config.ris,
            )  # fmt: skip
        except (PacsUnavailableError, PacsAuthError) as exc:
            self._note_skipped(job, skipped)
            return self._retry_or_fail(job, JobState.QUEUED, job.attempts, str(exc))
        except MedAIError as exc:
            self._note_skipped(job, skipped)
            self.log("job_failed", level="error", job=job.id, error=str(exc), kind=type(exc).__name__)
            shutil.rmtree(folder, ignore_errors=True)
            return self.journal.finish(job.id, JobState.FAILED, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad study must not stop the gateway
            self._note_skipped(job, skipped)
            return self._internal_error(job, exc)
        self._note_skipped(job, skipped)
        if self.config.export is None:
            self._drop_inputs(job)
        summary = dict(output.summary, seconds=round(time.perf_counter() - started, 2))
        results = [str(path.relative_to(folder)) for path in output.files]
        kill_point("run")
        self.log("job_results", job=job.id, files=len(results), priority=output.triage.priority, **summary)
        # The stored objects' UIDs go to the journal (for `medai view --study`), not to the log.
        recorded = dict(summary, **{RESULTS_KEY: describe_results(output.files)})
        done = self.journal.results_ready(
            job.id, results, output.triage.priority, output.triage.label, output.triage.reason, recorded
        )
        kill_point("commit")
        return done

    def _note_skipped(self, job: Job, skipped: Skipped) -> None:
        if skipped:
            self.journal.note_skipped(job.id, skipped)

    def _store(self, job: Job) -> Job:
        folder = self.job_dir(job)
        files = [folder / name for name in job.results]
        if any(not path.is_file() for path in files):
            self.log("results_missing", level="warning", job=job.id)
            return self.journal.retry_later(job.id, JobState.QUEUED, 0.0, "result files missing; recomputing")
        if self.config.shadow:
            self._export(job, files)
            self.log("job_shadow", job=job.id, files=len(files), priority=job.priority)
            self._drop_inputs(job)
            return self.journal.finish(job.id, JobState.SHADOW, "shadow mode: results kept in the work folder")
        try:
            stored = self._send(job, files)
            self._set_priority(job)
        except PacsRejectedError as exc:
            return self._retry_or_fail(job, JobState.OUTBOX, job.store_attempts, f"STOW rejected: {exc}")
        except (PacsUnavailableError, PacsAuthError) as exc:
            return self._retry_or_fail(job, JobState.RESULTS, job.store_attempts, str(exc))
        self._export(job, files)
        queue_job_report(self.journal, self.config.workdir, self.job_dir(job), job.id, self.config.ris)
        done = self.journal.finish(job.id, JobState.DONE)
        shutil.rmtree(self.job_dir(job), ignore_errors=True)  # the PACS has the results; keep no patient data
        self.log(
            "job_done", job=job.id, stored=stored, priority=job.priority, latency=round(done.latency_seconds or 0, 2)
        )
        return done

    def _drop_inputs(self, job: Job) -> None:
        """Remove the series retrieved for a job (patient data the gateway no longer needs); its results stay."""
        for name in ("input", "prior", "prior-report"):  # the role folders of pipelines.py
            shutil.rmtree(self.job_dir(job) / name, ignore_errors=True)

    def _export(self, job: Job, files: list[Path]) -> None:
        """De-identified copies of the job's input series and results into the export folder (if configured).

        A failed export is logged and does not fail the job: the PACS already has the results.
        """
        if self.config.export is None or self._export_key is None:
            return
        # images with burned-in annotation cannot be cleaned by the profile: left out (counted in the log)
        options = DeidOptions(date_shift_days=self.config.export.date_shift_days, skip_burned_in=True)
        try:
            report = deidentify_files(
                [self.job_dir(job) / "input", *files], self.config.export.path, self._export_key, options
            )
        except MedAIError as exc:
            self.log("export_failed", level="warning", job=job.id, error=str(exc))
            return
        self.log("job_exported", job=job.id, files=len(report.written), skipped=len(report.skipped))

    def _send(self, job: Job, files: list[Path]) -> int:
        """Store the result files series by series and check the PACS holds every instance afterwards.

        Instances the PACS already holds (sent before a crash) are not sent again. An instance the PACS answered
        for but does not hold (e.g. dropped by a filter) counts as rejected, so the job waits in the outbox.
        """
        import pydicom

        by_series: dict[str, dict[str, Path]] = {}
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "SOPInstanceUID"])
            by_series.setdefault(str(ds.SeriesInstanceUID), {})[str(ds.SOPInstanceUID)] = path
        stored = 0
        for series_uid, instances in by_series.items():
            missing = set(instances) - self.store.instance_uids(job.study_uid, series_uid)
            if not missing:
                continue
            outcome = self.store.store([instances[uid] for uid in sorted(missing)])
            stored += len(outcome.stored)
            kill_point("store")
            absent = sorted(set(instances) - self.store.instance_uids(job.study_uid, series_uid))
            if absent:
                raise PacsRejectedError(
                    f"the PACS accepted {len(absent)} instance(s) of a result series but does not hold them "
                    "(a filter or storage rule may drop them)",
                    [(uid, "not found after storing") for uid in absent],
                )
        return stored

    def _set_priority(self, job: Job) -> None:
        if self.orthanc is None or job.priority is None:
            return
        study_id = self.orthanc.study_id(job.study_uid)
        if study_id is None:
            return
        values = {"MedAIPriority": str(job.priority), "MedAIPriorityReason": job.priority_reason, "MedAIStatus": "done"}
        try:
            for name, value in values.items():
                self.orthanc.set_metadata(study_id, name, value)
        except PacsUnavailableError:
            raise
        except PacsError as exc:
            self.log(
                "priority_not_written",
                level="warning",
                job=job.id,
                error=f"{exc}; declare {', '.join(f'{k}: {v}' for k, v in ORTHANC_METADATA.items())} under "
                "UserMetadata in Orthanc's configuration",
            )
