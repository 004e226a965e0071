#!/bin/sh
# pg_run.sh PROGRAM - runs tests/unit/outbound/PROGRAM (unit tests that need
# PostgreSQL) against a throwaway PostgreSQL 15 server of its own
# (pgserver.py: Debian's initdb and pg_ctl in a temp folder, a free loopback
# port), stopped and removed at the end whatever the outcome.
set -eu
: "${top_srcdir:=.}" "${top_builddir:=.}"
py=${PYTHON3:-/usr/bin/python3}
SG_PGSERVER_DIR=$top_srcdir/tests/integration
base=$(mktemp -d /tmp/sg-pgunit.XXXXXX)
chmod 0755 "$base" # the server runs as postgres when we are root
SG_PG_DIR=$base/pg
trap '"$py" "$SG_PGSERVER_DIR/pgserver.py" stop "$SG_PG_DIR" || true; rm -rf "$base"' EXIT
SG_PG_URL=$("$py" "$SG_PGSERVER_DIR/pgserver.py" start "$SG_PG_DIR")
export SG_PG_URL SG_PG_DIR SG_PGSERVER_DIR PYTHON3="$py"
"$top_builddir/tests/unit/outbound/$1"
