#!/bin/bash
# The editor thread's own time per key, from system calls: types 60 keys into `BIN host` in
# tmux, GAP seconds apart (default 0.05: each key finds the caches as a person's key does),
# under `perf trace`, and prints the medians of: wake (the poll that slept returns) -> crossterm's
# read, read -> the frame's write, wake -> the write's end.
# Needs tmux and perf (linux-perf). Usage: bench/keytrace.sh [BIN] [GAP]
set -euo pipefail
BIN=${1:-target/release/pairedit}
GAP=${2:-0.05}
S=pairedit-keytrace
OUT=$(mktemp)
FILE=$(mktemp --suffix=.txt)
tmux -L $S kill-server 2>/dev/null || true
tmux -L $S new-session -d -s s -x 120 -y 40 "exec $BIN host $FILE"
sleep 1.5
tmux -L $S send-keys -t s Escape
sleep 0.5
PID=$(tmux -L $S display -p -t s '#{pane_pid}')
TID=""
for t in $(ls /proc/$PID/task); do
  [ "$(cat /proc/$PID/task/$t/comm)" = pairedit-editor ] && TID=$t
done
[ -n "$TID" ] || { echo "no pairedit-editor thread in $PID" >&2; tmux -L $S kill-server; exit 1; }
timeout 8 perf trace -t "$TID" -o "$OUT" 2>/dev/null &
sleep 1
for _ in $(seq 1 60); do tmux -L $S send-keys -t s -l x; sleep "$GAP"; done
wait || true
tmux -L $S kill-server
python3 - "$OUT" <<'PY'
import re, statistics, sys
rows = []
for l in open(sys.argv[1]):
    m = re.match(r'\s*([\d.]+) \(\s*([\d.]+) ms\): (\w+)\(', l)
    if m:
        rows.append((float(m.group(1)), float(m.group(2)), m.group(3), l))
a, b, c = [], [], []
for i, (t, d, name, l) in enumerate(rows):
    if name == 'read' and 'count: 1024' in l and i >= 2 and i + 1 < len(rows) and rows[i + 1][2] == 'write':
        j = i - 1  # the poll the thread slept in
        while j >= 0 and not (rows[j][2] in ('epoll_wait', 'ppoll', 'poll') and rows[j][1] > 1.0):
            j -= 1
        if j < 0:
            continue
        wake = rows[j][0] + rows[j][1]
        a.append(rows[i - 1][0] - wake)
        b.append(rows[i + 1][0] - t)
        c.append(rows[i + 1][0] + rows[i + 1][1] - wake)
if not a:
    sys.exit("no keys found in the trace")
ms = lambda v: f"{statistics.median(v) * 1000:.0f} us"
print(f"keys {len(a)}: wake->crossterm {ms(a)}, read->write {ms(b)}, wake->written {ms(c)}")
PY
rm -f "$OUT" "$FILE"
