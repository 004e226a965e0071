#!/bin/sh
# check-conffile.sh SPINEGATE CONF - the package's /etc/spinegate/spinegate.conf
# must load as shipped (data in /var/lib/spinegate, MLLP on loopback), must
# still load with every commented "# key = value" line turned on (so that no
# comment shows a key or a value the daemon refuses), and must mention every
# key of `spinegate --help`, so that a new setting is not left out of it.
set -eu
spinegate=$1 conf=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$spinegate" --config "$conf" --check-config >"$tmp/shipped"
grep -qx 'data-dir = /var/lib/spinegate' "$tmp/shipped" ||
    { echo "$conf: data-dir is not /var/lib/spinegate" >&2; exit 1; }
grep -qx 'listen-mllp = 127.0.0.1:2575' "$tmp/shipped" ||
    { echo "$conf: listen-mllp is not loopback" >&2; exit 1; }
grep -qx 'listen-http = off' "$tmp/shipped" ||
    { echo "$conf: listen-http is on" >&2; exit 1; }

sed 's/^# \([a-z0-9-]* =\)/\1/' "$conf" >"$tmp/uncommented.conf"
"$spinegate" --config "$tmp/uncommented.conf" --check-config >/dev/null ||
    { echo "$conf: a commented setting does not load (above)" >&2; exit 1; }

missing=""
for key in $("$spinegate" --help | sed -n 's/^  --\([a-z0-9-]*\).*/\1/p'); do
    case $key in config | check-config | help) continue ;; esac
    grep -q "^#* *$key =" "$conf" || missing="$missing $key"
done
if [ -n "$missing" ]; then
    echo "$conf: settings not mentioned:$missing" >&2
    exit 1
fi
echo "check-conffile: $conf loads as shipped and uncommented; every setting is in it"
