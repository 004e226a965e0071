"""test_queue_pg.py - the real daemon with `queue = postgres` on a throwaway
PostgreSQL 15 server (pgserver.py): senders on several connections at once
(python3-hl7's MLLP client), a real downstream MLLP listener and a FHIR one.

- every message acknowledged AA reaches billing, in each sender's order, once;
- with the database stopped, senders get AR (FHIR: 503), never AA, /readyz
  answers 503, and what was refused never reaches billing; once it is back,
  the daemon accepts and delivers again without a restart;
- two instances on one database: the lease holder killed with SIGKILL under
  load, the other takes over; nothing acknowledged is lost, order holds,
  and at most the message in flight arrives twice.
"""
import json
import os
import threading
import time
import unittest
import urllib.error
import urllib.request

import hl7.client

import harness as h
from pgserver import PgServer

# The deliverer's mark window on PostgreSQL (OUT_PG_MARK_WINDOW in
# outbound/out.h): how many messages it may have sent downstream without
# their delivered mark committed.
MARK_WINDOW = 64

def with_control_id(message, ctrl):
    """The demo message with MSH-10 set to ctrl."""
    text = message.decode()
    first, sep, rest = text.partition("\r")
    fields = first.split("|")
    fields[9] = ctrl
    return ("|".join(fields) + sep + rest).encode()


def send_all(port, messages, acks):
    """Sends messages one after another on one connection; appends
    (control id, ACK code) to acks for each."""
    with hl7.client.MLLPClient("127.0.0.1", port) as c:
        c.socket.settimeout(30)
        for m in messages:
            reply = c.send_message(m)
            reply = reply.decode() if isinstance(reply, bytes) else str(reply)
            acks.append((h.msh10(m), h.ack_code(reply)))


def post_claim(port, claim):
    req = urllib.request.Request("http://127.0.0.1:%d/fhir/Claim" % port,
                                 data=json.dumps(claim).encode(), method="POST",
                                 headers={"Content-Type": "application/fhir+json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def load_claim():
    with open(os.path.join(h.DATA, "fhir", "json", "spine-m4304-mri.json")) as f:
        return json.load(f)


class QueuePostgres(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = PgServer().start()
        cls.sink = h.MllpSink().start()
        cls.fhir = h.HttpSink().start()
        cls.d = h.Daemon("--queue", "postgres", "--queue-url", cls.pg.url,
                         "--downstream-mllp", "127.0.0.1:%d" % cls.sink.port,
                         "--downstream-fhir", "http://127.0.0.1:%d/r4" % cls.fhir.port,
                         http=True).start()
        cls.base = h.demo("01-accept-no-spine-codes.hl7")

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.cleanup()
        finally:
            cls.sink.stop()
            cls.fhir.stop()
            cls.pg.cleanup()

    def billed(self):
        return self.sink.control_ids()

    def check_delivered(self, acks_per_sender, timeout=60):
        """Every AA'd message arrives, once, in its sender's order."""
        accepted = [c for acks in acks_per_sender for c, code in acks if code == "AA"]
        h.wait_for(lambda: set(accepted) <= set(self.billed()), timeout,
                   "every accepted message at billing")
        got = self.billed()
        for acks in acks_per_sender:
            mine = [c for c, code in acks if code == "AA"]
            seen = [c for c in got if c in set(mine)]
            self.assertEqual(seen, mine, "a sender's order was not kept")
        self.assertEqual(len(got), len(set(got)), "a message reached billing twice")

    def test_1_accepted_messages_delivered_in_order(self):
        senders, per = 4, 60
        acks = [[] for _ in range(senders)]
        threads = []
        for s in range(senders):
            msgs = [with_control_id(self.base, "PG1-%d-%03d" % (s, i)) for i in range(per)]
            t = threading.Thread(target=send_all, args=(self.d.mllp_port, msgs, acks[s]))
            threads.append(t)
            t.start()
        for t in threads:
            t.join(120)
        for s in range(senders):
            self.assertEqual([code for _, code in acks[s]], ["AA"] * per)
        self.check_delivered(acks)
        # Delivered rows leave the table; the FHIR path goes through it too.
        status, _ = post_claim(self.d.http_port, load_claim())
        self.assertEqual(status, 201)
        h.wait_for(lambda: len(self.fhir.received) >= 1, 30, "the Claim at the FHIR server")
        h.wait_for(lambda: self.pg.psql("SELECT count(*) FROM spinegate_msgs").strip() == "0",
                   30, "the queue table empty")

    def test_2_database_down_refuses_then_recovers(self):
        before = len(self.billed())
        self.pg.stop()
        try:
            acks = []
            msgs = [with_control_id(self.base, "PG2-DOWN-%03d" % i) for i in range(10)]
            send_all(self.d.mllp_port, msgs, acks)
            codes = [code for _, code in acks]
            self.assertNotIn("AA", codes)
            self.assertEqual(codes, ["AR"] * len(msgs))
            status, body = post_claim(self.d.http_port, load_claim())
            self.assertEqual(status, 503, body)
            self.assertIn(b"could not be stored", body)
            # Unready, so that a load balancer sends elsewhere.
            status, body = get(self.d.http_port, "/readyz")
            self.assertEqual(status, 503, body)
            self.assertFalse(json.loads(body)["queue"]["storing"])
        finally:
            self.pg.start()
        # Back without a restart of the daemon: within the reconnect backoff.
        deadline = time.time() + 30
        after = []
        i = 0
        while time.time() < deadline:
            acks = []
            send_all(self.d.mllp_port, [with_control_id(self.base, "PG2-UP-%03d" % i)], acks)
            i += 1
            after += acks
            if acks[0][1] == "AA":
                break
            self.assertEqual(acks[0][1], "AR")
            time.sleep(0.2)
        self.assertEqual(after[-1][1], "AA", "the daemon did not accept again")
        more = []
        send_all(self.d.mllp_port,
                 [with_control_id(self.base, "PG2-MORE-%03d" % k) for k in range(20)], more)
        self.assertEqual([c for _, c in more], ["AA"] * 20)
        self.check_delivered([after, more])
        status, body = get(self.d.http_port, "/readyz")
        self.assertEqual(status, 200, body)
        self.assertTrue(json.loads(body)["queue"]["storing"])
        # What was refused was not stored and never reaches billing.
        time.sleep(1)
        self.assertFalse([c for c in self.billed() if c.startswith("PG2-DOWN")])
        refused_up = [c for c, code in after if code != "AA"]
        self.assertFalse([c for c in self.billed() if c in refused_up])
        self.assertEqual(len(self.billed()), before + 1 + 20)
        self.assertIn("PostgreSQL connection (write) lost", self.d.logtext())
        self.assertIn("PostgreSQL connection (write) up again", self.d.logtext())


    def test_3_two_instances_kill9_the_lease_holder(self):
        """A second instance shares the database; the first, holding the
        leases, is killed with SIGKILL under load from both sides. The
        second takes the leases over: every AA'd message reaches billing, in
        each sender's order, and only what the first had sent without its
        delivered mark committed can arrive twice: at most its mark window
        (OUT_PG_MARK_WINDOW, 64: it sends nothing more while that many marks
        wait for their commit) and the message in flight."""
        other = h.Daemon("--queue", "postgres", "--queue-url", self.pg.url,
                         "--downstream-mllp", "127.0.0.1:%d" % self.sink.port).start()
        try:
            # The first instance holds the hl7 lease: it started first.
            self.assertIn("lease of destination hl7 taken", self.d.logtext())
            self.assertNotIn("lease of destination hl7 taken", other.logtext())
            before = set(self.billed())
            to_other, to_first = [], []
            t = threading.Thread(target=send_all, args=(
                other.mllp_port, [with_control_id(self.base, "PG3-B-%03d" % i)
                                  for i in range(150)], to_other))
            t.start()

            def until_killed():
                try:
                    send_all(self.d.mllp_port, [with_control_id(self.base, "PG3-A-%03d" % i)
                                                for i in range(1000)], to_first)
                except (OSError, ConnectionError):
                    pass  # the instance died under this sender
            a = threading.Thread(target=until_killed)
            a.start()
            h.wait_for(lambda: len(to_first) >= 60 and len(to_other) >= 40, 60, "load on both")
            self.d.kill9()
            a.join(30)
            t.join(120)
            self.assertEqual({c for _, c in to_other}, {"AA"})
            self.assertEqual(len(to_other), 150)
            h.wait_for(lambda: "lease of destination hl7 taken" in other.logtext(), 30,
                       "the takeover")
            accepted = [c for acks in (to_first, to_other) for c, code in acks if code == "AA"]
            h.wait_for(lambda: set(accepted) <= set(self.billed()), 60,
                       "every accepted message at billing")
            got = [c for c in self.billed() if c not in before]
            first_seen = []
            for c in got:
                if c not in first_seen:
                    first_seen.append(c)
            for acks in (to_first, to_other):
                mine = [c for c, code in acks if code == "AA"]
                self.assertEqual([c for c in first_seen if c in set(mine)], mine)
            dups = len(got) - len(first_seen)
            print("two instances: %d accepted, %d delivered, %d twice (marks not committed "
                  "or in flight at the kill; bound %d)" % (len(accepted), len(got), dups,
                                                          MARK_WINDOW + 1))
            self.assertLessEqual(dups, MARK_WINDOW + 1)
        finally:
            other.cleanup()


if __name__ == "__main__":
    h.run(__name__)
