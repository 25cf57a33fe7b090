#!/usr/bin/env bash
# Slow clients against the daemon's API, on 127.0.0.1 only, bounded in count and time.
# Starts dr daemon on the simulator, then opens N connections (default 6000) that each send
# half a request and never finish it, re-opening each one the daemon closes, for S seconds
# (default 30). Meanwhile it asks /health once a second and reads the daemon's resident memory
# and how many connections it holds (its sockets in /proc). Prints the worst and last figures.
# Usage: benches/slow-clients.sh [connections] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
connections="${1:-6000}"
seconds="${2:-30}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet
dir="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e "s/^time_scale = 60/time_scale = 1/" \
    -e "s/^listen = \"127.0.0.1:8080\"/listen = \"127.0.0.1:$port\"/" config/example.toml > "$dir/dr.toml"
"$target/release/dr" --config "$dir/dr.toml" daemon > "$dir/daemon.log" 2>&1 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  sleep 0.1
done
before=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
python3 - "$port" "$connections" "$seconds" "$pid" "$before" <<'PY'
import os, selectors, socket, sys, time, urllib.request
port, count, seconds, pid, before = (int(a) for a in sys.argv[1:])
sel = selectors.DefaultSelector()
def open_one():
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_WRITE, "new")
    except OSError:
        s.close()
def held():
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
for _ in range(count):
    open_one()
start = time.time(); next_probe = start; probes = []; worst_rss = 0; worst_held = 0; reopened = 0
while time.time() - start < seconds:
    for key, _ in sel.select(timeout=0.05):
        s = key.fileobj
        if key.data == "new":
            try:
                s.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                sel.modify(s, selectors.EVENT_READ, "held")
            except OSError:
                sel.unregister(s); s.close(); open_one(); reopened += 1
        else:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(s); s.close(); open_one(); reopened += 1
    if time.time() >= next_probe:
        next_probe += 1
        t = time.time()
        try:
            ok = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200
        except Exception:
            ok = False
        probes.append((ok, time.time() - t))
        worst_rss = max(worst_rss, rss()); worst_held = max(worst_held, held())
answered = [d for ok, d in probes if ok]
answered.sort()
print(f"slow clients: {count} kept open for {seconds} s ({reopened} re-opened after the daemon closed them)")
print(f"daemon RSS: {before} KiB before, peak {worst_rss} KiB, last {rss()} KiB")
print(f"sockets held by the daemon: peak {worst_held}, last {held()}")
print(f"/health: {len(answered)}/{len(probes)} answered 200; median {1000*answered[len(answered)//2]:.0f} ms, max {1000*answered[-1]:.0f} ms" if answered else f"/health: 0/{len(probes)} answered")
PY
