#!/bin/sh
# bench_pg.sh - the durable path on each queue backend, in one run on one
# machine, with one load client (mllp_load, one message in flight per
# connection) and one message (bench/data/dft_p03.hl7):
#   sqlite-full   queue = sqlite, queue-sync = full (fsync every group commit)
#   pg-single     queue = postgres, one PostgreSQL 15 server on loopback
#                 (fsync on, synchronous_commit on)
#   pg-sync       queue = postgres, a primary and a synchronous standby on
#                 loopback (synchronous_standby_names: each commit waits for
#                 the standby to flush it)
# The servers are throwaway (tests/integration/pgcluster.py: initdb,
# pg_basebackup -R, as the postgres user in a temp folder). Each daemon
# delivers to a downstream mllp_load sink. For 1 and BENCH_PG_CONNS (16)
# connections: messages/s, p50 and p99 (acknowledged, i.e. stored); then
# pg-sync / sqlite-full at 16 connections (issue 14's target: within 2x);
# then, for each, the backlog the 16-connection run left and the rate at
# which the deliverer emptied it into the sink (read from /healthz), and the
# rate at which messages were both stored and delivered (the run's messages
# over the run plus the time to empty that backlog: what a steady feed at
# that load would sustain, since delivery shares the machine). Prints
# figures; never fails on them. Skips with the reason when PostgreSQL 15's binaries are missing.
set -eu
build=${top_builddir:-$(pwd)}
src=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
secs=${BENCH_SECONDS:-5}
conns=${BENCH_PG_CONNS:-16}
msg="$src/bench/data/dft_p03.hl7"
load="$build/bench/mllp_load"
cluster="$src/tests/integration/pgcluster.py"
pgbin=${SG_PG_BIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$pgbin/initdb" ]; then
    echo "bench_pg: skipped: no PostgreSQL 15 in $pgbin (Debian package postgresql-15)"
    exit 0
fi
tmp=$(mktemp -d)
chmod 755 "$tmp"
pids=
clusters=
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for c in $clusters; do /usr/bin/python3 "$cluster" stop "$c" >/dev/null 2>&1 || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
field() { echo "$1" | sed -n "s/.*$2=\([0-9.]*\).*/\1/p"; }

# run NAME KEY PORT N: one load run; sets rate_KEY_N, p50_KEY_N, p99_KEY_N.
run() {
    r=$("$load" send 127.0.0.1 "$3" "$4" "$secs" "$msg") || true
    n=$(field "$r" messages)
    eval "sent_$2_$4=${n:--}"
    rate=$(field "$r" msgs_per_s)
    p50=$(field "$r" p50_ms)
    p99=$(field "$r" p99_ms)
    eval "rate_$2_$4=${rate:--} p50_$2_$4=${p50:--} p99_$2_$4=${p99:--}"
    printf '%-40s %5s %10s %9s %9s   errors=%s\n' "$1" "$4" "${rate:--}" "${p50:--}" \
        "${p99:--}" "$(field "$r" errors)"
}

# depth HTTP_PORT: the daemon's queue depth (its /healthz), or nothing.
depth() {
    curl -s --max-time 2 "http://127.0.0.1:$1/healthz" |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["queue"]["depth"])' 2>/dev/null
}

# drain KEY HTTP_PORT: after a load, how long the deliverer takes to empty
# the queue into the sink; sets backlog_KEY, drain_KEY (msgs/s) and
# drain_s_KEY (seconds).
drain() {
    b=$(depth "$2"); b=${b:-0}
    t0=$(date +%s.%N)
    for _ in $(seq 1200); do
        d=$(depth "$2")
        [ "${d:-1}" -gt 0 ] || break
        sleep 0.1
    done
    t1=$(date +%s.%N)
    eval "drain_s_$1=$(awk "BEGIN{ printf \"%.2f\", $t1 - $t0 }")"
    eval "backlog_$1=$b drain_$1=$(awk "BEGIN{ d = $t1 - $t0; if ($b > 0 && d > 0) printf \"%.0f\", $b / d; else print \"-\" }")"
}

# daemon NAME KEY ARGS...: one daemon on its own data dir, both loads, stop.
daemon() {
    name=$1 key=$2
    shift 2
    sg_port=$(port)
    http_port=$(port)
    rm -rf "$tmp/data"
    "$build/spinegate" --listen-mllp "127.0.0.1:$sg_port" --downstream-mllp "127.0.0.1:$sink_port" \
        --listen-http "127.0.0.1:$http_port" --http-auth none \
        --data-dir "$tmp/data" --log-level warn "$@" 2>"$tmp/sg-$key.log" & sg_pid=$!
    pids="$pids $sg_pid"
    if ! wait_port "$sg_port"; then
        echo "$name: the daemon did not start: $(tail -n 3 "$tmp/sg-$key.log")"
        return 0
    fi
    run "$name" "$key" "$sg_port" 1
    drain "$key" "$http_port"
    run "$name" "$key" "$sg_port" "$conns"
    drain "$key" "$http_port"
    kill -TERM "$sg_pid"; wait "$sg_pid" || true
    # A figure for PostgreSQL must come from PostgreSQL.
    case "$*" in *"--queue postgres"*)
        [ ! -e "$tmp/data/queue.db" ] || echo "   ($name: the daemon made a SQLite queue.db: not a PostgreSQL figure)";;
    esac
}

# pg NAME KEY [--standby]: a fresh cluster for one daemon, stopped after it.
pg() {
    name=$1 key=$2
    shift 2
    state="$tmp/$key"
    mkdir -p "$state"
    chmod 755 "$state"
    clusters="$clusters $state"
    if ! url=$(/usr/bin/python3 "$cluster" start "$state" "$@" 2>"$tmp/pg-$key.log"); then
        echo "$name: PostgreSQL did not start: $(tail -n 3 "$tmp/pg-$key.log")"
        return 0
    fi
    daemon "$name" "$key" --queue postgres --queue-url "$url"
    /usr/bin/python3 "$cluster" stop "$state" >/dev/null 2>&1 || true
}

echo "message: $(basename "$msg"), $(wc -c <"$msg") bytes; ${secs}s per run; $(nproc) cores; $(uname -m);" \
    "PostgreSQL $("$pgbin/postgres" --version | sed 's/^[^0-9]*\([0-9.]*\).*/\1/') on loopback"
printf '%-40s %5s %10s %9s %9s\n' queue conns msgs/s p50_ms p99_ms

sink_port=$(port)
"$load" sink "$sink_port" & sink_pid=$!; pids="$pids $sink_pid"
wait_port "$sink_port"

daemon "sqlite, queue-sync=full" sqlite --queue sqlite --queue-sync full
pg "postgres, one server" pgone
pg "postgres, primary + sync standby" pgsync --standby

v() { eval "echo \${$1:--}"; }
ratio() { awk "BEGIN{ if (\"$1\" != \"-\" && \"$2\" != \"-\" && $2 + 0 > 0) printf \"%.2f\", $1 / $2; else print \"-\" }"; }
c=$conns
echo "== ratios (same run)"
echo "   msgs/s, postgres one server / sqlite full: 1 conn $(ratio "$(v rate_pgone_1)" "$(v rate_sqlite_1)")x, $c conns $(ratio "$(v rate_pgone_$c)" "$(v rate_sqlite_$c)")x"
echo "   msgs/s, postgres + sync standby / sqlite full: 1 conn $(ratio "$(v rate_pgsync_1)" "$(v rate_sqlite_1)")x, $c conns $(ratio "$(v rate_pgsync_$c)" "$(v rate_sqlite_$c)")x (issue 14 target >= 0.5)"
echo "   p99 at $c conns, postgres + sync standby / sqlite full: $(ratio "$(v p99_pgsync_$c)" "$(v p99_sqlite_$c)")x"
echo "== delivery: the backlog left by the $c-connection run, and how fast the deliverer forwarded it"
for k in sqlite pgone pgsync; do
    n=$(v sent_${k}_$c) t=$(v drain_s_$k)
    both=$(awk "BEGIN{ if (\"$n\" != \"-\" && \"$t\" != \"-\") printf \"%.0f\", $n / ($secs + $t); else print \"-\" }")
    printf '   %-8s backlog %8s messages, delivered at %8s msgs/s; stored and delivered %8s msgs/s\n' \
        "$k" "$(v backlog_$k)" "$(v drain_$k)" "$both"
done
