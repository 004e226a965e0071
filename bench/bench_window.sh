#!/bin/sh
# bench_window.sh - downstream pipelining (downstream-window): how fast one
# MLLP destination drains a backlog with 1 and with 8 messages in flight.
# The daemon (queue-sync=normal) stores a backlog while its downstream is
# down (mllp_load sending on BENCH_CONNS connections for BENCH_FILL_SECONDS);
# then the C sink of bench_daemon.sh (mllp_load sink) comes up and the time
# from the first delivery until the queue is empty is taken from /metrics.
# Prints msgs/s per window and the ratio; never fails on them.
set -eu
build=${top_builddir:-$(pwd)}
src=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
fill=${BENCH_FILL_SECONDS:-3}
conns=${BENCH_CONNS:-8}
windows=${BENCH_WINDOWS:-1 8}
msg="$src/bench/data/dft_p03.hl7"
load="$build/bench/mllp_load"
tmp=$(mktemp -d)
pids=
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Polls the hl7 queue depth until it first drops (the sink is up and taken)
# and then until it is 0; prints "messages seconds".
drain='
import re, sys, time, urllib.request
url = "http://127.0.0.1:%s/metrics" % sys.argv[1]
def depth():
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    m = re.search(r"spinegate_queue_depth\{destination=\"hl7\"\} (\d+)", body)
    return int(m.group(1)) if m else 0
d0 = depth()
while True:
    d = depth()
    if d < d0:
        break
    time.sleep(0.002)
t0, n0 = time.monotonic(), d
while d > 0:
    time.sleep(0.005)
    d = depth()
print(n0, "%.3f" % (time.monotonic() - t0))
'

echo "message: $(basename "$msg"), $(wc -c <"$msg") bytes; backlog from ${fill}s at $conns connections; $(nproc) cores"
printf '%-24s %9s %9s %10s %12s\n' "downstream-window" messages seconds msgs/s cpu_us/msg
for w in $windows; do
    sg_port=$(port); http_port=$(port); sink_port=$(port)
    rm -rf "$tmp/data"
    "$build/spinegate" --listen-mllp "127.0.0.1:$sg_port" --listen-http "127.0.0.1:$http_port" \
        --http-auth none --downstream-mllp "127.0.0.1:$sink_port" --downstream-window "$w" \
        --retry-base 10ms --retry-max-delay 20ms --data-dir "$tmp/data" --log-level error \
        --queue-sync normal 2>"$tmp/sg.log" & sg_pid=$!
    pids="$pids $sg_pid"
    wait_port "$sg_port"
    "$load" send 127.0.0.1 "$sg_port" "$conns" "$fill" "$msg" >/dev/null || true
    /usr/bin/python3 -c "$drain" "$http_port" >"$tmp/drain" & drain_pid=$!
    sleep 0.2
    t0=$(cpu_ticks "$sg_pid")
    "$load" sink "$sink_port" & sink_pid=$!; pids="$pids $sink_pid"
    wait "$drain_pid" || true
    t1=$(cpu_ticks "$sg_pid")
    read -r n secs <"$tmp/drain" || { n=0; secs=0; }
    rate=$(awk "BEGIN{ if ($secs > 0) printf \"%.0f\", $n / $secs; else print \"-\" }")
    cpu=$(awk "BEGIN{ if ($n > 0) printf \"%.1f\", ($t1 - $t0) * 1e6 / $tck / $n; else print \"-\" }")
    eval "rate_$w=$rate"
    printf '%-24s %9s %9s %10s %12s\n' "$w" "$n" "$secs" "$rate" "$cpu"
    kill -TERM "$sg_pid"; wait "$sg_pid" || true
    kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true
done
set -- $windows
if [ $# -ge 2 ]; then
    eval "a=\${rate_$1:--} b=\${rate_$2:--}"
    echo "== window $2 / window $1, drain msgs/s: $(awk "BEGIN{ if (\"$a\" != \"-\" && \"$b\" != \"-\" && $a > 0) printf \"%.2f\", $b / $a; else print \"-\" }")x"
fi
