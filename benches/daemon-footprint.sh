#!/usr/bin/env bash
# The daemon's own cost: dr daemon watching three regions on the simulator, in real time
# (time_scale = 1), at the 10 s poll interval, for 65 s of wall time by default.
# Reads the process's own counters from /proc just before stopping it:
# CPU time (utime + stime), peak resident memory (VmHWM) and current RSS.
# Usage: benches/daemon-footprint.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-65}"
cargo build --release --quiet
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
# The example config with its third region (eu-west-1) uncommented, in real time.
sed -e 's/^# ~ \{0,1\}//' -e 's/^time_scale = 60/time_scale = 1/' config/example.toml > "$dir/dr.toml"
target/release/dr --config "$dir/dr.toml" validate
target/release/dr --config "$dir/dr.toml" daemon > "$dir/daemon.log" 2>&1 &
pid=$!
sleep "$seconds"
ticks_per_second=$(getconf CLK_TCK)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$pid/stat")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
kill -TERM "$pid"
wait "$pid" || true
cpu=$(awk -v u="$utime" -v s="$stime" -v t="$ticks_per_second" 'BEGIN {printf "%.2f", (u + s) / t}')
share=$(awk -v c="$cpu" -v w="$seconds" 'BEGIN {printf "%.3f", 100 * c / w}')
echo "wall ${seconds} s, CPU ${cpu} s (${share}% of one core), peak RSS ${hwm} KiB, RSS at end ${rss} KiB"
echo "store writes: the daemon publishes its status to the store at every tick"
tail -n 2 "$dir/daemon.log"
