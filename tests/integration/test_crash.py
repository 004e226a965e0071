#!/usr/bin/python3
"""test_crash.py - kill -9 at each step of delivery, against the real daemon
and a real downstream MLLP listener, then a restart: every acknowledged
message must reach billing at least once (or the dead-letter folder), in
order, and only the message in flight at the kill may arrive twice.

How the kill lands on a step, deterministically:
  - "sent, ACK not read": the downstream listener holds its ACK for the chosen
    message and the test kills the real daemon (tests see the listener
    receive it; the daemon sends one message at a time and waits).
  - every other step: tests/integration/spinegate-crash, the same daemon with
    its delivery code built with -DSPINEGATE_CRASH_POINTS. With
    SPINEGATE_TEST_CRASH_AT=<point>:<N> it prints "crash point <point>" and
    raises SIGKILL the Nth time it reaches that point (outbound/queue_int.h).
    The installed daemon has no such code. The points:
      put-committed         a put is durable, the sender not yet answered
      before-send           stored, fetched, about to be sent downstream
      acked                 downstream answered AA, nothing recorded yet
      cursor-written        the delivery cursor moved, its delivered marks not committed
      marks-committed       a group commit of delivered marks is durable
      dead-payload-written  dead letter: payload file written, no note, no mark
      dead-filed            dead letter: file and note durable, no mark given
      dead-marked           the dead mark is durable, the cursor not yet moved
Each scenario first leaves the messages acknowledged and pending (billing
down), then lets billing come up under the crashing daemon, then restarts it.
The totals are printed at the end: lost must be 0.
"""
import os
import signal
import sqlite3
import subprocess
import unittest

import harness as h
from test_mllp import dft

CRASH = os.path.join(h.TOP_BUILDDIR, "tests", "integration", "spinegate-crash")

TALLY = {"faults": 0, "acknowledged": 0, "delivered": 0, "dead_lettered": 0, "duplicates": 0,
         "lost": 0}


class CrashDaemon(h.Daemon):
    """h.Daemon on another binary, with SPINEGATE_TEST_CRASH_AT when asked."""

    def __init__(self, *extra, binary=CRASH):
        super().__init__(*extra)
        self.binary = binary
        self.crash_at = None

    def args(self):
        a = super().args()
        a[0] = self.binary
        return a

    def env(self):
        env = dict(os.environ)
        env.pop("SPINEGATE_TEST_CRASH_AT", None)
        if self.crash_at:
            env["SPINEGATE_TEST_CRASH_AT"] = self.crash_at
        return env

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=subprocess.STDOUT,
                                     env=self.env())
        h.wait_port(self.mllp_port, proc=self.proc)
        return self

    def run_until_killed(self, timeout=60):
        """Starts with crash_at set and waits for the SIGKILL it asks for."""
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=subprocess.STDOUT,
                                     env=self.env())
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
            self.log = None
        TALLY["faults"] += 1
        return rc


def collapse(seq):
    """seq with runs of one value made one: a re-sent message in its place."""
    out = []
    for x in seq:
        if not out or out[-1] != x:
            out.append(x)
    return out


def queue_rows(d, dest="hl7"):
    """(control id, state) of dest's rows in the stopped daemon's queue."""
    db = sqlite3.connect(os.path.join(d.data_dir, "queue.db"))
    try:
        return db.execute("SELECT control_id, state FROM msgs WHERE dest=? ORDER BY id",
                          (dest,)).fetchall()
    finally:
        db.close()


def billing(hold=None):
    """A downstream that answers AE (with its own text) to POISON messages,
    AA otherwise; hold: the position (1-based) of a message not answered."""
    seen = [0]

    def mode(m):
        seen[0] += 1
        if hold is not None and seen[0] == hold:
            return None
        if "POISON" in m:
            return ("AE", "Account on hold")
        return "AA"
    return mode


class CrashTests(unittest.TestCase):

    def setUp(self):
        if not os.access(CRASH, os.X_OK):
            self.fail("%s is not built (make check builds it)" % CRASH)

    def scenario(self, point, hit, ids, dups, held=False):
        """Kills the daemon at point (its hit-th time, or for held=True the
        downstream holds the ACK of message number hit), restarts it and
        checks the outcome. dups: re-sent messages expected (an int), or a
        range when the kill races the message in flight."""
        sink_port = h.free_port()
        d = CrashDaemon("--downstream-mllp", "127.0.0.1:%d" % sink_port, "--retry-base", "10ms",
                        "--retry-max-delay", "100ms", "--ack-timeout", "60s",
                        binary=h.DAEMON if held else CRASH)
        sink = None
        try:
            # 1. Billing down: every message acknowledged, stored, pending.
            d.start()
            acked = [c for c in ids if h.ack_code(h.mllp_send(d.mllp_port, dft(c, ["J20.9"])))
                     == "AA"]
            self.assertEqual(acked, ids)
            TALLY["acknowledged"] += len(acked)
            self.assertEqual(d.stop(), 0)

            # 2. Billing comes up; the daemon dies at the step.
            sink = h.MllpSink(port=sink_port, mode=billing(hold=hit if held else None)).start()
            if held:
                d.start()
                h.wait_for(lambda: len(sink.messages()) >= hit, 20, "message %d at billing" % hit)
                d.kill9()
                TALLY["faults"] += 1
                self.assertEqual(len(sink.messages()), hit)  # one in flight, nothing behind it
            else:
                d.crash_at = "%s:%d" % (point, hit)
                rc = d.run_until_killed()
                self.assertEqual(rc, -signal.SIGKILL, d.logtext()[-2000:])
                self.assertIn("crash point %s (hit %d): SIGKILL" % (point, hit), d.logtext())
                d.crash_at = None
            before = len(sink.messages())
            sink.mode = billing()

            # 3. Restart: the rest goes out, in order.
            d.start()
            poison = [c for c in ids if "POISON" in c]
            h.wait_for(lambda: set(sink.control_ids()) >= set(ids), 20, "every message at billing")
            if poison:
                h.wait_for(lambda: len(d.folder("deadletter")) == 2 * len(poison), 10,
                           "dead letters")
            self.assertEqual(d.stop(), 0)
            got = sink.control_ids()
            self.assertEqual(collapse(got), ids, "order: %s" % got)
            ndup = len(got) - len(ids)
            if isinstance(dups, int):
                self.assertEqual(ndup, dups, "re-sent: %s" % got)
            else:
                self.assertIn(ndup, dups, "re-sent: %s" % got)
            dead = d.folder("deadletter")
            self.assertEqual(sorted(n.split("-", 1)[1].split(".")[0] for n in dead),
                             sorted(poison * 2))  # one payload and one note each, never two
            for n in dead:
                if n.endswith(".reason"):
                    self.assertIn("Account on hold", d.read("deadletter", n).decode())
            # Nothing left pending, the rejected one kept as dead-lettered (4).
            rows = queue_rows(d)
            self.assertEqual(rows, [(c, 4) for c in poison], rows)
            delivered = [c for c in acked if c in set(got) and c not in poison]
            lost = [c for c in acked if c not in set(got)]
            TALLY["delivered"] += len(delivered)
            TALLY["dead_lettered"] += len(poison)
            TALLY["duplicates"] += ndup
            TALLY["lost"] += len(lost)
            self.assertEqual(lost, [])
            print("# %s: %d at billing before the kill, %d re-sent" %
                  ("held ACK" if held else point, before, ndup))
        finally:
            if d.proc and d.proc.poll() is None:
                d.stop()
            if sink:
                sink.stop()
        d.cleanup()

    def ids(self, tag, n=6, poison_at=None):
        return ["%s%s%02d" % (tag, "POISON" if i == poison_at else "", i) for i in range(n)]

    def test_stored_not_sent(self):
        self.scenario("before-send", 3, self.ids("BS"), 0)

    def test_sent_ack_not_read(self):
        self.scenario(None, 3, self.ids("HELD"), 1, held=True)

    def test_ack_read_nothing_recorded(self):
        self.scenario("acked", 3, self.ids("ACK"), 1)

    def test_cursor_written_mark_not_given(self):
        # The cursor alone says message 3 went out: not sent again.
        self.scenario("cursor-written", 3, self.ids("CUR"), 0)

    def test_marks_committed(self):
        # Whatever the message in flight then: it alone may go twice.
        self.scenario("marks-committed", 1, self.ids("MRK"), range(0, 2))

    def test_dead_letter_payload_written_no_note(self):
        self.scenario("dead-payload-written", 1, self.ids("DPW", poison_at=2), 1)

    def test_dead_letter_filed_no_mark(self):
        self.scenario("dead-filed", 1, self.ids("DFL", poison_at=2), 1)

    def test_dead_letter_marked_cursor_not_moved(self):
        self.scenario("dead-marked", 1, self.ids("DMK", poison_at=2), 0)

    def test_put_committed_sender_not_answered(self):
        """The kill lands between the queue commit and the ACK to the sender:
        the sender, unanswered, sends the message again (as MLLP senders do);
        billing may get it twice, never zero times, order kept."""
        # Billing comes up only after the kill, so that no delivery is in
        # flight at it: the one message twice is then the one resent.
        sink = h.MllpSink()
        d = CrashDaemon("--downstream-mllp", "127.0.0.1:%d" % sink.port, "--retry-base", "10ms",
                        "--retry-max-delay", "100ms")
        try:
            ids = self.ids("PUT")
            d.crash_at = "put-committed:3"
            d.start()
            acked = []
            for c in ids:
                try:
                    ack = h.mllp_send(d.mllp_port, dft(c, ["J20.9"]))
                except (ConnectionError, OSError):
                    ack = ""
                if h.ack_code(ack) is None:
                    # Unanswered: the sender retries once the daemon is back.
                    d.proc.wait(20)
                    self.assertEqual(d.proc.returncode, -signal.SIGKILL)
                    self.assertIn("crash point put-committed (hit 3)", d.logtext())
                    TALLY["faults"] += 1
                    d.log.close()
                    d.crash_at = None
                    d.start()
                    ack = h.mllp_send(d.mllp_port, dft(c, ["J20.9"]))
                self.assertEqual(h.ack_code(ack), "AA")
                acked.append(c)
            self.assertEqual(d.crash_at, None)  # the kill did happen
            TALLY["acknowledged"] += len(acked)
            sink.start()
            h.wait_for(lambda: set(sink.control_ids()) >= set(ids), 20, "every message")
            self.assertEqual(d.stop(), 0)
            got = sink.control_ids()
            self.assertEqual(collapse(got), ids, got)
            self.assertEqual(len(got) - len(ids), 1)  # stored once by the kill, once resent
            TALLY["delivered"] += len(ids)
            TALLY["duplicates"] += len(got) - len(ids)
            print("# put-committed: %d re-sent" % (len(got) - len(ids)))
        finally:
            if d.proc and d.proc.poll() is None:
                d.stop()
            if sink.ready.is_set():
                sink.stop()
        d.cleanup()


    def test_soak_kills_while_sending(self):
        """A sender streams messages (a few that billing refuses) while the
        daemon kills itself at one step after another, each in a fresh life;
        the sender sends again what was not answered, as MLLP senders do.
        Each kill may add two duplicates (the message in flight to billing,
        the one stored but unanswered), never a loss or a reordering."""
        points = ["acked:20", "put-committed:30", "cursor-written:25", "dead-filed:1",
                  "before-send:40", "marks-committed:3", "dead-marked:1",
                  "dead-payload-written:1", "acked:7", "put-committed:11"]
        n = int(os.environ.get("SPINEGATE_SOAK_MESSAGES", "400"))
        ids = ["SOAK%s%04d" % ("POISON" if i % 40 == 39 else "", i) for i in range(n)]
        poison = [c for c in ids if "POISON" in c]
        sink = h.MllpSink(mode=billing()).start()
        d = CrashDaemon("--downstream-mllp", "127.0.0.1:%d" % sink.port, "--retry-base", "10ms",
                        "--retry-max-delay", "100ms")
        pending = list(points)
        kills = []

        def killed():
            """The daemon is gone: it must be by its own SIGKILL."""
            d.proc.wait(20)
            self.assertEqual(d.proc.returncode, -signal.SIGKILL, d.logtext()[-2000:])
            self.assertIn("crash point %s" % d.crash_at.split(":")[0], d.logtext())
            kills.append(d.crash_at)
            TALLY["faults"] += 1
            if d.log:
                d.log.close()
                d.log = None

        def start():
            while True:
                d.crash_at = pending.pop(0) if pending else None
                try:
                    d.start()
                    return
                except RuntimeError:  # killed before its port opened
                    killed()

        try:
            start()
            acked = []
            for c in ids:
                while True:
                    try:
                        ack = h.mllp_send(d.mllp_port, dft(c, ["J20.9"]))
                    except OSError:
                        ack = ""
                    if h.ack_code(ack) == "AA":
                        acked.append(c)
                        break
                    self.assertIsNone(h.ack_code(ack), ack)  # unanswered, not refused
                    killed()
                    start()
            TALLY["acknowledged"] += len(acked)
            # Drain: a step not reached yet may still fire; then a plain start.
            try:
                h.wait_for(lambda: d.proc.poll() is not None or
                           set(sink.control_ids()) >= set(ids), 30, "delivery")
            finally:
                if d.proc.poll() is not None:
                    killed()
                    pending.clear()
                    start()
            h.wait_for(lambda: set(sink.control_ids()) >= set(ids), 30, "every message at billing")
            h.wait_for(lambda: {n.split("-", 1)[1].split(".")[0] for n in d.folder("deadletter")}
                       >= set(poison), 10, "dead letters")
            rc = d.stop()
            if rc == -signal.SIGKILL:  # the last step fired on the way out
                d.proc = None
                TALLY["faults"] += 1
                kills.append(d.crash_at)
            got = sink.control_ids()
            self.assertEqual(collapse(got), ids)  # in order; a duplicate only next to itself
            ndup = len(got) - len(ids)
            self.assertLessEqual(ndup, 2 * len(kills))
            self.assertGreaterEqual(len(kills), 5, kills)
            lost = [c for c in acked if c not in set(got)]
            self.assertEqual(lost, [])
            self.assertEqual({n.split("-", 1)[1].split(".")[0] for n in d.folder("deadletter")},
                             set(poison))
            TALLY["delivered"] += len([c for c in acked if c not in poison])
            TALLY["dead_lettered"] += len(poison)
            TALLY["duplicates"] += ndup
            print("# soak: %d messages, %d kills (%s), %d duplicates" %
                  (len(ids), len(kills), ", ".join(kills), ndup))
        finally:
            if d.proc and d.proc.poll() is None:
                d.stop()
            sink.stop()
        d.cleanup()


def tearDownModule():
    print("# kill -9: faults injected %(faults)d, messages acknowledged %(acknowledged)d, "
          "delivered %(delivered)d, dead-lettered %(dead_lettered)d, duplicates "
          "%(duplicates)d, lost %(lost)d" % TALLY)


if __name__ == "__main__":
    h.run(__name__)
