#!/usr/bin/python3
"""test_faults.py - the operations team's faults, against the real daemon:
a full disk under the outbox and the dead-letter folders (a small tmpfs,
mounted when run as root, skipped with the reason otherwise), a queue
database deleted or truncated while stopped, a billing system refusing
connections for a long time then coming back, a message billing rejects
(AE with its own text), and what /readyz says meanwhile.

Every test counts what it injected and what happened to each message the
daemon acknowledged; the totals are printed at the end (lost must be 0).
"""
import json
import os
import socket
import subprocess
import time
import unittest
import urllib.error
import urllib.request

import harness as h
from test_mllp import dft

# The long outage: refusals for this many seconds at retry-base 10ms,
# retry-max-delay 200ms (far past the old fixed budget of 10 tries).
OUTAGE_S = float(os.environ.get("SPINEGATE_OUTAGE_S", "30"))

TALLY = {"faults": 0, "acknowledged": 0, "delivered": 0, "dead_lettered": 0, "lost": 0}


def send_all(d, ids, dx=("J20.9",), count=True):
    """Sends one DFT per control id; returns those acknowledged AA. count:
    followed to delivery (False where the test destroys or ignores them)."""
    acked = []
    for cid in ids:
        ack = h.mllp_send(d.mllp_port, dft(cid, list(dx)))
        if h.ack_code(ack) == "AA":
            acked.append(cid)
    if count:
        TALLY["acknowledged"] += len(acked)
    return acked


def account(acked, delivered, dead=()):
    """Adds to the tally: every acknowledged id must be delivered or dead-lettered."""
    got = set(delivered) | set(dead)
    lost = [c for c in acked if c not in got]
    TALLY["delivered"] += len([c for c in acked if c in set(delivered)])
    TALLY["dead_lettered"] += len([c for c in acked if c in set(dead)])
    TALLY["lost"] += len(lost)
    return lost


def outbox_ids(d, folder="outbox"):
    """Control ids of the finished files in a folder, in file (queue) order."""
    names = [n for n in d.folder(folder) if not n.endswith(".reason")]
    return [n.split("-", 1)[1].rsplit(".", 1)[0] for n in names]


def get_json(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def metric(port, name, dest):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith('%s{destination="%s"}' % (name, dest)):
            return float(line.split()[-1])
    return None


class Tmpfs:
    """A small tmpfs on path, and a file that fills it."""

    def __init__(self, path, size="256k"):
        self.path, self.size = path, size

    def __enter__(self):
        os.makedirs(self.path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % self.size, "tmpfs",
                        self.path], check=True)
        return self

    def fill(self):
        TALLY["faults"] += 1
        with open(os.path.join(self.path, ".filler"), "ab", buffering=0) as f:
            try:
                while True:
                    f.write(b"x" * 4096)
            except OSError:
                pass

    def unfill(self):
        os.unlink(os.path.join(self.path, ".filler"))

    def __exit__(self, *exc):
        subprocess.run(["umount", self.path], check=False)


def need_root(test):
    return unittest.skipUnless(os.geteuid() == 0,
                               "not root: cannot mount a tmpfs to make ENOSPC real")(test)


def dead_port():
    """A port with nothing listening: connections are refused."""
    return h.free_port()


class FaultTests(unittest.TestCase):

    @need_root
    def test_outbox_full_then_space_returns_in_order(self):
        d = h.Daemon("--retry-base", "10ms", "--retry-max-delay", "200ms", "--retry-max", "3",
                     http=True)
        with Tmpfs(os.path.join(d.data_dir, "outbox")) as fs:
            fs.fill()
            d.start()
            try:
                ids = ["FULL%04d" % i for i in range(25)]
                acked = send_all(d, ids)
                self.assertEqual(acked, ids)  # the queue is elsewhere: every one is taken
                time.sleep(1.0)
                self.assertEqual(outbox_ids(d), [])
                self.assertEqual(d.folder("deadletter"), [])  # retry-max 3 does not apply
                self.assertGreater(metric(d.http_port, "spinegate_delivery_storage_errors_total",
                                          "hl7"), 2)
                st, body = get_json(d.http_port, "/healthz")
                self.assertEqual(st, 200)  # liveness
                self.assertEqual(body["delivery"]["hl7"]["state"], "blocked")
                self.assertIn("No space left", body["delivery"]["hl7"]["last_error"])
                self.assertIn("No space left on device; the message stays pending", d.logtext())
                fs.unfill()
                h.wait_for(lambda: len(outbox_ids(d)) == len(ids), 20, "outbox after space returns")
                self.assertEqual(outbox_ids(d), ids)  # in order
                self.assertEqual(d.folder("deadletter"), [])
                self.assertEqual(account(acked, outbox_ids(d)), [])
                st, body = get_json(d.http_port, "/readyz")
                self.assertEqual(body["destinations"]["hl7"]["state"], "ok")
            finally:
                d.stop()
        d.cleanup()

    @need_root
    def test_reject_folder_full_then_space_returns(self):
        d = h.Daemon("--retry-base", "10ms", "--retry-max-delay", "200ms", http=True)
        with Tmpfs(os.path.join(d.data_dir, "reject"), size="64k") as fs:
            fs.fill()
            d.start()
            try:
                ack = h.mllp_send(d.mllp_port, h.demo("04-reject-excludes1.hl7"))
                self.assertEqual(h.ack_code(ack), "AE")  # judged, stored, answered
                TALLY["acknowledged"] += 1
                ok = send_all(d, ["GOOD0001"])
                h.wait_for(lambda: outbox_ids(d) == ["GOOD0001"], 10, "the good message")
                time.sleep(0.5)
                self.assertEqual(d.folder("reject"), [])
                self.assertEqual(d.folder("deadletter"), [])
                st, body = get_json(d.http_port, "/readyz")
                self.assertEqual(body["destinations"]["reject-hl7"]["state"], "blocked")
                fs.unfill()
                h.wait_for(lambda: d.folder("reject"), 10, "the reject copy after space returns")
                self.assertEqual(outbox_ids(d, "reject"), ["DEMO0004"])
                account(ok + ["DEMO0004"], outbox_ids(d) + outbox_ids(d, "reject"))
                self.assertEqual(TALLY["lost"], 0)
            finally:
                d.stop()
        d.cleanup()

    @need_root
    def test_deadletter_full_while_billing_rejects(self):
        sink = h.MllpSink(mode=lambda m: ("AE", "Guarantor account closed")
                          if "POISON" in m else "AA").start()
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % sink.port, "--retry-base", "10ms",
                     "--retry-max-delay", "200ms", http=True)
        with Tmpfs(os.path.join(d.data_dir, "deadletter"), size="64k") as fs:
            fs.fill()
            d.start()
            try:
                ids = ["POISON01"] + ["AFTER%03d" % i for i in range(5)]
                acked = send_all(d, ids)
                self.assertEqual(acked, ids)
                time.sleep(1.0)
                # The rejected message cannot be dead-lettered: it stays first
                # in line, nothing behind it goes out, nothing is lost.
                self.assertEqual(sink.control_ids(), ["POISON01"])
                self.assertEqual(d.folder("deadletter"), [])
                st, body = get_json(d.http_port, "/healthz")
                self.assertEqual(body["delivery"]["hl7"]["state"], "blocked")
                self.assertEqual(body["delivery"]["hl7"]["depth"], 6)
                fs.unfill()
                h.wait_for(lambda: len(sink.control_ids()) == 6, 20, "the feed going on")
                self.assertEqual(sink.control_ids(), ids)  # POISON01 sent once, then in order
                dead = d.folder("deadletter")
                self.assertEqual(len(dead), 2)
                note = d.read("deadletter", [n for n in dead if n.endswith(".reason")][0]).decode()
                self.assertIn("Guarantor account closed", note)
                account(acked, ids[1:], ["POISON01"])
                self.assertEqual(TALLY["lost"], 0)
            finally:
                d.stop()
        d.cleanup()
        sink.stop()

    def test_ae_from_billing_dead_lettered_with_its_text_next_goes_on(self):
        sink = h.MllpSink(mode=lambda m: ("AE", "Invalid guarantor for payer 00123")
                          if "POISON" in m else "AA").start()
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % sink.port).start()
        try:
            ids = ["POISON02", "NEXT0001", "NEXT0002"]
            acked = send_all(d, ids)
            h.wait_for(lambda: "NEXT0002" in sink.control_ids(), 10, "messages after the AE")
            self.assertEqual(sink.control_ids(), ids)  # tried once, not for minutes
            h.wait_for(lambda: len(d.folder("deadletter")) == 2, 5, "dead-letter file and note")
            dead = d.folder("deadletter")
            self.assertTrue(any("POISON02" in n and n.endswith(".hl7") for n in dead))
            note = d.read("deadletter", [n for n in dead if n.endswith(".reason")][0]).decode()
            self.assertIn("reason: downstream answered AE", note)
            self.assertIn("MSA-3: Invalid guarantor for payer 00123", note)
            self.assertIn("ERR|||207^Application internal error^HL70357|E||||Invalid guarantor",
                          note)
            # billing's text is PHI-grade: in the note, not in the log
            self.assertNotIn("Invalid guarantor", d.logtext())
            self.assertEqual(account(acked, ids[1:], ["POISON02"]), [])
        finally:
            d.cleanup()
            sink.stop()

    def test_reject_count_survives_a_restart(self):
        """downstream-reject-retries 2: billing refuses a message, the daemon
        is restarted before the second try, and that second try is the last:
        the count was kept in the queue (in memory only, the restart would
        have started it again and billing would see the message three times)."""
        sink = h.MllpSink(mode=lambda m: ("AR", "Duplicate claim")
                          if "POISON" in m else "AA").start()
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % sink.port,
                     "--downstream-reject-retries", "2", "--retry-base", "1h",
                     "--retry-max-delay", "1h").start()
        try:
            acked = send_all(d, ["POISON03", "AFTER101"])
            h.wait_for(lambda: "attempt 1 failed: downstream answered AR" in d.logtext(), 10,
                       "the first refusal")
            self.assertEqual(d.stop(), 0)
            TALLY["faults"] += 1
            d.extra[d.extra.index("--retry-base") + 1] = "10ms"
            d.start()
            h.wait_for(lambda: "AFTER101" in sink.control_ids(), 10, "the next message")
            self.assertEqual(sink.control_ids(), ["POISON03", "POISON03", "AFTER101"])
            h.wait_for(lambda: len(d.folder("deadletter")) == 2, 5, "the dead letter")
            note = d.read("deadletter", [n for n in d.folder("deadletter")
                                         if n.endswith(".reason")][0]).decode()
            self.assertIn("attempts: 2", note)
            self.assertIn("Duplicate claim", note)
            self.assertEqual(account(acked, ["AFTER101"], ["POISON03"]), [])
        finally:
            d.cleanup()
            sink.stop()

    def test_long_refusal_then_back_nothing_dead_order_kept_readyz(self):
        port = dead_port()
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % port, "--retry-base", "10ms",
                     "--retry-max-delay", "200ms", "--unready-after", "2s",
                     "--queue-high-water", "1000", http=True).start()
        sink = None
        try:
            st, body = get_json(d.http_port, "/readyz")
            self.assertEqual(st, 200)
            ids = ["OUTAGE%03d" % i for i in range(20)]
            acked = send_all(d, ids)
            TALLY["faults"] += 1
            time.sleep(0.5)
            st, body = get_json(d.http_port, "/readyz")
            self.assertEqual(st, 200)  # failing, but not for long yet
            self.assertEqual(body["destinations"]["hl7"]["state"], "retrying")
            self.assertIn("ECONNREFUSED", body["destinations"]["hl7"]["last_error"])
            self.assertIn("since", body["destinations"]["hl7"])
            time.sleep(2.0)
            st, body = get_json(d.http_port, "/readyz")
            self.assertEqual(st, 503)
            self.assertEqual(body["status"], "unready")
            st, hz = get_json(d.http_port, "/healthz")
            self.assertEqual(st, 200)  # still alive
            self.assertFalse(hz["ready"])
            time.sleep(max(0.0, OUTAGE_S - 2.5))
            age = metric(d.http_port, "spinegate_delivery_oldest_age_seconds", "hl7")
            self.assertGreater(age, OUTAGE_S - 1)
            self.assertEqual(d.folder("deadletter"), [])
            sink = h.MllpSink(port=port).start()
            h.wait_for(lambda: len(sink.control_ids()) >= len(ids), 20, "delivery after the outage")
            self.assertEqual(sink.control_ids(), ids)  # each once, in order
            self.assertEqual(d.folder("deadletter"), [])
            st, body = get_json(d.http_port, "/readyz")
            self.assertEqual(st, 200)
            self.assertEqual(body["destinations"]["hl7"]["state"], "ok")
            refused = d.logtext().count("ECONNREFUSED")
            print("# %d refused attempts in %.0f s, nothing dead-lettered" % (refused, OUTAGE_S))
            self.assertGreater(refused, 10)
            self.assertEqual(account(acked, sink.control_ids()), [])
        finally:
            d.cleanup()
            if sink:
                sink.stop()

    def test_readyz_high_water(self):
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % dead_port(), "--retry-base", "50ms",
                     "--queue-high-water", "3", http=True).start()
        try:
            self.assertEqual(get_json(d.http_port, "/readyz")[0], 200)
            send_all(d, ["HIGH%04d" % i for i in range(5)], count=False)
            st, body = get_json(d.http_port, "/readyz")
            self.assertEqual(st, 503)
            self.assertEqual(body["queue"]["depth"], 5)
            self.assertEqual(body["queue"]["high_water"], 3)
        finally:
            d.cleanup()

    def _pending_then_stop(self, d):
        """Starts d with an unreachable billing, leaves 3 acknowledged messages
        pending, and stops it."""
        d.start()
        acked = send_all(d, ["KEPT%04d" % i for i in range(3)], count=False)
        self.assertEqual(len(acked), 3)
        self.assertEqual(d.stop(), 0)
        return acked

    def _start_fails(self, d, *extra):
        r = subprocess.run(d.args() + list(extra), capture_output=True, text=True, timeout=20)
        return r

    def test_deleted_queue_refuses_to_start(self):
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % dead_port())
        self._pending_then_stop(d)
        for suffix in ("", "-wal", "-shm"):
            p = os.path.join(d.data_dir, "queue.db" + suffix)
            if os.path.exists(p):
                os.unlink(p)
        TALLY["faults"] += 1
        r = self._start_fails(d)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("queue.db is missing", r.stderr)
        self.assertIn("--accept-empty-queue", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(d.data_dir, "queue.db")))
        # Still refused the second time (nothing was created meanwhile).
        self.assertNotEqual(self._start_fails(d).returncode, 0)
        d.extra.append("--accept-empty-queue")
        d.start()
        h.mllp_send(d.mllp_port, dft("AFTER001", ["J20.9"]))
        d.stop()
        self.assertIn("starting empty (accept-empty-queue)", d.logtext())
        # The marker now names the new database: a plain start works again.
        d.extra.remove("--accept-empty-queue")
        d.start()
        d.cleanup()

    def test_truncated_queue_refuses_to_start(self):
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % dead_port())
        self._pending_then_stop(d)
        for suffix in ("", "-wal", "-shm"):
            p = os.path.join(d.data_dir, "queue.db" + suffix)
            if os.path.exists(p):
                os.truncate(p, 0)
        TALLY["faults"] += 1
        r = self._start_fails(d)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("queue.db is empty", r.stderr)
        # Truncated part way: not a database (or another one): refused too.
        with open(os.path.join(d.data_dir, "queue.db"), "wb") as f:
            f.write(b"SQLite format 3\x00" + b"\x00" * 84)
        TALLY["faults"] += 1
        self.assertNotEqual(self._start_fails(d).returncode, 0)
        os.truncate(os.path.join(d.data_dir, "queue.db"), 0)
        d.extra.append("--accept-empty-queue")
        d.start()
        d.cleanup()


    def test_stranded_dead_rows_of_an_older_version_requeued(self):
        """A queue.db as older versions left it after a full dead-letter
        folder: acknowledged messages dead (state 3) with no file anywhere.
        They are pending again at start, in order, with a log line."""
        import sqlite3
        d = h.Daemon()
        os.makedirs(os.path.join(d.data_dir, "deadletter"), mode=0o700)
        db = sqlite3.connect(os.path.join(d.data_dir, "queue.db"))
        db.executescript(
            "PRAGMA journal_mode=WAL;"
            "CREATE TABLE msgs(id INTEGER PRIMARY KEY AUTOINCREMENT, dest TEXT NOT NULL,"
            " control_id TEXT NOT NULL, content_type TEXT NOT NULL, payload BLOB NOT NULL,"
            " findings TEXT, state INTEGER NOT NULL DEFAULT 0,"
            " attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,"
            " created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
            "CREATE INDEX msgs_dest ON msgs(dest, state, id);"
            "PRAGMA user_version=1;")
        ids = ["OLD%04d" % i for i in range(4)]
        for i, cid in enumerate(ids):
            db.execute("INSERT INTO msgs(dest, control_id, content_type, payload, state, attempts,"
                       " last_error, created_ms, updated_ms) VALUES('hl7', ?,"
                       " 'application/hl7-v2', ?, 3, 10, 'connect: ECONNREFUSED', ?, ?)",
                       (cid, dft(cid, ["J20.9"]).encode(), 1000 + i, 1000 + i))
        db.commit()
        db.close()
        TALLY["faults"] += 1
        TALLY["acknowledged"] += len(ids)
        d.start()
        try:
            acked = send_all(d, ["NEW0001"])
            h.wait_for(lambda: len(outbox_ids(d)) == 5, 10, "the stranded messages delivered")
            # Requeued behind what was pending at start, in their own order.
            self.assertEqual(outbox_ids(d), ids + ["NEW0001"])
            self.assertIn("queue: 4 dead messages of hl7 that no dead-letter file holds",
                          d.logtext())
            self.assertEqual(account(ids + acked, outbox_ids(d)), [])
        finally:
            d.stop()
        d.start()  # once only: nothing is requeued the second time
        d.stop()
        self.assertEqual(d.logtext().count("that no dead-letter file holds"), 1)
        self.assertEqual(len(outbox_ids(d)), 5)
        d.cleanup()


def tearDownModule():
    print("# faults injected %(faults)d, messages acknowledged %(acknowledged)d, delivered "
          "%(delivered)d, dead-lettered %(dead_lettered)d, lost %(lost)d" % TALLY)


if __name__ == "__main__":
    h.run(__name__)
