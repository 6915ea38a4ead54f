"""The OpenAPI schema fuzzed with schemathesis (bounded examples per operation): whatever a client
sends, the API answers 2xx/3xx/4xx, never a 5xx."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from farm_config import Settings
from tests.factories import ADMIN, RecordingQueue, finished_job, write_small_shot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EXAMPLES = 40  # per operation: enough to reach every validation branch, bounded for CI


@pytest.fixture(scope="module")
def fuzzed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from services.api.app import create_app
    from tests.conftest import TOKENS

    root = tmp_path_factory.mktemp("fuzz")
    farm_root = root / "farm"
    farm_root.mkdir()
    settings = Settings(
        data_dir=root / "data",
        read_roots=[farm_root],
        write_roots=[farm_root],
        tokens=TOKENS,
        model_backend="synthetic",
        task_frames=3,
        dispatcher=False,
    )
    plate = write_small_shot(farm_root, "sh010", frames=6)
    finished_job(settings, plate, farm_root)  # something to read and refine
    with TestClient(create_app(settings, queue=RecordingQueue())) as client:
        yield client


def test_no_input_makes_the_api_fail(fuzzed_api: TestClient) -> None:
    schema = schemathesis.openapi.from_dict(fuzzed_api.get("/openapi.json").json())
    failures: list[str] = []
    calls = 0
    operations = [found.ok() for found in schema.get_all_operations()]
    for operation, mode in itertools.product(operations, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):

        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis_settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def call(case) -> None:  # type: ignore[no-untyped-def]
            nonlocal calls
            request = case.as_transport_kwargs(base_url="http://testserver")
            headers = {k: str(v) for k, v in (request.get("headers") or {}).items()}
            headers["Authorization"] = f"Bearer {ADMIN}"
            body = request.get("data")
            response = fuzzed_api.request(
                request["method"],
                request["url"],
                params=request.get("params"),
                headers=headers,
                json=request.get("json"),
                content=body if isinstance(body, bytes | str) else None,
            )
            calls += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")

        try:
            call()
        except Unsatisfiable:  # an operation with nothing to make invalid (no parameters, no body)
            assert mode == GenerationMode.NEGATIVE
    print(f"schemathesis: {calls} calls over {len(operations)} operations (valid and invalid), {len(failures)} 5xx")
    assert calls > 100 and not failures, "\n".join(failures[:20])
