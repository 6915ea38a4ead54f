"""Prometheus ``/metrics``: the farm as the store and the broker see it at scrape time.

A collector that reads on each scrape, not counters kept in the API process: the database is the
record of truth and any number of API processes report the same values.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas import STAGE_ORDER, JobState, StageState
from schemas.refine import PropagationState
from schemas.task import FailureClass, TaskState
from services.farm.overview import FarmService
from services.scheduling.plan import is_gpu_stage
from services.store import JobStore
from services.store.refine_edits import RefineEdits
from services.store.refine_tasks import RefineTasks

log = logging.getLogger(__name__)

WAIT_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600)
STAGE_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600)
GPU_STAGE_NAMES = tuple(stage.value for stage in STAGE_ORDER if is_gpu_stage(stage))
REFINE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 15, 60)
MODEL_CALLS = ("detector_calls", "image_encoder_passes", "mask_decoder_calls", "tracking_steps", "frames_written")


def _histogram(
    name: str, doc: str, values: Iterable[float], buckets: tuple[float, ...], labels: dict[str, str]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    _observe(family, list(labels.values()), list(values), buckets)
    return family


def _histograms(
    name: str, doc: str, label: str, groups: Mapping[str, list[float]], buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    """One family, one labelled histogram per group (one HELP/TYPE for the name, as Prometheus wants)."""
    family = HistogramMetricFamily(name, doc, labels=[label])
    for value, values in groups.items():
        _observe(family, [value], values, buckets)
    return family


def _observe(family: HistogramMetricFamily, labels: list[str], values: list[float], buckets: tuple[float, ...]) -> None:
    cumulative = [(str(b), sum(1 for v in values if v <= b)) for b in buckets] + [("+Inf", len(values))]
    family.add_metric(labels, cumulative, sum_value=math.fsum(values))


class FarmCollector(Collector):
    def __init__(self, store: JobStore, farm: FarmService) -> None:
        self.store, self.farm = store, farm

    def collect(self) -> Iterator[Metric]:
        snap = self.store.farm_snapshot()
        jobs = GaugeMetricFamily("mattefarm_jobs", "Jobs in the store by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], snap.jobs.get(state.value, 0))
        yield jobs

        stages = GaugeMetricFamily("mattefarm_stages", "Job stages by stage and state.", labels=["stage", "state"])
        for stage in STAGE_ORDER:
            for stage_state in StageState:
                stages.add_metric(
                    [stage.value, stage_state.value], snap.stages.get((stage.value, stage_state.value), 0)
                )
        yield stages

        tasks = GaugeMetricFamily("mattefarm_tasks", "Tasks by stage and state.", labels=["stage", "state"])
        for stage in STAGE_ORDER:
            for task_state in TaskState:
                tasks.add_metric([stage.value, task_state.value], snap.tasks.get((stage.value, task_state.value), 0))
        yield tasks

        overview = self.farm.overview()
        depth = GaugeMetricFamily("mattefarm_queue_messages", "Messages waiting on the broker.", labels=["queue"])
        queued = GaugeMetricFamily(
            "mattefarm_queue_tasks", "Tasks the database has sent to each queue, not yet started.", labels=["queue"]
        )
        for q in overview.queues:
            if q.messages is not None:
                depth.add_metric([q.name], q.messages)
            queued.add_metric([q.name], q.tasks_queued)
        yield depth
        yield queued
        up = GaugeMetricFamily("mattefarm_broker_up", "1 when the broker answered this scrape.")
        up.add_metric([], 1 if overview.broker_up else 0)
        yield up
        waiting = GaugeMetricFamily("mattefarm_tasks_waiting", "Tasks not yet running (waiting, retrying, queued).")
        waiting.add_metric([], overview.tasks_waiting)
        yield waiting
        stuck = GaugeMetricFamily(
            "mattefarm_jobs_unplaceable",
            "Jobs with a waiting task no online worker could take (the dashboard and /farm say why).",
        )
        stuck.add_metric([], len(overview.unplaceable))
        yield stuck
        oldest = GaugeMetricFamily(
            "mattefarm_queue_oldest_wait_seconds", "How long the oldest job with unstarted tasks has waited."
        )
        oldest.add_metric([], overview.oldest_wait_s or 0.0)
        yield oldest

        worker_up = GaugeMetricFamily(
            "mattefarm_worker_up", "1 for a worker with a fresh heartbeat.", labels=["worker", "host", "queues"]
        )
        busy = GaugeMetricFamily("mattefarm_worker_busy", "1 while the worker runs a task.", labels=["worker"])
        gpu_used = GaugeMetricFamily(
            "mattefarm_worker_gpu_memory_used_bytes", "GPU memory in use on the worker.", labels=["worker"]
        )
        for w in overview.workers:
            worker_up.add_metric([w.name, w.host, ",".join(w.queues)], 1 if w.online else 0)
            busy.add_metric([w.name], 1 if w.current_task is not None else 0)
            if w.gpu_memory_used_mb is not None:
                gpu_used.add_metric([w.name], w.gpu_memory_used_mb * 2**20)
        yield worker_up
        yield busy
        yield gpu_used
        failures = GaugeMetricFamily(
            "mattefarm_task_failures_last_hour", "Failed task attempts in the last hour, by reason.", labels=["reason"]
        )
        last_hour = self.farm.failures_last_hour()
        for reason in FailureClass:
            failures.add_metric([reason.value], last_hour.get(reason.value, 0))
        yield failures

        yield _histogram(
            "mattefarm_job_wait_seconds", "Submission to a worker starting, recent jobs.", snap.waits, WAIT_BUCKETS, {}
        )

        by_stage: dict[str, list[float]] = defaultdict(list)
        frames: dict[str, int] = defaultdict(int)
        for name, seconds, done in snap.stage_times:
            by_stage[name].append(seconds)
            frames[name] += done
        yield _histograms(
            "mattefarm_stage_seconds",
            "Finished stage durations, recent jobs.",
            "stage",
            {stage.value: by_stage.get(stage.value, []) for stage in STAGE_ORDER},
            STAGE_BUCKETS,
        )
        per_frame = GaugeMetricFamily(
            "mattefarm_gpu_seconds_per_frame",
            "GPU-stage seconds per frame over recent finished stages (a worker holds one GPU).",
            labels=["stage"],
        )
        for gpu_stage in GPU_STAGE_NAMES:
            if frames.get(gpu_stage):
                per_frame.add_metric([gpu_stage], math.fsum(by_stage[gpu_stage]) / frames[gpu_stage])
        yield per_frame

        retries = CounterMetricFamily("mattefarm_task_retries", "Task attempts beyond the first, recent jobs.")
        retries.add_metric([], snap.retries)
        yield retries

        task_seconds: dict[str, list[float]] = defaultdict(list)
        peak: dict[str, int] = {}
        for name, seconds, peak_mb in snap.task_times:
            task_seconds[name].append(seconds)
            if peak_mb is not None:
                peak[name] = max(peak.get(name, 0), peak_mb)
        yield _histograms(
            "mattefarm_task_seconds",
            "Finished task durations, recent jobs.",
            "stage",
            {stage.value: task_seconds.get(stage.value, []) for stage in STAGE_ORDER},
            STAGE_BUCKETS,
        )
        peak_gpu = GaugeMetricFamily(
            "mattefarm_stage_peak_gpu_memory_bytes",
            "Highest GPU memory PyTorch allocated in one task of the stage, recent jobs (GPU workers only).",
            labels=["stage"],
        )
        for gpu_stage in GPU_STAGE_NAMES:
            if gpu_stage in peak:
                peak_gpu.add_metric([gpu_stage], peak[gpu_stage] * 2**20)
        yield peak_gpu
        calls = CounterMetricFamily(
            "mattefarm_model_calls", "Model calls and frames written, recent jobs.", labels=["kind"]
        )
        for kind in MODEL_CALLS:
            calls.add_metric([kind], sum(int(c.get(kind, 0)) for c in snap.counters))
        yield calls


class RefineCollector(Collector):
    """Artist refinement: edits made by kind (clicks, strokes, propagations…) and how long the
    artist waited for each (the interactive latency), over the latest edits."""

    def __init__(self, edits: RefineEdits, propagations: RefineTasks) -> None:
        self.edits, self.propagations = edits, propagations

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "mattefarm_refine_propagations",
            "Propagation tasks by state (queued and running ones are open).",
            labels=["state"],
        )
        counts = self.propagations.counts()
        for state in PropagationState:
            tasks.add_metric([state.value], counts.get(state.value, 0))
        yield tasks
        made = CounterMetricFamily("mattefarm_refine_edits", "Refinement edits made, by kind.", labels=["kind"])
        for kind, count in sorted(self.edits.counts().items()):
            made.add_metric([kind], count)
        yield made
        by_kind: dict[str, list[float]] = defaultdict(list)
        for kind, seconds in self.edits.timings():
            by_kind[kind].append(seconds)
        yield _histograms(
            "mattefarm_refine_edit_seconds",
            "Seconds from an edit's arrival to its answer (a click: the updated mask), latest edits.",
            "kind",
            dict(sorted(by_kind.items())),
            REFINE_BUCKETS,
        )


def render(store: JobStore, farm: FarmService, edits: RefineEdits, propagations: RefineTasks) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FarmCollector(store, farm))
    registry.register(RefineCollector(edits, propagations))
    return generate_latest(registry)
