#!/bin/sh
# bench_hl7.sh - HL7 v2 parser throughput against python3-hl7 on the same
# message and the same reads (bench/data/dft_p03.hl7: MSH EVN PID PV1, three
# FT1, four DG1). Run by `make bench` (which builds bench/bench_hl7 first).
# Prints figures and the C / Python ratio; never fails on a number.
# Targets from the brief: >= 300 MB/s, >= 50x python3-hl7.
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-.}
secs=${BENCH_SECONDS:-3}
data="$top_srcdir/bench/data/dft_p03.hl7"

echo "== bench_hl7: parse a DFT^P03 and read every DG1-3 and FT1-25 (one core)"
c_out=$("$top_builddir/bench/bench_hl7" "$data" "$secs") || { echo "bench_hl7 failed"; exit 0; }
echo "$c_out" | grep -v '^RESULT'
c_rate=$(echo "$c_out" | sed -n 's/^RESULT c_msgs_per_s=\([0-9]*\).*/\1/p')
# python3-hl7 is installed for the system interpreter only.
if /usr/bin/python3 -c 'import hl7' 2>/dev/null; then
    py_out=$(/usr/bin/python3 "$top_srcdir/bench/bench_hl7.py" "$data" "$secs")
    echo "$py_out" | grep -v '^RESULT'
    py_rate=$(echo "$py_out" | sed -n 's/^RESULT py_msgs_per_s=\([0-9]*\).*/\1/p')
    if [ -n "$c_rate" ] && [ -n "$py_rate" ] && [ "$py_rate" -gt 0 ]; then
        awk -v c="$c_rate" -v p="$py_rate" 'BEGIN { printf "ratio C / python3-hl7: %.0fx\n", c / p }'
    fi
else
    echo "python3-hl7 not installed for /usr/bin/python3 (Debian package python3-hl7): no ratio"
fi
exit 0
