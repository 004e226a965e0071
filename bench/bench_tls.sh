#!/bin/sh
# bench_tls.sh - what TLS costs: messages/s through the whole daemon over
# MLLP in clear and over TLS (mllp_load with MLLP_LOAD_TLS_CA), and
# POST $validate over HTTP and HTTPS (wrk), 16 connections each, with the
# TLS/plaintext ratio. Certificates are made here with openssl (EC P-256).
# Prints figures; never fails on them.
set -eu
build=${top_builddir:-$(pwd)}
src=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
secs=${BENCH_SECONDS:-5}
msg="$src/bench/data/dft_p03.hl7"
[ -f "$msg" ] || msg="$src/tests/data/demo/02-annotate-drg-info.hl7"
load="$build/bench/mllp_load"
tmp=$(mktemp -d)
sink_pid= sg_pid=
cleanup() { kill $sink_pid $sg_pid 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout "$tmp/ca.key" -out "$tmp/ca.pem" -days 2 -subj "/CN=bench CA" 2>/dev/null
openssl req $ec -keyout "$tmp/gate.key" -out "$tmp/gate.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$tmp/gate.ext"
openssl x509 -req -in "$tmp/gate.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -set_serial 1 \
    -days 2 -extfile "$tmp/gate.ext" -out "$tmp/gate.pem" 2>/dev/null
tls="--mllp-tls-cert $tmp/gate.pem --mllp-tls-key $tmp/gate.key"
tls="$tls --http-tls-cert $tmp/gate.pem --http-tls-key $tmp/gate.key"

sink_port=$(port)
"$load" sink "$sink_port" & sink_pid=$!
wait_port "$sink_port"

start_daemon() { # start_daemon EXTRA-ARGS
    sg_port=$(port) http_port=$(port)
    rm -rf "$tmp/data"
    # shellcheck disable=SC2086
    "$build/spinegate" --listen-mllp "127.0.0.1:$sg_port" --listen-http "127.0.0.1:$http_port" \
        --downstream-mllp "127.0.0.1:$sink_port" --data-dir "$tmp/data" --log-level error \
        --queue-sync normal --http-auth none $1 2>"$tmp/sg.log" & sg_pid=$!
    wait_port "$sg_port"
}
stop_daemon() { kill -TERM $sg_pid; wait $sg_pid || true; sg_pid=; }

validate() { # validate URL: requests/s of POST $validate, 16 connections
    command -v wrk >/dev/null || { echo 0; return; }
    body="$src/tests/data/fhir/json/spine-m4304-mri.json"
    cat >"$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/fhir+json"
local f = io.open("$body", "rb")
wrk.body = f:read("*a")
f:close()
LUA
    # A run with non-2xx answers measured errors, not $validate: say so.
    wrk -t1 -c16 -d"${secs}s" -s "$tmp/post.lua" "$1/fhir/Claim/\$validate" |
        awk '/Non-2xx/ {bad = $NF} /Requests\/sec/ {rps = $2}
             END {if (bad) printf "%.0f (%s non-2xx!)", rps, bad; else printf "%.0f", rps}'
}

rate() { echo "$1" | sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p'; }
echo "== TLS cost: queue-sync=normal, ${secs}s per run, $(nproc) cores; TLS 1.3, P-256 certificate"
start_daemon ""
plain1=$("$load" send 127.0.0.1 "$sg_port" 1 "$secs" "$msg")
plain16=$("$load" send 127.0.0.1 "$sg_port" 16 "$secs" "$msg")
http16=$(validate "http://127.0.0.1:$http_port")
stop_daemon
start_daemon "$tls"
tls1=$(MLLP_LOAD_TLS_CA="$tmp/ca.pem" "$load" send 127.0.0.1 "$sg_port" 1 "$secs" "$msg")
tls16=$(MLLP_LOAD_TLS_CA="$tmp/ca.pem" "$load" send 127.0.0.1 "$sg_port" 16 "$secs" "$msg")
https16=$(validate "https://127.0.0.1:$http_port")
echo "   spinegate (TLS) peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$sg_pid/status)"
stop_daemon
echo "   MLLP plaintext: $plain1"
echo "   MLLP plaintext: $plain16"
echo "   MLLP over TLS:  $tls1"
echo "   MLLP over TLS:  $tls16"
echo "   \$validate 16 conns: HTTP ${http16} requests/s, HTTPS ${https16} requests/s"
ratio() { awk "BEGIN{ if ($2 > 0) printf \"%.0f%%\", 100 * $1 / $2; else print \"n/a\" }"; }
echo "== TLS / plaintext: MLLP 1 conn $(ratio "$(rate "$tls1")" "$(rate "$plain1")"), MLLP 16 conns $(ratio "$(rate "$tls16")" "$(rate "$plain16")"), \$validate 16 conns $(ratio "${https16%% *}" "${http16%% *}") (goal: at least 70% at 16)"
