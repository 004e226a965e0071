#!/bin/sh
# curl_http.sh - the HTTP listener against a real client (curl): keep-alive
# reuse, Content-Length and chunked uploads, 413 with Expect: 100-continue,
# HTTP/1.0, then a SIGTERM drain. Skipped (77) when curl is not installed.
set -u
command -v curl >/dev/null 2>&1 || { echo "curl not installed: skipped"; exit 77; }
bin="$top_builddir/tests/ingest/http_echo"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" >"$tmp/port" 2>"$tmp/log" &
pid=$!
for i in 1 2 3 4 5 6 7 8 9 10; do [ -s "$tmp/port" ] && break; sleep 0.1; done
port=$(cat "$tmp/port")
base="http://127.0.0.1:$port"
pass=0 fail=0
check() { # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1: expected [$2] got [$3]"; fi
}
out=$(curl -s "$base/a" "$base/b" -w '%{num_connects}\n')
check keepalive "GET /a 0
1
GET /b 0
0" "$out"
out=$(curl -s -d 'hello=world' "$base/post")
check content-length "POST /post 11" "$out"
out=$(printf 'chunky-body' | curl -s -H 'Transfer-Encoding: chunked' --data-binary @- "$base/chunked")
check chunked "POST /chunked 11" "$out"
head -c 200000 /dev/zero >"$tmp/big"
out=$(curl -s -o /dev/null -w '%{http_code}' -H 'Expect: 100-continue' --data-binary @"$tmp/big" "$base/big")
check 413 "413" "$out"
out=$(curl -s -0 "$base/old" -D "$tmp/h10")
check http10 "GET /old 0" "$out"
grep -qi '^Connection: close' "$tmp/h10" && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL http10 close"; }
out=$(curl -s -o /dev/null -w '%{http_code}' -X BREW "$base/")
check unknown-method "400" "$out"
kill -TERM "$pid"
wait "$pid"; rc=$?
check drain-exit "0" "$rc"
echo "curl_http: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
