#!/bin/sh
# bench_check.sh - spinegate-check over a 100,000-message HL7 batch file
# (FHS/BHS ... BTS/FTS around a realistic mix: no spine codes, clean spine
# claims, and each kind of finding), messages/s and peak RSS, printed.
set -eu
build=${top_builddir:-$(pwd)}
src=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
n=${BENCH_MESSAGES:-100000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$src" "$n" "$tmp/batch.hl7" <<'PY'
import glob, os, sys
src, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
demo = sorted(glob.glob(os.path.join(src, "tests/data/demo/0[1-6]*.hl7")))
bench = os.path.join(src, "bench/data/dft_p03.hl7")
msgs = [open(p, "rb").read().rstrip(b"\r\n") + b"\r" for p in demo + ([bench] if os.path.exists(bench) else [])]
with open(out, "wb") as f:
    f.write(b"FHS|^~\\&|BENCH\rBHS|^~\\&|BENCH\r")
    for i in range(n):
        m = msgs[i % len(msgs)]
        # a distinct control id per message, as a real batch has
        f.write(m.replace(b"|P|2.5", b"-%d|P|2.5" % i, 1))
    f.write(b"BTS|%d\rFTS|1\r" % n)
PY
size=$(wc -c <"$tmp/batch.hl7")
echo "== spinegate-check over a batch of $n HL7 messages ($((size / 1048576)) MiB), --json to /dev/null"
/usr/bin/python3 - "$build/spinegate-check" "$tmp/batch.hl7" "$n" "$size" <<'PY'
import resource, subprocess, sys, time
tool, path, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0 = time.monotonic()
r = subprocess.run([tool, "--json", "--no-progress", path], stdout=subprocess.DEVNULL)
secs = time.monotonic() - t0
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("   exit %d  %.2f s  %.0f messages/s  %.1f MB/s  peak RSS %d kB" % (r.returncode, secs, n / secs, size / secs / 1e6, rss))
PY
