"""Prometheus ``/metrics``: the farm as the store and the broker see it at scrape time.

A collector that reads on each scrape, not counters kept in the API process: the database is the
record of truth and any number of API processes report the same values.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas import STAGE_ORDER, JobState, StageState
from services.store import JobStore

log = logging.getLogger(__name__)

WAIT_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600)
STAGE_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600)
MODEL_CALLS = ("detector_calls", "image_encoder_passes", "mask_decoder_calls", "tracking_steps", "frames_written")
GPU_STAGES = ("detect", "segment", "track")


def _histogram(
    name: str, doc: str, values: Iterable[float], buckets: tuple[float, ...], labels: dict[str, str]
) -> HistogramMetricFamily:
    values = list(values)
    cumulative = [(str(b), sum(1 for v in values if v <= b)) for b in buckets] + [("+Inf", len(values))]
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), cumulative, sum_value=math.fsum(values))
    return family


class FarmCollector(Collector):
    def __init__(self, store: JobStore, queue_depth: Callable[[], dict[str, int]] | None) -> None:
        self.store, self.queue_depth = store, queue_depth

    def collect(self) -> Iterator[Metric]:
        snap = self.store.farm_snapshot()
        jobs = GaugeMetricFamily("mattefarm_jobs", "Jobs in the store by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], snap.jobs.get(state.value, 0))
        yield jobs

        stages = GaugeMetricFamily("mattefarm_stages", "Job stages by stage and state.", labels=["stage", "state"])
        for stage in STAGE_ORDER:
            for state in StageState:
                stages.add_metric([stage.value, state.value], snap.stages.get((stage.value, state.value), 0))
        yield stages

        depth = GaugeMetricFamily("mattefarm_queue_messages", "Messages waiting on the broker.", labels=["queue"])
        up = GaugeMetricFamily("mattefarm_broker_up", "1 when the broker answered this scrape.")
        try:
            counts = self.queue_depth() if self.queue_depth else {}
            up.add_metric([], 1)
        except Exception as exc:  # a scrape must not fail because the broker is down
            log.warning("queue depth unavailable: %s", exc)
            counts = {}
            up.add_metric([], 0)
        for queue, count in sorted(counts.items()):
            depth.add_metric([queue], count)
        yield depth
        yield up

        oldest = GaugeMetricFamily(
            "mattefarm_queue_oldest_wait_seconds", "How long the oldest queued job has waited (0 when none)."
        )
        now = datetime.now(UTC)
        oldest.add_metric([], (now - snap.oldest_queued_at).total_seconds() if snap.oldest_queued_at else 0.0)
        yield oldest
        yield _histogram(
            "mattefarm_job_wait_seconds", "Submission to a worker starting, recent jobs.", snap.waits, WAIT_BUCKETS, {}
        )

        by_stage: dict[str, list[float]] = defaultdict(list)
        frames: dict[str, int] = defaultdict(int)
        for stage, seconds, done in snap.stage_times:
            by_stage[stage].append(seconds)
            frames[stage] += done
        for stage in STAGE_ORDER:
            yield _histogram(
                "mattefarm_stage_seconds",
                "Finished stage durations, recent jobs.",
                by_stage.get(stage.value, []),
                STAGE_BUCKETS,
                {"stage": stage.value},
            )
        per_frame = GaugeMetricFamily(
            "mattefarm_gpu_seconds_per_frame",
            "GPU-stage seconds per frame over recent finished stages (a worker holds one GPU).",
            labels=["stage"],
        )
        for stage in GPU_STAGES:
            if frames.get(stage):
                per_frame.add_metric([stage], math.fsum(by_stage[stage]) / frames[stage])
        yield per_frame

        retries = CounterMetricFamily("mattefarm_job_retries", "Attempts beyond the first, recent jobs.")
        retries.add_metric([], snap.retries)
        yield retries
        calls = CounterMetricFamily(
            "mattefarm_model_calls", "Model calls and frames written, recent jobs.", labels=["kind"]
        )
        for kind in MODEL_CALLS:
            calls.add_metric([kind], sum(int(c.get(kind, 0)) for c in snap.counters))
        yield calls


def render(store: JobStore, queue_depth: Callable[[], dict[str, int]] | None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FarmCollector(store, queue_depth))
    return generate_latest(registry)
