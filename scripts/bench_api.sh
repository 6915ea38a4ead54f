#!/usr/bin/env bash
# bench-api as the farm issue measured it: a local PostgreSQL (as scripts/test.sh starts one), a
# fresh database, `mattefarm api` with MATTEFARM_API_WORKERS processes, a synthetic 48-frame plate.
#   scripts/bench_api.sh                      # 400 submissions from 20 clients, closed loop
#   RATE=20 scripts/bench_api.sh              # open loop: 20 submissions a second
#   SEED_JOBS=9800 scripts/bench_api.sh       # with ~10,000 jobs in the store first
# Needs root (it runs PostgreSQL as its user, like scripts/test.sh). Prints bench-api's report.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
WORK=${WORK:-/tmp/mattefarm-bench-api}
source <(sed -n '/^start_postgres()/,/^}/p' scripts/test.sh)
PG=$(start_postgres)
DB=bench_$RANDOM
runuser -u postgres -- psql -q -c "CREATE DATABASE $DB OWNER mattefarm" >/dev/null
mkdir -p "$WORK"
rm -rf "$WORK/out" "$WORK/data"
export MATTEFARM_DATABASE_URL="${PG%/postgres}/$DB" MATTEFARM_DATA_DIR="$WORK/data"
export MATTEFARM_READ_ROOTS="$WORK" MATTEFARM_WRITE_ROOTS="$WORK" MATTEFARM_MODEL_BACKEND=synthetic
export MATTEFARM_TOKENS="bench-token-0123456789:bench:admin" MATTEFARM_TOKEN="bench-token-0123456789"
export MATTEFARM_API_PORT=${PORT:-8399} MATTEFARM_API_URL="http://127.0.0.1:${PORT:-8399}"
[ -d "$WORK/synth010" ] || "$VENV/bin/mattefarm" synth "$WORK" --frames 48 >/dev/null
PLATE="$WORK/synth010/plate/synth010.####.exr"
"$VENV/bin/mattefarm" db upgrade >/dev/null
if [ -n "${SEED_JOBS:-}" ]; then
  # finished jobs as a busy farm's history: rows only, written in one transaction
  "$VENV/bin/python" - "$SEED_JOBS" "$PLATE" <<'PY'
import random, sys, uuid
from datetime import timedelta
from farm_config import get_settings
from schemas import STAGE_ORDER, JobSpec, StageState
from services.composition import open_stores
from services.store.tables import JobRow, StageRow, utcnow
n, plate = int(sys.argv[1]), sys.argv[2]
stores = open_stores(get_settings())
spec = JobSpec(plate=plate, prompt="person", output_root="/nowhere", show="old").model_dump(mode="json")
now = utcnow()
with stores.db.session() as s:
    for i in range(n):
        row = JobRow(
            id=uuid.uuid4().hex[:12], state=random.choice(["succeeded"] * 8 + ["failed", "canceled"]),
            user=f"user{i % 40}", show=f"show{i % 7}", shot=f"sh{i % 300:03d}", priority=50, prompt="person",
            spec=spec, frames=list(range(1001, 1049)), version=1 + i // 300,
            output_dir=f"/nowhere/sh{i % 300:03d}/roto/v{1 + i // 300:03d}", output_pattern="x.####.exr",
            counters={}, layers=[], warnings=[], attempts=1, cancel_requested=False, pause_requested=False,
            gpu_memory_mb=0, created_at=now - timedelta(minutes=n - i), finished_at=now - timedelta(minutes=n - i - 1),
        )
        row.stages = [StageRow(name=st, position=k, state=StageState.SUCCEEDED, frames_done=48, frames_total=48)
                      for k, st in enumerate(STAGE_ORDER)]
        s.add(row)
stores.close()
PY
fi
"$VENV/bin/mattefarm" api --workers "${API_WORKERS:-2}" > "$WORK/api.log" 2>&1 &
API=$!
trap 'kill $API 2>/dev/null; sleep 1; runuser -u postgres -- psql -q -c "DROP DATABASE $DB WITH (FORCE)" >/dev/null' EXIT
for _ in $(seq 150); do curl -sf "$MATTEFARM_API_URL/healthz" >/dev/null && break; sleep 0.2; done
# every API process listening (each imports the farm on its own), or the load meets only the first
for _ in $(seq 150); do [ "$(ss -Hltn "sport = :${PORT:-8399}" | wc -l)" -ge "${API_WORKERS:-2}" ] && break; sleep 0.2; done
"$VENV/bin/mattefarm" bench-api "$PLATE" -o "$WORK/out" --jobs "${JOBS:-400}" --clients "${CLIENTS:-20}" ${RATE:+--rate "$RATE"}
