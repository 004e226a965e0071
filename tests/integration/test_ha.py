#!/usr/bin/python3
"""test_ha.py - two spinegate instances sharing one queue on PostgreSQL 15
with a synchronous standby (pgcluster.py), under load from MLLP senders,
through the failures issue 14 names:

  failover   kill -9 of the primary's postmaster, pg_ctl promote of the
             standby (as Patroni would), then kill -9 of the spinegate
             instance that holds the delivery lease, and its restart;
  standby    the standby stopped: no AA while the commit waits for it; AR
             after the daemon's commit timeout; AA again once it is dropped
             from synchronous_standby_names;
  database   both servers stopped: senders get AR and FHIR POSTs 503, never
             AA/2xx, and /readyz 503; the daemon takes messages again when
             they return.

The senders behave as interface engines do: each has its own control ids
(S<n>-<seq>) and sends one message at a time, again and again until it gets
AA (an AR, a dropped connection or a silent peer means "send it again"; a
refused connection sends it to the other instance, as HAProxy would). So
every message a sender got AA for must reach the downstream sink; the first
arrival of each sender's messages must be in the sender's order; and the
duplicates are counted, explained and bounded:

  sender repeats   a message sent again after an attempt that was not
                   answered AA may have been stored by that attempt (the
                   commit reached the server but its answer did not reach
                   the instance, or the instance died between commit and
                   ACK): only a commit cut off by a fault can do that, and a
                   sender has one message in that commit at most, so at
                   most one per sender per fault;
  delivery repeats the lease holder goes on sending while its delivered
                   marks are group-committed, at most the mark window (64,
                   OUT_PG_MARK_WINDOW in outbound/out.h) ahead of them, one
                   message at a time: when it dies (or loses its database)
                   the next holder sends again the messages whose mark was
                   not committed and the one in flight: at most
                   DELIVERY_WINDOW (64 + 1) per lost lease, and the lease is
                   lost twice (the primary's death ends every session; the
                   holder's kill -9 ends its own). At this test's pace a
                   mark commit carries a message or two, so the count found
                   is far below the bound; the bound is what the code
                   promises, whatever the pace.
"""
import os
import signal
import socket
import threading
import time
import unittest

import hl7.client

import harness as h
import pgcluster
from test_fhir import curl, load, with_dx
from test_mllp import dft

SENDERS_PER_INSTANCE = 2
# Each sender's pause between messages: the four together offer about 400
# messages/s, below what one deliverer forwards to the Python sink, so that
# the backlog at the end stays short.
PACE = 0.01
ACK_WAIT = 10.0          # a sender's patience for one answer
# The most messages the lease holder has sent downstream without their
# delivered mark committed: its mark window (OUT_PG_MARK_WINDOW, 64: out.c
# sends nothing more while that many marks wait for their commit) and the
# one message in flight (MLLP window 1) (docs/queue-schema.md).
MARK_WINDOW = 64
DELIVERY_WINDOW = MARK_WINDOW + 1


def collapse_first(seq):
    """seq with only the first occurrence of each value kept."""
    seen, out = set(), []
    for x in seq:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


class Sender(threading.Thread):
    """One interface engine: a connection to one instance, one message in
    flight, sent until AA."""

    def __init__(self, name, ports, first, stop):
        super().__init__(daemon=True)
        self.name = name
        self.ports = ports
        self.which = first
        self.stop_event = stop
        self.conn = None
        self.sent = []          # control ids in sending order (each until AA)
        self.acked = []
        self.answers = {}       # ACK code -> count, "none" for no answer
        self.repeats = 0        # attempts after an attempt that was not AA
        self.failure = None
        self.lock = threading.Lock()

    def _connect(self):
        c = hl7.client.MLLPClient("127.0.0.1", self.ports[self.which])
        c.socket.settimeout(ACK_WAIT)
        return c

    def _attempt(self, message):
        """One try: the ACK code, or None when there was no answer."""
        try:
            if self.conn is None:
                self.conn = self._connect()
            reply = self.conn.send_message(message)
            while h.EB not in reply:
                more = self.conn.socket.recv(65536)
                if not more:
                    raise ConnectionError("closed before the ACK")
                reply += more
            return h.ack_code(reply.strip(h.SB + h.EB + h.CR + b"\n").decode("utf-8", "replace"))
        except ConnectionRefusedError:
            self.which = (self.which + 1) % len(self.ports)  # the other instance
            self._drop()
            return None
        except (OSError, ConnectionError, socket.timeout):
            self._drop()
            return None

    def _drop(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None

    def run(self):
        seq = 0
        try:
            while not self.stop_event.is_set():
                cid = "%s-%05d" % (self.name, seq)
                message = dft(cid, ["M43.04"]).encode()
                with self.lock:
                    self.sent.append(cid)
                tries = 0
                deadline = time.time() + 90
                while True:
                    if time.time() > deadline:
                        raise AssertionError("%s: no AA for %s in 90 s (%s)" %
                                             (self.name, cid, self.answers))
                    if tries:
                        self.repeats += 1
                    tries += 1
                    code = self._attempt(message)
                    with self.lock:
                        key = code or "none"
                        self.answers[key] = self.answers.get(key, 0) + 1
                    if code == "AA":
                        with self.lock:
                            self.acked.append(cid)
                        break
                    time.sleep(0.05)
                seq += 1
                time.sleep(PACE)
        except BaseException as e:
            self.failure = e
        finally:
            self._drop()

    def acked_count(self):
        with self.lock:
            return len(self.acked)


def teardown(*steps):
    """Runs every step (None: skipped) even when one fails, so that no
    process outlives the test; then raises the first failure."""
    first = None
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except BaseException as e:  # keep tearing down
            first = first or e
    if first is not None:
        raise first


def show_logs(cluster, daemons):
    """After a failure: the end of the servers' and the daemons' logs, so that
    the test's output says what happened."""
    print(cluster.logs())
    for d in daemons:
        if d is not None and os.path.exists(d.log_path):
            print("== end of " + d.log_path)
            print(d.logtext()[-4000:])


def pg_instance(cluster, name, sink_port, *extra, http=False):
    """A spinegate on the shared queue; name becomes its application_name
    on the server, so the test can see which instance holds a lease."""
    url = cluster.queue_url(extra="&application_name=" + name)
    return h.Daemon("--queue", "postgres", "--queue-url", url,
                    "--downstream-mllp", "127.0.0.1:%d" % sink_port,
                    "--retry-base", "10ms", "--retry-max-delay", "200ms", *extra, http=http)


def lease_key(dest):
    """The advisory lock key of dest's lease: FNV-1a (64 bits) over
    "spinegate:" and the name, as outbound/queue_pg.c computes it."""
    x = 1469598103934665603
    for byte in b"spinegate:" + dest.encode():
        x = ((x ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return x


def lease_holder(node, dest="hl7"):
    """application_name of the session holding dest's lease on node, or None.
    A bigint advisory key shows in pg_locks as classid (high half) and objid
    (low half), objsubid 1."""
    key = lease_key(dest)
    try:
        rows = node.sql("SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                        "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                        "AND l.objsubid = 1 AND l.classid = %d AND l.objid = %d"
                        % (key >> 32, key & 0xFFFFFFFF))
    except RuntimeError:
        return None
    names = [r[0] for r in rows if r and r[0]]
    # Never two: that would be two deliverers of one destination.
    assert len(names) <= 1, "two holders of the %s lease: %s" % (dest, names)
    return names[0] if names else None


class HaFailover(unittest.TestCase):

    def test_failover_under_load(self):
        t0 = time.time()
        cluster = pgcluster.PgCluster(standby=True)
        sink = None
        instances = []
        senders = []
        stop = threading.Event()
        passed = False
        try:
            cluster.start()
            self.assertIn((pgcluster.STANDBY_NAME, "streaming", "sync"), cluster.replication())
            sink = h.MllpSink().start()
            a = pg_instance(cluster, "sg-a", sink.port)
            b = pg_instance(cluster, "sg-b", sink.port)
            instances = [a, b]
            a.start()
            b.start()
            ports = [a.mllp_port, b.mllp_port]
            for i in range(2 * SENDERS_PER_INSTANCE):
                senders.append(Sender("S%d" % i, ports, i % 2, stop))
            for s in senders:
                s.start()

            def acked():
                return sum(s.acked_count() for s in senders)

            def progress(more, what, timeout=40):
                target = acked() + more
                h.wait_for(lambda: acked() >= target or any(s.failure for s in senders),
                           timeout, what)
                for s in senders:
                    if s.failure:
                        raise s.failure

            progress(100, "load before the faults")
            holder = h.wait_for(lambda: lease_holder(cluster.primary), 20, "a lease holder")
            # The queue is PostgreSQL's, not a file beside each instance.
            tables = cluster.primary.sql("SELECT count(*) FROM pg_tables WHERE schemaname "
                                         "NOT IN ('pg_catalog', 'information_schema')",
                                         db="spinegate")
            self.assertGreater(int(tables[0][0]), 0)
            for d in instances:
                self.assertFalse(os.path.exists(os.path.join(d.data_dir, "queue.db")))

            # 1. The primary's machine dies; the standby is promoted.
            at_kill = acked()
            cluster.kill9_primary()
            time.sleep(0.3)
            cluster.promote_standby()
            t_promoted = time.time()
            progress(100, "load after the promotion")
            resumed = time.time() - t_promoted

            # 2. The instance holding the lease dies (kill -9) and comes back.
            holder = h.wait_for(lambda: lease_holder(cluster.standby), 20,
                                "a lease holder on the promoted server")
            victim = a if holder == "sg-a" else b
            survivor = "sg-b" if victim is a else "sg-a"
            victim.kill9()
            t_kill = time.time()
            h.wait_for(lambda: lease_holder(cluster.standby) == survivor, 15,
                       "the lease taken over by " + survivor)
            takeover = time.time() - t_kill
            progress(50, "load on the surviving instance")
            # Back on a new port, as a replaced machine would be: its old one
            # was free while it was down, and any process here (another test
            # running beside this one) may have been given it meanwhile. The
            # senders' list (HAProxy's backends) follows.
            victim.mllp_port = h.free_port()
            ports[instances.index(victim)] = victim.mllp_port
            victim.start()
            # One more sender, on the restarted instance: it takes messages again.
            late = Sender("R", ports, instances.index(victim), stop)
            senders.append(late)
            late.start()
            h.wait_for(lambda: late.acked_count() >= 20 or late.failure, 30,
                       "AA from the restarted instance")
            progress(50, "load after the restart")

            stop.set()
            for s in senders:
                s.join(120)
                self.assertFalse(s.is_alive(), "%s did not finish" % s.name)
                if s.failure:
                    raise s.failure

            acked_ids = [c for s in senders for c in s.acked]
            h.wait_for(lambda: set(sink.control_ids()) >= set(acked_ids), 60,
                       "every acknowledged message at the sink")
            time.sleep(0.5)  # anything still in flight arrives too
            got = sink.control_ids()
            lost = sorted(set(acked_ids) - set(got))
            self.assertEqual(lost, [], "acknowledged but never delivered")
            for s in senders:
                mine = [c for c in got if c.startswith(s.name + "-")]
                # Every message a sender sent is acknowledged in the end, and
                # each first reaches billing in the order it was sent.
                self.assertEqual(s.acked, s.sent)
                self.assertEqual(collapse_first(mine), s.acked, "order of %s" % s.name)
            foreign = [c for c in got if c not in set(acked_ids)]
            self.assertEqual(foreign, [])
            dups = len(got) - len(set(got))
            repeats = sum(s.repeats for s in senders)
            answers = {}
            for s in senders:
                for k, v in s.answers.items():
                    answers[k] = answers.get(k, 0) + v
            # In flight at each of the two faults (the primary's death, the
            # lease holder's kill -9): one message per sender that was there
            # (a sender has one in flight; the commit it was in may have landed
            # though its answer did not) and DELIVERY_WINDOW at the deliverer
            # (its uncommitted marks and the message in flight).
            # The late sender saw no fault.
            exposed = 2 * SENDERS_PER_INSTANCE
            bound = 2 * (exposed + DELIVERY_WINDOW)
            print("# failover: %d acknowledged (%d before the primary died), %d at the sink, "
                  "%d duplicates (bound %d = 2 faults x (%d senders + %d at the deliverer)), "
                  "lost %d; %d attempts repeated; answers %s; load resumed %.1f s after the "
                  "promotion; lease taken over %.1f s after the holder's kill; %.1f s in all"
                  % (len(acked_ids), at_kill, len(got), dups, bound, exposed, DELIVERY_WINDOW,
                     len(lost), repeats, answers, resumed, takeover, time.time() - t0))
            self.assertLessEqual(dups, bound)
            passed = True
        finally:
            stop.set()
            for s in senders:
                s.join(10)
            if not passed:
                show_logs(cluster, instances)
            teardown(*[d.cleanup for d in instances if d.proc is not None],
                     sink.stop if sink else None, cluster.stop)


class HaStandbyDown(unittest.TestCase):

    def test_no_aa_while_a_commit_waits_for_the_standby(self):
        # The standby stops: the primary commits locally and waits for it, so
        # no message may be acknowledged; the daemon gives up on the commit
        # after its batch timeout (15 s) and answers AR. Once the standby is
        # dropped from synchronous_standby_names (what Patroni does without
        # synchronous_mode_strict), messages are acknowledged again.
        cluster = pgcluster.PgCluster(standby=True)
        sink = d = None
        passed = False
        try:
            cluster.start()
            sink = h.MllpSink().start()
            d = pg_instance(cluster, "sg-a", sink.port).start()
            self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, dft("SB-1", ["M43.04"]))), "AA")
            cluster.standby.stop()
            t = time.time()
            code = h.ack_code(h.mllp_send(d.mllp_port, dft("SB-WAIT", ["M43.04"]), timeout=40))
            waited = time.time() - t
            self.assertEqual(code, "AR")
            self.assertGreater(waited, 10)  # it waited for the standby, then gave up
            cluster.primary.sql("ALTER SYSTEM SET synchronous_standby_names = ''")
            cluster.primary.sql("SELECT pg_reload_conf()")
            n = [0]

            def next_one():
                n[0] += 1
                return h.ack_code(h.mllp_send(d.mllp_port, dft("SB-ALONE-%d" % n[0], ["M43.04"]),
                                              timeout=30)) == "AA"
            h.wait_for(next_one, 20, "AA with the standby dropped")
            h.wait_for(lambda: "SB-ALONE-%d" % n[0] in sink.control_ids(), 20, "delivery")
            # The refused one was committed on the primary before the wait
            # (PostgreSQL commits locally, then waits): billing may get it,
            # and gets it again if the sender resends. Counted, not lost.
            print("# standby down: AR after %.1f s of waiting; the refused message at the sink "
                  "%d time(s); AA again after %d tries once the standby was dropped"
                  % (waited, sink.control_ids().count("SB-WAIT"), n[0]))
            passed = True
        finally:
            if not passed:
                show_logs(cluster, [d])
            teardown(d.cleanup if d else None, sink.stop if sink else None, cluster.stop)


class HaDatabaseDown(unittest.TestCase):

    def test_unreachable_database_refuses_then_recovers(self):
        cluster = pgcluster.PgCluster(standby=True)
        sink = fsink = d = None
        passed = False
        try:
            cluster.start()
            sink = h.MllpSink().start()
            fsink = h.HttpSink().start()
            d = pg_instance(cluster, "sg-a", sink.port,
                            "--downstream-fhir", "http://127.0.0.1:%d/r4" % fsink.port,
                            http=True).start()
            claim = with_dx(load("spine-m4304-mri.json"), ["M43.00"])
            self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, dft("UP-1", ["M43.04"]))), "AA")
            status, _, body = curl(d.http_port, "/fhir/Claim", claim)
            self.assertEqual(status, 201, body)

            cluster.standby.stop()
            cluster.primary.stop()
            codes = []
            for i in range(5):
                codes.append(h.ack_code(h.mllp_send(d.mllp_port, dft("DOWN-%d" % i, ["M43.04"]),
                                                    timeout=30)))
            self.assertEqual(codes, ["AR"] * 5, d.logtext()[-3000:])
            status, _, body = curl(d.http_port, "/fhir/Claim", claim)
            self.assertEqual(status, 503, body)
            # A load balancer checking /readyz sends elsewhere meanwhile.
            status, _, body = curl(d.http_port, "/readyz")
            self.assertEqual(status, 503, body)

            cluster.primary.start()
            cluster.standby.start()
            cluster.wait_sync()

            def stored(cid):
                return h.ack_code(h.mllp_send(d.mllp_port, dft(cid, ["M43.04"]), timeout=30)) == "AA"
            n = [0]

            def next_one():
                n[0] += 1
                return stored("BACK-%d" % n[0])
            h.wait_for(next_one, 30, "AA once the database is back")
            self.assertEqual(curl(d.http_port, "/readyz")[0], 200)
            status, _, body = curl(d.http_port, "/fhir/Claim", claim)
            self.assertEqual(status, 201, body)
            want = ["UP-1", "BACK-%d" % n[0]]
            h.wait_for(lambda: set(sink.control_ids()) >= set(want), 30, "delivery after recovery")
            refused = [c for c in sink.control_ids() if c.startswith("DOWN-")]
            print("# database down: 5 of 5 MLLP answers AR, FHIR 503, /readyz 503; AA again "
                  "after %d tries; refused messages at the sink: %d" % (n[0], len(refused)))
            self.assertEqual(refused, [])
            h.wait_for(lambda: len(fsink.received) >= 2, 30, "both FHIR Claims at billing")
            passed = True
        finally:
            if not passed:
                show_logs(cluster, [d])
            teardown(d.cleanup if d else None, sink.stop if sink else None,
                     fsink.stop if fsink else None, cluster.stop)


if __name__ == "__main__":
    h.run(__name__)
