#!/usr/bin/env bash
# Run the whole test suite: ruff, lint-imports and mypy, then starts a PostgreSQL server for the
# store tests if none is given (MATTEFARM_TEST_POSTGRES_URL), then pytest
# (MATTEFARM_SKIP_CHECKS=1 skips the first three while iterating). Redis servers and worker processes are started by
# the tests themselves. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

start_postgres() {
  command -v pg_lsclusters >/dev/null 2>&1 || { echo "PostgreSQL is not installed: run scripts/install.sh" >&2; return 1; }
  local version
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$version main$"; then
    pg_createcluster "$version" main >&2
  fi
  if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
    # pg_ctlcluster talks on stdout ("Removed stale pid file."); only the URL may go there.
    pg_ctlcluster "$version" main start >&2
  fi
  local port
  port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
  runuser -u postgres -- psql -q -p "$port" -v ON_ERROR_STOP=1 <<SQL >&2
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mattefarm') THEN
    CREATE ROLE mattefarm LOGIN PASSWORD 'mattefarm' CREATEDB;
  END IF;
END \$\$;
SQL
  echo "postgresql+psycopg://mattefarm:mattefarm@127.0.0.1:$port/postgres"
}

if [ -z "${MATTEFARM_TEST_POSTGRES_URL:-}" ]; then
  if [ "$(id -u)" -eq 0 ] && url=$(start_postgres); then
    export MATTEFARM_TEST_POSTGRES_URL="$url"
  else
    echo "note: no PostgreSQL for the store tests (set MATTEFARM_TEST_POSTGRES_URL)" >&2
  fi
fi

# The architecture and the types first: they fail in seconds where the suite takes minutes.
# (docs/architecture.md: the layers lint-imports enforces; pyproject.toml: the contracts.)
if [ -z "${MATTEFARM_SKIP_CHECKS:-}" ]; then
  echo "==> ruff" >&2
  "$VENV/bin/ruff" check . >&2
  echo "==> lint-imports (the layers of docs/architecture.md)" >&2
  "$VENV/bin/lint-imports" >&2
  echo "==> mypy" >&2
  "$VENV/bin/mypy" >&2
fi

exec "$VENV/bin/python" -m pytest "$@"
