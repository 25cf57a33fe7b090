#!/usr/bin/env bash
# Runs every test of dr: unit, property, engine, crash-and-resume, drill, daemon, API, browser,
# deployment and runbook tests. Sets up what they need first:
# - .venv: the pinned Python tools that parse the Dockerfile and manifests
#   (tests/python/requirements.txt);
# - the release binary, built exactly as the Dockerfile builds it, for the non-root image test.
# - Debian's chromium, for the status page test in a real headless browser (installed with
#   apt-get when missing; that needs root, as on these machines and in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the status page test needs Debian's chromium: run 'apt-get install chromium' as root, or run this script as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium > /dev/null
fi

if ! .venv/bin/python -c "import dockerfile, yaml" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet -r tests/python/requirements.txt
fi

cargo build --release --locked
# Benchmarks are not tests (cargo bench); clippy --all-targets in .ci/run still compiles them.
cargo test --locked --lib --bins --tests
