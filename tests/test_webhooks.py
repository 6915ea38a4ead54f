"""Per-job webhooks: delivered once when a job finishes, whatever the outcome, to a real HTTP server."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farm_config import Settings
from schemas import EventKind, JobState
from services.composition import build_worker
from services.farm.worker_node import FarmWorker
from tests.factories import ALICE, run_tasks, submit


class Receiver:
    """A loopback webhook receiver answering ``status`` to every POST."""

    def __init__(self, status: int = 204) -> None:
        self.status, self.posts = status, queue.Queue[dict]()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.put(json.loads(body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def all(self) -> list[dict]:
        items = []
        while not self.posts.empty():
            items.append(self.posts.get_nowait())
        return items


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def runtime(settings: Settings) -> Iterator[FarmWorker]:
    rt = build_worker(settings, register=False, broker=False)
    yield rt
    rt.close()


def test_a_finished_job_is_posted_once(
    runtime: FarmWorker, settings: Settings, shot: Path, farm_root: Path, receiver: Receiver
) -> None:
    job_id = submit(settings, shot, farm_root, notify_url=receiver.url)
    run_tasks(runtime, job_id)
    posts = receiver.all()
    assert len(posts) == 1
    post = posts[0]
    assert (post["event"], post["id"], post["state"], post["shot"]) == ("job.succeeded", job_id, "succeeded", "sh010")
    assert post["manifest"].endswith("sh010_roto_v001.json") and post["review"]["movie"].endswith(".mp4")
    events = runtime.store.events(job_id)
    assert [e.message for e in events if e.kind == EventKind.NOTIFIED] == ["webhook delivered: job.succeeded"]


def test_a_failed_job_is_posted_with_its_error(
    runtime: FarmWorker, settings: Settings, shot: Path, farm_root: Path, receiver: Receiver
) -> None:
    job_id = submit(settings, shot, farm_root, notify_url=receiver.url)
    (shot.parent / "sh010.1003.exr").unlink()
    run_tasks(runtime, job_id)
    (post,) = receiver.all()
    assert post["event"] == "job.failed" and "1003" in post["error"]


def test_a_receiver_that_is_down_costs_an_event_not_the_job(
    runtime: FarmWorker, settings: Settings, shot: Path, farm_root: Path
) -> None:
    broken = Receiver(status=500)
    try:
        job_id = submit(settings, shot, farm_root, notify_url=broken.url)
        run_tasks(runtime, job_id)
        assert len(broken.all()) == 3  # retried with backoff, then given up
    finally:
        broken.close()
    assert runtime.store.get(job_id).state == JobState.SUCCEEDED
    notes = [e.message for e in runtime.store.events(job_id) if e.kind == EventKind.NOTIFIED]
    assert notes == ["webhook failed after retries: HTTP 500"]


def test_canceling_a_queued_job_posts_from_the_api(
    api: TestClient, shot: Path, farm_root: Path, receiver: Receiver
) -> None:
    auth = {"Authorization": f"Bearer {ALICE}"}
    body = {"plate": str(shot), "prompt": "ball", "output_root": str(farm_root / "o"), "notify_url": receiver.url}
    job_id = api.post("/jobs", json=body, headers=auth).json()["id"]
    assert api.post(f"/jobs/{job_id}/cancel", json={"reason": "wrong shot"}, headers=auth).json()["state"] == "canceled"
    post = receiver.posts.get(timeout=10)
    assert post["event"] == "job.canceled" and post["id"] == job_id
    api.post(f"/jobs/{job_id}/cancel", json={"reason": "again"}, headers=auth)
    with pytest.raises(queue.Empty):
        receiver.posts.get(timeout=0.5)  # once, not per cancel call


@pytest.mark.parametrize("url", ["ftp://hooks.example/x", "hooks.example/x", "http:///nohost"])
def test_a_bad_webhook_url_is_refused(api: TestClient, shot: Path, farm_root: Path, url: str) -> None:
    body = {"plate": str(shot), "prompt": "ball", "output_root": str(farm_root / "o"), "notify_url": url}
    response = api.post("/jobs", json=body, headers={"Authorization": f"Bearer {ALICE}"})
    assert response.status_code == 422
    assert response.json()["problems"][0]["field"] == "notify_url"


def test_an_owed_webhook_survives_until_a_sender_drains_it_and_goes_out_once(
    settings: Settings, shot: Path, farm_root: Path, receiver: Receiver
) -> None:
    """The cancel that closes the job owes its webhook in the same transaction; nothing is posted
    until a sender drains the outbox, and two senders racing post it once."""
    from schemas.task import ControlAction
    from services.composition import open_stores
    from services.farm.webhooks import WebhookSender

    job_id = submit(settings, shot, farm_root, notify_url=receiver.url)
    stores = open_stores(settings)
    try:
        _, closed = stores.tasks.control(job_id, ControlAction.CANCEL, "alice", reason="wrong plate")
        assert closed and stores.outbox.pending() == 1
        assert receiver.all() == []  # owed, not yet sent: a crash here loses nothing
        senders = [WebhookSender(stores.outbox, stores.jobs, f"sender{i}", settings) for i in range(2)]
        threads = [threading.Thread(target=s.drain) for s in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        (post,) = receiver.all()
        assert post["event"] == "job.canceled" and post["id"] == job_id
        assert stores.outbox.pending() == 0
        assert sum(s.drain() for s in senders) == 0  # settled: never sent again
        notes = [e for e in stores.jobs.events(job_id) if e.kind == EventKind.NOTIFIED]
        assert [e.message for e in notes] == ["webhook delivered: job.canceled"]
    finally:
        stores.close()


def _resolving(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    return lambda host: table[host]


def test_webhooks_go_only_to_public_or_allow_listed_hosts() -> None:
    from services.farm.webhooks import webhook_target_problem

    dns = _resolving(
        {
            "hooks.example": ["93.184.216.34"],
            "localhost": ["127.0.0.1"],
            "metadata.internal": ["169.254.169.254"],
            "db.studio": ["10.1.2.3"],
            "sneaky.example": ["93.184.216.34", "192.168.0.7"],  # one private answer is enough to refuse
            "127.0.0.1": ["127.0.0.1"],
            "::1": ["::1"],
        }
    )
    assert webhook_target_problem("https://hooks.example/roto", [], dns) is None
    for url in ("http://localhost:8000/x", "http://metadata.internal/latest", "http://db.studio/h",
                "http://sneaky.example/h", "http://127.0.0.1:9/h", "http://[::1]/h"):  # fmt: skip
        problem = webhook_target_problem(url, [], dns)
        assert problem is not None and "MATTEFARM_WEBHOOK_HOSTS" in problem, url
    assert webhook_target_problem("http://db.studio/h", ["db.studio"], dns) is None  # by name
    assert webhook_target_problem("http://db.studio/h", ["10.0.0.0/8"], dns) is None  # by range


def test_a_private_notify_url_is_refused_at_submit_naming_the_field(
    api: TestClient, settings: Settings, shot: Path, farm_root: Path
) -> None:
    settings.webhook_hosts = []
    body = {
        "plate": str(shot),
        "prompt": "ball",
        "output_root": str(farm_root / "o"),
        "notify_url": "http://127.0.0.1:8080/x",
    }
    response = api.post("/jobs", json=body, headers={"Authorization": f"Bearer {ALICE}"})
    assert response.status_code == 422 and response.json()["problems"][0]["field"] == "notify_url"
    assert "loopback" in response.json()["message"]


def test_every_delivery_is_signed_with_the_farm_secret(
    runtime: FarmWorker, settings: Settings, shot: Path, farm_root: Path
) -> None:
    import hashlib
    import hmac

    seen: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    settings.webhook_secret = "s3cret-for-the-test"
    try:
        job_id = submit(settings, shot, farm_root, notify_url=f"http://127.0.0.1:{httpd.server_port}/hook")
        run_tasks(runtime, job_id)
    finally:
        httpd.shutdown()
        httpd.server_close()
    ((headers, body),) = seen
    stamp = headers["X-Mattefarm-Timestamp"]
    expected = hmac.new(b"s3cret-for-the-test", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Mattefarm-Signature"] == f"sha256={expected}"
    assert json.loads(body)["id"] == job_id


def test_a_jobs_webhook_url_is_shown_only_to_its_owner_and_admins(
    api: TestClient, shot: Path, farm_root: Path, receiver: Receiver
) -> None:
    from tests.factories import ADMIN, BOB, auth

    body = {"plate": str(shot), "prompt": "ball", "output_root": str(farm_root / "o"), "notify_url": receiver.url}
    job_id = api.post("/jobs", json=body, headers=auth()).json()["id"]
    assert api.get(f"/jobs/{job_id}", headers=auth()).json()["spec"]["notify_url"] == receiver.url
    assert api.get(f"/jobs/{job_id}", headers=auth(ADMIN)).json()["spec"]["notify_url"] == receiver.url
    other = api.get(f"/jobs/{job_id}", headers=auth(BOB)).json()
    assert other["spec"]["notify_url"] is None and other["spec"]["plate"] == str(shot)  # the rest stays readable
