#!/bin/sh
# bench-fhir.sh - FHIR JSON/XML Claim -> claim model throughput (bench_fhir).
# Run by `make bench`; BENCH_SECONDS (default 1) per case.
set -eu
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-.}
echo "== FHIR reader: parse + map every Claim + free (one core)"
"$top_builddir/bench/bench_fhir" "$top_srcdir/tests/data/fhir" "${BENCH_SECONDS:-1}"
