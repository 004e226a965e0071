#!/bin/sh
# bench_daemon.sh - the durable path beside its peers, in one run on one
# machine, with one load client (mllp_load, one message in flight per
# connection) and one message (bench/data/dft_p03.hl7):
#   floor      mllp_load sink: a raw C MLLP server answering each frame
#              (no parse, no storage);
#   spinegate  parse, rules, durable queue (group commit), ACK after the
#              commit, delivery to a downstream mllp_load sink and its mark,
#              with queue-sync=normal and queue-sync=full, and
#              downstream-window BENCH_WINDOW (16: the sink answers frames in
#              order as they come, as a receiver that allows pipelining does);
#   python3-hl7 asyncio MLLP server, parse + ACK, nothing stored;
#   simple-hl7 3 on Node, parse + ACK, nothing stored (installed with npm
#              into a scratch folder; skipped with the reason when it cannot be).
# For each, 1 and BENCH_CONNS (8) connections: messages/s, p99, the server's
# CPU per message (utime+stime from /proc/PID/stat over the run, all its
# threads, up to the end of the delivery of what the run left queued; the
# downstream sink is another process, not counted), split into user and
# system time (the system part is mostly loopback TCP, which the floor
# pays too), and peak RSS (VmHWM). For spinegate also the messages per
# group commit, from its /metrics (spinegate_queue_commits_total), and from
# those the CPU one commit adds with queue-sync=full: the synchronized
# write of the log and the wait for the device, which a bigger group
# spreads over more messages.
# Then the ratios. Prints figures; never fails on them.
set -eu
build=${top_builddir:-$(pwd)}
src=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
secs=${BENCH_SECONDS:-5}
conns=${BENCH_CONNS:-8}
window=${BENCH_WINDOW:-16}
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
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
field() { echo "$1" | sed -n "s/.*$2=\([0-9.]*\).*/\1/p"; }

# quiet PID: waits until PID's CPU time stands still for 0.5 s (at most
# 60 s): the backlog a run leaves (one downstream connection takes the
# messages of eight) is delivered and marked, and its CPU counted.
quiet() {
    prev=-1 cur=$(cpu_ticks "$1") waited=0
    while [ "$cur" != "$prev" ] && [ "$waited" -lt 120 ]; do
        sleep 0.5
        prev=$cur cur=$(cpu_ticks "$1") waited=$((waited + 1))
    done
    drain=$(awk "BEGIN{printf \"%.1f\", ($waited - 1) / 2}")
}

# per_msg TICKS N: TICKS of CPU time in microseconds a message ("-" for none).
per_msg() { awk "BEGIN{ if ($2 > 0) printf \"%.1f\", $1 * 1e6 / $tck / $2; else print \"-\" }"; }

# commits: the daemon's group commits so far ("" when there is no /metrics
# to ask: the peers, or no curl).
metrics_port=
commits() {
    [ -n "$metrics_port" ] && command -v curl >/dev/null || return 0
    curl -sf "http://127.0.0.1:$metrics_port/metrics" | awk '$1 == "spinegate_queue_commits_total" {print $2}'
}

# run NAME KEY PID PORT N: one load run; sets rate_KEY_N, p99_KEY_N,
# cpu_KEY_N, usr_KEY_N, sys_KEY_N and, for spinegate, batch_KEY_N (messages
# per group commit).
run() {
    c0=$(commits) t0=$(cpu_ticks "$3") u0=$(user_ticks "$3")
    r=$("$load" send 127.0.0.1 "$4" "$5" "$secs" "$msg") || true
    quiet "$3"
    t1=$(cpu_ticks "$3") u1=$(user_ticks "$3") c1=$(commits)
    n=$(field "$r" messages)
    rate=$(field "$r" msgs_per_s)
    p99=$(field "$r" p99_ms)
    cpu=$(per_msg $((t1 - t0)) "$n")
    usr=$(per_msg $((u1 - u0)) "$n")
    sys=$(per_msg $((t1 - t0 - (u1 - u0))) "$n")
    batch=
    if [ -n "$c0" ] && [ -n "$c1" ] && [ "$c1" -gt "$c0" ]; then
        batch=$(awk "BEGIN{printf \"%.1f\", $n / ($c1 - $c0)}")
    fi
    eval "rate_$2_$5=$rate p99_$2_$5=$p99 cpu_$2_$5=$cpu usr_$2_$5=$usr sys_$2_$5=$sys batch_$2_$5=$batch"
    printf '%-34s %5s %10s %9s %14s %13s   errors=%s drained_after=%ss%s\n' "$1" "$5" "$rate" "$p99" \
        "$cpu" "$usr/$sys" "$(field "$r" errors)" "$drain" "${batch:+ msgs/commit=$batch}"
}
rss() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

echo "message: $(basename "$msg"), $(wc -c <"$msg") bytes; ${secs}s per run; $(nproc) cores; $(uname -m); spinegate downstream-window $window"
printf '%-34s %5s %10s %9s %14s %13s\n' server conns msgs/s p99_ms cpu_us/msg user/sys

# The floor: a raw C MLLP answerer.
fport=$(port)
"$load" sink "$fport" & fpid=$!; pids="$pids $fpid"
wait_port "$fport"
run "floor (raw C, mllp_load)" floor "$fpid" "$fport" 1
run "floor (raw C, mllp_load)" floor "$fpid" "$fport" "$conns"
rss_floor=$(rss "$fpid")

sink_port=$(port)
"$load" sink "$sink_port" & sink_pid=$!; pids="$pids $sink_pid"
wait_port "$sink_port"
# One daemon per durability policy: full fsyncs every group commit
# (survives power loss), normal leaves the WAL to the OS (survives kill -9).
for sync in normal full; do
    sg_port=$(port) metrics_port=$(port)
    rm -rf "$tmp/data"
    "$build/spinegate" --listen-mllp "127.0.0.1:$sg_port" --downstream-mllp "127.0.0.1:$sink_port" \
        --listen-http "127.0.0.1:$metrics_port" --http-auth none \
        --downstream-window "$window" --data-dir "$tmp/data" --log-level warn --queue-sync "$sync" \
        2>"$tmp/sg.log" & sg_pid=$!
    pids="$pids $sg_pid"
    wait_port "$sg_port"
    run "spinegate sync=$sync" "$sync" "$sg_pid" "$sg_port" 1
    run "spinegate sync=$sync" "$sync" "$sg_pid" "$sg_port" "$conns"
    eval "rss_$sync=$(rss "$sg_pid")"
    kill -TERM "$sg_pid"; wait "$sg_pid" || true
done
metrics_port=

py_port=$(port)
/usr/bin/python3 "$src/bench/pyhl7_server.py" "$py_port" & py_pid=$!; pids="$pids $py_pid"
wait_port "$py_port"
run "python3-hl7 asyncio" py "$py_pid" "$py_port" 1
run "python3-hl7 asyncio" py "$py_pid" "$py_port" "$conns"
rss_py=$(rss "$py_pid")

# simple-hl7 from npm into a scratch folder: a peer, not a dependency.
node_skip=
rss_js=
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    node_skip="node or npm is not installed"
elif ! (cd "$tmp" && timeout 180 npm install --no-audit --no-fund --silent simple-hl7@3 >"$tmp/npm.log" 2>&1); then
    node_skip="npm install simple-hl7@3 failed: $(tail -n 1 "$tmp/npm.log")"
fi
if [ -z "$node_skip" ]; then
    js_port=$(port)
    NODE_PATH="$tmp/node_modules" node "$src/bench/simplehl7_server.js" "$js_port" & js_pid=$!
    pids="$pids $js_pid"
    wait_port "$js_port"
    ver=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$tmp/node_modules/simple-hl7/package.json")
    run "simple-hl7 $ver, node $(node --version)" js "$js_pid" "$js_port" 1
    run "simple-hl7 $ver, node $(node --version)" js "$js_pid" "$js_port" "$conns"
    rss_js=$(rss "$js_pid")
else
    echo "simple-hl7: skipped: $node_skip"
fi

echo "peak RSS (kB): floor $rss_floor, spinegate normal $rss_normal, full $rss_full, python3-hl7 $rss_py${rss_js:+, simple-hl7 $rss_js}"
v() { eval "echo \${$1:--}"; }
ratio() { awk "BEGIN{ if (\"$1\" != \"-\" && $2 + 0 > 0) printf \"%.2f\", $1 / $2; else print \"-\" }"; }
c=$conns
echo "== ratios (same run)"
echo "   spinegate normal / floor, msgs/s at $c conns: $(ratio "$(v rate_normal_$c)" "$(v rate_floor_$c)") (issue 15 target >= 0.25)"
echo "   spinegate CPU us/msg at $c conns: normal $(v cpu_normal_$c), full $(v cpu_full_$c) (issue 15 target < 25); of the floor's CPU: normal $(ratio "$(v cpu_normal_$c)" "$(v cpu_floor_$c)")x, full $(ratio "$(v cpu_full_$c)" "$(v cpu_floor_$c)")x"
echo "   of which system time (us/msg) at $c conns: normal $(v sys_normal_$c), full $(v sys_full_$c); the floor $(v sys_floor_$c) for its one read and one write"
echo "   spinegate normal / python3-hl7, msgs/s: 1 conn $(ratio "$(v rate_normal_1)" "$(v rate_py_1)")x, $c conns $(ratio "$(v rate_normal_$c)" "$(v rate_py_$c)")x"
echo "   spinegate full / python3-hl7, msgs/s: 1 conn $(ratio "$(v rate_full_1)" "$(v rate_py_1)")x, $c conns $(ratio "$(v rate_full_$c)" "$(v rate_py_$c)")x"
if [ -z "$node_skip" ]; then
    echo "   spinegate full / simple-hl7, msgs/s: 1 conn $(ratio "$(v rate_full_1)" "$(v rate_js_1)")x (target >= 1), $c conns $(ratio "$(v rate_full_$c)" "$(v rate_js_$c)")x (target >= 4)"
    echo "   spinegate normal / simple-hl7, msgs/s: 1 conn $(ratio "$(v rate_normal_1)" "$(v rate_js_1)")x, $c conns $(ratio "$(v rate_normal_$c)" "$(v rate_js_$c)")x"
    echo "   CPU us/msg at $c conns: spinegate normal $(v cpu_normal_$c), full $(v cpu_full_$c), simple-hl7 $(v cpu_js_$c), python3-hl7 $(v cpu_py_$c), floor $(v cpu_floor_$c)"
fi
# What one group commit adds with full: the CPU per message above normal's,
# times full's messages per commit (both policies group alike).
commit_cpu() { awk "BEGIN{ if (\"$1\" != \"-\" && \"$2\" != \"-\" && \"$3\" != \"-\") printf \"%.0f\", ($1 - $2) * $3; else print \"-\" }"; }
echo "   messages per group commit: 1 conn normal $(v batch_normal_1), full $(v batch_full_1); $c conns normal $(v batch_normal_$c), full $(v batch_full_$c)"
echo "   CPU a synchronized commit adds (full over normal, us/commit): 1 conn $(commit_cpu "$(v cpu_full_1)" "$(v cpu_normal_1)" "$(v batch_full_1)"), $c conns $(commit_cpu "$(v cpu_full_$c)" "$(v cpu_normal_$c)" "$(v batch_full_$c)")"
# The same disk with nothing else running: one synchronized write of a
# group's messages plus up to a block, as the log writes them: whole 4 KiB
# blocks led by the partly filled one it rewrites (bench/sync_cost).
group_bytes=$(awk "BEGIN{ b = \"$(v batch_full_$c)\"; if (b == \"-\") b = $c; printf \"%d\", b * $(wc -c <"$msg") + 4095 }")
floor_sync=$("$build/bench/sync_cost" "$tmp" "$group_bytes" 2000 || true)
echo "   the disk alone (sync_cost, $(field "$floor_sync" bytes) bytes, $(echo "$floor_sync" | sed -n 's/.*way=//p')): $(field "$floor_sync" cpu_us) us CPU, $(field "$floor_sync" wall_us) us wall per synchronized write"
echo "   spinegate p99 at $c conns: full $(v p99_full_$c) ms (target < 2), normal $(v p99_normal_$c) ms; peak RSS normal $rss_normal kB, full $rss_full kB (target < 30720)"
