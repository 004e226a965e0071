#!/bin/sh
# bench_daemon.sh - messages/s and p50/p99 latency through the whole daemon
# (parse, rules, durable queue with group commit, ACK) to a real downstream
# MLLP sink, with 1 and 16 connections; then the same load against
# python3-hl7's asyncio MLLP server doing parse + ACK, and the ratio.
# Prints figures; never fails on them.
set -eu
build=${top_builddir:-$(pwd)}
src=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
secs=${BENCH_SECONDS:-5}
msg="$src/bench/data/dft_p03.hl7"
[ -f "$msg" ] || msg="$src/tests/data/demo/02-annotate-drg-info.hl7"
load="$build/bench/mllp_load"
tmp=$(mktemp -d)
cleanup() { kill $sink_pid $sg_pid $py_pid 2>/dev/null || true; rm -rf "$tmp"; }
sink_pid= sg_pid= py_pid=
trap cleanup EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

sink_port=$(port); py_port=$(port)
"$load" sink "$sink_port" & sink_pid=$!
wait_port "$sink_port"

# One daemon run per durability policy: full fsyncs every group commit
# (survives power loss), normal leaves the WAL to the OS (survives kill -9).
run_daemon() { # run_daemon SYNC
    sg_port=$(port)
    rm -rf "$tmp/data"
    "$build/spinegate" --listen-mllp "127.0.0.1:$sg_port" --downstream-mllp "127.0.0.1:$sink_port" \
        --data-dir "$tmp/data" --log-level warn --queue-sync "$1" 2>"$tmp/sg.log" & sg_pid=$!
    wait_port "$sg_port"
    echo "== spinegate, queue-sync=$1: parse + rules + durable queue (group commit) + ACK; downstream sink"
    r1=$("$load" send 127.0.0.1 "$sg_port" 1 "$secs" "$msg"); echo "   $r1"
    r16=$("$load" send 127.0.0.1 "$sg_port" 16 "$secs" "$msg"); echo "   $r16"
    echo "   spinegate peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$sg_pid/status)"
    kill -TERM $sg_pid; wait $sg_pid || true; sg_pid=
}
echo "   message: $(basename "$msg"), $(wc -c <"$msg") bytes; ${secs}s per run; machine: $(nproc) cores"
run_daemon normal
sg1n=$r1; sg16n=$r16
run_daemon full
sg1=$r1; sg16=$r16

/usr/bin/python3 "$src/bench/pyhl7_server.py" "$py_port" & py_pid=$!
wait_port "$py_port"
echo "== python3-hl7 asyncio MLLP server: parse + ACK only (no rules, no storage)"
py1=$("$load" send 127.0.0.1 "$py_port" 1 "$secs" "$msg"); echo "   $py1"
py16=$("$load" send 127.0.0.1 "$py_port" 16 "$secs" "$msg"); echo "   $py16"
echo "   python3-hl7 peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$py_pid/status)"

rate() { echo "$1" | sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p'; }
echo "== ratio spinegate (queue-sync=normal) / python3-hl7: 1 conn $(awk "BEGIN{printf \"%.1fx\", $(rate "$sg1n")/$(rate "$py1")}"), 16 conns $(awk "BEGIN{printf \"%.1fx\", $(rate "$sg16n")/$(rate "$py16")}")"
echo "== ratio spinegate (queue-sync=full) / python3-hl7: 1 conn $(awk "BEGIN{printf \"%.1fx\", $(rate "$sg1")/$(rate "$py1")}"), 16 conns $(awk "BEGIN{printf \"%.1fx\", $(rate "$sg16")/$(rate "$py16")}")"
