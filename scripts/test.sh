#!/usr/bin/env bash
# Runs every test of dr: unit, property, engine, crash-and-resume, drill, daemon, API, browser,
# deployment and runbook tests. Sets up what they need first:
# - .venv: the pinned Python tools (tests/python/requirements.txt): moto, the AWS emulator
#   the AWS provider tests start on loopback, and the parsers of the Dockerfile and manifests;
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

# (Re)made whenever the pinned requirements changed since it was last made.
if ! cmp -s tests/python/requirements.txt .venv/requirements.installed 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
  cp tests/python/requirements.txt .venv/requirements.installed
fi

cargo build --release --locked
# Benchmarks are not tests (cargo bench); clippy --all-targets in .ci/run still compiles them.
cargo test --locked --lib --bins --tests
