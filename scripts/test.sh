#!/usr/bin/env bash
# Runs every test of dr: unit, property, engine, crash-and-resume, drill and process tests.
# Installs nothing by hand: everything the tests need comes from Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --all-targets
