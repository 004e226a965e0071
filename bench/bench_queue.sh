#!/bin/sh
# bench_queue.sh - queue put throughput and commit latency (sync=full and
# normal), and delivery throughput to a local MLLP sink. Prints figures only.
set -eu
dir=$(mktemp -d "${TMPDIR:-/tmp}/bench_queue.XXXXXX")
trap 'rm -rf "$dir"' EXIT
"$top_builddir/bench/bench_queue" "$dir"
