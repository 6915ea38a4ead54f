"""The dispatcher loop under a burst of submissions: while every worker is busy, the wakes each
submission sends do not each ask the database for free workers again."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from farm_config import Settings
from services.composition import build_dispatcher, open_stores
from services.farm import dispatcher as dispatcher_module
from tests.factories import RecordingQueue


def _until(done: Callable[[], bool], wait_s: float = 10.0) -> None:
    deadline = time.monotonic() + wait_s
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_wakes_while_no_worker_is_free_do_not_ask_again(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    stores = open_stores(settings)
    asked: list[float] = []
    real_free = stores.workers.free

    def free():  # type: ignore[no-untyped-def]
        asked.append(time.monotonic())
        return real_free()

    monkeypatch.setattr(stores.workers, "free", free)
    dispatcher = build_dispatcher(settings.model_copy(update={"dispatch_every_s": 600}), stores, RecordingQueue(), "t")
    thread, stop = dispatcher.start_thread()
    try:
        _until(lambda: len(asked) == 1)  # the first tick: no worker at all, so none free
        monkeypatch.setattr(dispatcher_module, "NONE_FREE_HOLD_S", 600.0)
        for _ in range(20):  # a burst of submissions, each waking the loop
            dispatcher.wake()
            time.sleep(0.005)
        time.sleep(0.2)
        assert len(asked) == 1
        monkeypatch.setattr(dispatcher_module, "NONE_FREE_HOLD_S", 0.0)  # the hold has passed
        dispatcher.wake()
        _until(lambda: len(asked) == 2)
    finally:
        stop.set()
        dispatcher.wake()
        thread.join(timeout=10)
        stores.close()
