"""Running a propagation on a worker: claim it, rebuild the job's layers from its stored edits,
track the layer from its keyframes with the worker's warm tracker, and store the result with the
edit it becomes (``RefineTasks.finish``: both or neither). A duplicate message finds the row taken;
a worker killed halfway leaves only its row, which the dispatcher gives to another worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from farm_config.settings import Settings
from schemas import JobState
from schemas.refine import RefineProgress
from services.farm.refine_session import open_session, replay
from services.store import FarmStores
from workers.core.masks import pack_masks
from workers.core.refine import RefineError
from workers.models.interfaces import ModelSet

log = logging.getLogger(__name__)

BEAT_EVERY_S = 0.25  # progress reaches the page about this often


def run_propagation(
    task_id: int, worker: str, settings: Settings, stores: FarmStores, models: Callable[[], ModelSet]
) -> RefineProgress | None:
    """Run propagation ``task_id`` here; returns how it ended (None: it was not ours to run)."""
    tasks = stores.refine_tasks
    claim = tasks.claim(task_id, worker)
    if claim is None:
        return None
    started = time.perf_counter()
    try:
        job = stores.jobs.get(claim.job_id)
        if job is None or job.state != JobState.SUCCEEDED:
            tasks.fail(task_id, worker, f"job {claim.job_id} is gone or no longer succeeded")
            return tasks.get(task_id)
        session = open_session(job, settings, models())
        with session.frames:
            replay(session, stores.refine_edits.active(job.id), tasks)
            session.engine.book.layer(claim.layer)  # still there (a delete replayed since would say so)
            last = [0.0]

            def report(done: int, total: int) -> None:
                now = time.perf_counter()
                if now - last[0] >= BEAT_EVERY_S or done >= total:
                    last[0] = now
                    tasks.beat(task_id, worker, done, total)

            session.engine.on_progress = report
            changed = sorted(session.engine.propagate(claim.layer))
            book = session.engine.book
            result = pack_masks(changed, [book.mask(claim.layer, p) for p in changed], book.shape)
        frames = [job.frames[p] for p in changed]
        if tasks.finish(task_id, worker, result, frames, time.perf_counter() - started) is None:
            log.warning("propagation %s was given to another worker meanwhile; this run's result is dropped", task_id)
    except RefineError as exc:
        tasks.fail(task_id, worker, f"{exc.field}: {exc.message}")
    except Exception as exc:
        log.exception("propagation %s failed", task_id)
        tasks.fail(task_id, worker, f"{type(exc).__name__}: {exc}")
    return tasks.get(task_id)
