#!/usr/bin/env bash
# Runs every test of dr: unit, property, engine, crash-and-resume, drill, daemon, API, browser,
# deployment and runbook tests. Sets up what they need first:
# - .venv: the pinned Python tools that parse the Dockerfile and manifests
#   (tests/python/requirements.txt);
# - the release binary, built exactly as the Dockerfile builds it, for the non-root image test.
# Debian's chromium must be installed for the status page test (.ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c "import dockerfile, yaml" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet -r tests/python/requirements.txt
fi

cargo build --release --locked
cargo test --locked --all-targets
