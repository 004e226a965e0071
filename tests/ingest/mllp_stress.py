#!/usr/bin/env python3
"""mllp_stress.py - many MLLP connections at once against tests/ingest/mllp_echo:
frames in random chunks with garbage between them, oversized frames, no-reply
frames, answers delayed out of order by the server, and clients that reset
mid-stream. Checks every reply arrives in order, then that SIGTERM drains and
exits 0. Seeded, bounded to a few seconds."""
import os, random, socket, subprocess, sys, threading, time

MAX = 2000
build = os.environ.get("top_builddir", ".")
import tempfile
errlog = tempfile.TemporaryFile()  # a pipe nobody reads would block the server's log writes
proc = subprocess.Popen([os.path.join(build, "tests/ingest/mllp_echo"), str(MAX)],
                        stdout=subprocess.PIPE, stderr=errlog)
port = int(proc.stdout.readline())
errors = []
passed = [0]
lock = threading.Lock()


def read_frame(sock, buf):
    while True:
        s = buf[0].find(b"\x0b")
        e = buf[0].find(b"\x1c\x0d", s + 1) if s >= 0 else -1
        if s >= 0 and e >= 0:
            frame = buf[0][s + 1:e]
            buf[0] = buf[0][e + 2:]
            return frame
        data = sock.recv(65536)
        if not data:
            raise EOFError("server closed")
        buf[0] += data


def client(cid):
    rnd = random.Random(cid)
    got = pos = 0
    stream = b""
    abort = cid % 5 == 4
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        stream, expect = bytearray(), []
        for i in range(150):
            if rnd.random() < 0.2:
                stream += b"garbage\r\n"
            kind = rnd.random()
            if kind < 0.1:
                body = b"NONE-%d-%d" % (cid, i)
            elif kind < 0.2:
                body = b"BIG-%d-%d|" % (cid, i) + b"x" * (MAX + rnd.randint(1, 5000))
                expect.append(b"AR|%d" % len(body))
            else:
                body = b"MSG-%d-%d|" % (cid, i) + b"y" * rnd.randint(0, MAX - 40)
                expect.append(b"ACK|" + body[:24])
            stream += b"\x0b" + body + b"\x1c\x0d"
        buf = [b""]

        def sender():
            nonlocal pos
            while pos < len(stream):
                n = rnd.randint(1, 4096)
                sock.sendall(stream[pos:pos + n])
                pos += n
                if rnd.random() < 0.05:
                    time.sleep(0.002)
                if abort and pos > len(stream) // 2:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    sock.close()
                    return

        t = threading.Thread(target=sender)
        t.start()
        if abort:
            t.join()
            return
        for want in expect:
            f = read_frame(sock, buf)
            if f != want:
                raise AssertionError("conn %d reply %d: got %r want %r" % (cid, got, f[:40], want[:40]))
            got += 1
        t.join()
        sock.close()
        with lock:
            passed[0] += 1
    except Exception as e:  # noqa
        with lock:
            errors.append("client %d: %s (after %d replies, %d of %d bytes sent)" % (cid, e, got, pos, len(stream)))


threads = [threading.Thread(target=client, args=(i,)) for i in range(int(os.environ.get("NCLIENTS", "40")))]
t0 = time.time()
for t in threads:
    t.start()
for t in threads:
    t.join(30)
proc.send_signal(15)
try:
    rc = proc.wait(15)
except subprocess.TimeoutExpired:
    proc.kill()
    rc = -1
errlog.seek(0)
log = errlog.read().decode(errors="replace")
if rc != 0:
    errors.append("mllp_echo exit %d" % rc)
for bad in ("ERROR: AddressSanitizer", "runtime error", "LeakSanitizer"):
    if bad in log:
        errors.append("sanitizer report in server log")
        print(log[-3000:])
for e in errors:
    print("FAIL", e)
print("".join(l + "\n" for l in log.splitlines() if "mllp_echo:" in l), end="")
print("mllp_stress: %d clients ok in %.1fs" % (passed[0], time.time() - t0))
print("%d passed, %d failed" % (passed[0], len(errors)))
sys.exit(1 if errors else 0)
