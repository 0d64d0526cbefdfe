#!/usr/bin/env bash
# Install the test dependencies and run the whole suite: lint, types, tests (browser tests too).
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# jlpm (the lab extension build) does not read .npmrc: point it at npm's registry.
if command -v npm >/dev/null 2>&1 && [ -z "${YARN_NPM_REGISTRY_SERVER:-}" ]; then
    YARN_NPM_REGISTRY_SERVER="$(npm config get registry)"
    export YARN_NPM_REGISTRY_SERVER
fi

python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test,lab,dask]"

# Browser tests drive Debian's Chromium (test tools may not download browsers here).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

npm run --silent jlpm -- lint:check     # the lab extension's style
npm run --silent jlpm -- test           # the lab extension's unit tests (node's test runner)
python -m ruff check .
python -m ruff format --check .
python -m mypy
python -m pytest "$@"
