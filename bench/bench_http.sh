#!/bin/sh
# bench_http.sh - POST [base]/Claim/$validate with wrk (Debian), 16
# connections, JSON and XML bodies: requests/s and p50/p99, printed.
set -eu
build=${top_builddir:-$(pwd)}
src=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
secs=${BENCH_SECONDS:-5}
command -v wrk >/dev/null || { echo "bench_http: wrk is not installed (apt-get install wrk)"; exit 0; }
tmp=$(mktemp -d)
pid=
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$build/spinegate" --listen-mllp off --listen-http "127.0.0.1:$port" --http-auth none \
    --data-dir "$tmp/data" \
    --log-level warn 2>"$tmp/log" & pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
# The daemon's CPU time (user + system) in clock ticks, from /proc.
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
echo "== POST /fhir/Claim/\$validate, wrk with 16 connections on 1 thread, ${secs}s each"
for fmt in json xml; do
    body="$src/tests/data/fhir/$fmt/spine-m4304-mri.$fmt"
    cat >"$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/fhir+$fmt"
local f = io.open("$body", "rb")
wrk.body = f:read("*a")
f:close()
LUA
    t0=$(cpu_ticks)
    out=$(wrk -t1 -c16 -d"${secs}s" --latency -s "$tmp/post.lua" "http://127.0.0.1:$port/fhir/Claim/\$validate")
    t1=$(cpu_ticks)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    cpu=$(awk "BEGIN{printf \"%.1f\", ${reqs:-0} ? ($t1 - $t0) * 1000000 / $hz / $reqs : 0}")
    target=
    [ "$fmt" = json ] && target="  ($(awk "BEGIN{printf \"%.2f\", ${rps:-0} / 30000}")x the issue 15 target of 30k)"
    echo "   $fmt ($(wc -c <"$body") bytes): ${rps} requests/s  p50 ${p50}  p99 ${p99}  non-2xx ${non2xx:-0}  daemon CPU ${cpu} us/request$target"
done
echo "   spinegate peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status) (issue 15 target < 30 MB)"
