"""bench_hl7.py - the same work as bench_hl7.c done by python3-hl7 (the
Debian package): hl7.parse() a message, then read the code component of
every DG1-3 and FT1-25. Run with /usr/bin/python3. Prints figures only; the
last line is machine-readable for bench_hl7.sh.
Usage: bench_hl7.py FILE [SECONDS]"""
import sys
import time

import hl7


def main():
    path = sys.argv[1]
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    text = open(path, "rb").read().decode("latin-1")
    sink = 0
    n = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(100):
            msg = hl7.parse(text)
            for seg in msg.segments("DG1"):
                sink += len(str(seg[3][0][0]))
            for seg in msg.segments("FT1"):
                sink += len(str(seg[25][0][0]))
        n += 100
        t = time.perf_counter() - t0
        if t >= secs:
            break
    rate = n / t
    print("python3-hl7 %s: %10.0f msgs/s  %8.2f MB/s  (%d parses)"
          % (getattr(hl7, "__version__", "?"), rate, rate * len(text) / 1e6, n))
    print("RESULT py_msgs_per_s=%.0f sink=%d" % (rate, sink % 10))


if __name__ == "__main__":
    main()
