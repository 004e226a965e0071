#!/bin/sh
# demo.sh BUILD-DIR - runs spinegate on its embedded default (no downstream:
# delivered messages go to the outbox folder) with a fresh data folder,
# feeds it the demo messages with python3-hl7's MLLP client (mllp_send) and
# a FHIR Claim with curl, and shows the answers, the outbox and the rejects.
set -eu
build=${1:-build}
src=$(cd "$(dirname "$0")/.." && pwd)
data=$(pwd)/demo-data
rm -rf "$data"
mllp_port=${DEMO_MLLP_PORT:-2575}
http_port=${DEMO_HTTP_PORT:-8080}

# --http-auth none: the demo's HTTP listener is on loopback and needs no
# tokens (spinegate(8), AUTHENTICATION); anywhere else it would.
"$build/spinegate" --data-dir "$data" --listen-mllp "127.0.0.1:$mllp_port" \
    --listen-http "127.0.0.1:$http_port" --http-auth none 2>"$data.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    /usr/bin/python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$mllp_port),0.2)" 2>/dev/null && break
    sleep 0.1
done

echo "== spinegate is running (pid $pid), data folder $data"
echo "== sending the demo messages with python3-hl7's MLLP client"
/usr/bin/python3 "$src/tools/demo-send.py" "$mllp_port" "$src"/tests/data/demo/*.hl7

if [ -f "$src/tests/data/fhir/json/spine-m4304-mri.json" ]; then
    echo
    echo "== FHIR: POST /fhir/Claim (JSON) with curl  ->"
    curl -s -i -X POST -H 'Content-Type: application/fhir+json' \
        --data-binary @"$src/tests/data/fhir/json/spine-m4304-mri.json" \
        "http://127.0.0.1:$http_port/fhir/Claim" | sed 's/^/   /'
    echo
fi

sleep 1
echo
echo "== outbox (forwarded to billing; here the embedded default sink):"
ls -1 "$data/outbox" | sed 's/^/   /'
first=$(ls -1 "$data/outbox" | grep -i demo0003 | head -1 || true)
if [ -n "$first" ]; then
    echo "   -- $first, with its findings as ZSG segments:"
    tr '\r' '\n' <"$data/outbox/$first" | sed 's/^/      /'
fi
echo "== reject folder (not forwarded; kept with the findings):"
ls -1 "$data/reject" | sed 's/^/   /'
echo
echo "== the coders' worklist (spinegate-admin list; docs/worklist.md):"
"$build/spinegate-admin" --data-dir "$data" list | sed 's/^/   /'
item=$("$build/spinegate-admin" --data-dir "$data" list --rule seventh-character --json |
    head -1 | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' || true)
if [ -n "$item" ]; then
    echo "   -- spinegate-admin show $item: the message with its finding beside the segment"
    "$build/spinegate-admin" --data-dir "$data" show "$item" | sed 's/^/      /'
fi
echo
echo "== metrics (GET /metrics, excerpt):"
curl -s "http://127.0.0.1:$http_port/metrics" | grep -E '^spinegate_(messages_total|findings_total)' | grep -v ' 0$' | sed 's/^/   /' || true
kill -TERM $pid
wait $pid || true
trap - EXIT
echo
echo "== the daemon's log ($data.log): control ids, rule ids, counts; no patient data"
sed 's/^/   /' "$data.log" | tail -25
