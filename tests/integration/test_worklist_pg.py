"""test_worklist_pg.py - one coders' worklist for every instance, with
`queue = postgres` on a throwaway PostgreSQL 15 server (pgserver.py).

Two real daemons, A and B, share one database and a real downstream MLLP
sink. A message rejected by A is listed, shown and resent by spinegate-admin
run with B's config (through B's admin socket) and with the config of a data
folder where no daemon runs (spinegate-admin straight on PostgreSQL); the
corrected message goes through the rules and reaches billing. A dead letter
(billing answers AR until the tries run out) is requeued and delivered by
whichever instance holds the lease. Items are resolved with a note, counted
by stats, and prune never removes an open one. B's worklist web page logs in
and lists A's items over HTTP (curl).
"""
import json
import os
import subprocess
import shutil
import signal
import tempfile
import threading
import time
import unittest

import harness as h
from pgserver import PgServer
from test_mllp import dft

ADMIN = os.path.join(h.TOP_BUILDDIR, "spinegate-admin")
PASSWORD = "correct horse battery"


def write_config(data_dir, url):
    path = os.path.join(data_dir, "spinegate.conf")
    with open(path, "w") as f:
        f.write("data-dir = %s\nqueue = postgres\nqueue-url = %s\n" % (data_dir, url))
    return path


def admin(config, *args, stdin=None):
    """Runs spinegate-admin with config; returns (status, stdout, stderr)."""
    p = subprocess.run([ADMIN, "--config", config] + list(args), input=stdin,
                       capture_output=True, timeout=60)
    if p.stderr and (b"Sanitizer" in p.stderr or b"runtime error:" in p.stderr):
        raise AssertionError(p.stderr.decode())
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def items(config, *filters):
    rc, out, err = admin(config, "list", "--json", *filters)
    assert rc == 0, (rc, out, err)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def item(config, cid):
    found = [i for i in items(config) if i["control_id"] == cid]
    assert len(found) == 1, found
    return found[0]


def curl(url, *args):
    """(status, headers and body) of a curl request."""
    out = subprocess.run(["curl", "-s", "-i", url] + list(args), capture_output=True,
                         timeout=30).stdout.decode(errors="replace")
    head, _, body = out.partition("\r\n\r\n")
    return int(out.split(" ", 2)[1]), head, body


class WorklistPostgres(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = PgServer().start()
        cls.refuse = True
        cls.sink = h.MllpSink(mode=lambda m: ("AR", "Guarantor account closed")
                              if "POISON" in m and cls.refuse else "AA").start()
        common = ("--queue", "postgres", "--queue-url", cls.pg.url,
                  "--downstream-mllp", "127.0.0.1:%d" % cls.sink.port,
                  "--downstream-reject-retries", "3", "--retry-base", "50ms")
        cls.a = h.Daemon(*common).start()
        cls.admin_port = h.free_port()
        cls.b = h.Daemon(*common, "--listen-admin", "127.0.0.1:%d" % cls.admin_port)
        os.makedirs(cls.b.data_dir, exist_ok=True)
        p = subprocess.run([ADMIN, "--data-dir", cls.b.data_dir, "user", "add", "coder1"],
                           input=(PASSWORD + "\n").encode(), capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        cls.b.start()
        h.wait_port(cls.admin_port, proc=cls.b.proc)
        cls.cfg_b = write_config(cls.b.data_dir, cls.pg.url)
        # A data folder where no daemon runs: spinegate-admin works on the
        # database itself.
        cls.idle_dir = tempfile.mkdtemp(prefix="sg-it-idle-")
        cls.cfg_idle = write_config(cls.idle_dir, cls.pg.url)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.a.cleanup()
            cls.b.cleanup()
        finally:
            cls.sink.stop()
            cls.pg.cleanup()
            shutil.rmtree(cls.idle_dir, ignore_errors=True)

    def test_1_reject_listed_everywhere_shown_resent(self):
        reject = h.demo("04-reject-excludes1.hl7")
        self.assertEqual(h.ack_code(h.mllp_send(self.a.mllp_port, reject)), "AE")
        # Listed through B's daemon and with no daemon at all: one worklist.
        via_b = items(self.cfg_b)
        direct = items(self.cfg_idle)
        self.assertEqual([i["control_id"] for i in via_b], ["DEMO0004"])
        self.assertEqual(via_b, direct)
        it = via_b[0]
        self.assertEqual((it["state"], it["kind"], it["source"]), ("open", "reject", "mllp"))
        self.assertIn("excludes1-pair", it["rules"])
        self.assertIn("admin socket: list by", self.b.logtext())
        # The filters.
        self.assertEqual(len(items(self.cfg_idle, "--rule", "excludes1-pair")), 1)
        self.assertEqual(items(self.cfg_idle, "--rule", "no-such-rule"), [])
        self.assertEqual(items(self.cfg_idle, "--source", "http"), [])
        self.assertEqual(len(items(self.cfg_b, "--source", "mllp", "--state", "open")), 1)
        self.assertEqual(items(self.cfg_b, "--state", "resolved"), [])
        self.assertEqual(items(self.cfg_b, "--since", "2999-01-01T00:00:00Z"), [])

        rc, out, err = admin(self.cfg_b, "show", str(it["id"]))
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        at = [n for n, l in enumerate(lines) if l.startswith("DG1(1)\t")][0]
        self.assertIn("^ DG1(1)-3 excludes1-pair reject", lines[at + 1])
        rc, _, _ = admin(self.cfg_idle, "show", "999999")
        self.assertEqual(rc, 2)

        # As stored: rejected again by the rules, nothing queued.
        rc, out, _ = admin(self.cfg_b, "resend", str(it["id"]))
        self.assertEqual(rc, 1, out)
        self.assertEqual(item(self.cfg_idle, "DEMO0004")["state"], "open")

        # Corrected (Q76.2 dropped): judged, queued, delivered; resent, linked.
        fixed = b"\r".join(s for s in reject.split(b"\r")
                           if s and not s.startswith(b"DG1|2|")) + b"\r"
        rc, out, err = admin(self.cfg_b, "resend", str(it["id"]), "-", "--note",
                             "Q76.2 not documented", stdin=fixed)
        self.assertEqual(rc, 0, out + err)
        h.wait_for(lambda: "DEMO0004" in self.sink.control_ids(), 10, "the resent message")
        self.assertNotIn("Q76.2", self.sink.messages()[-1])
        resent = item(self.cfg_idle, "DEMO0004")
        self.assertEqual(resent["state"], "resent")
        self.assertEqual(resent["note"], "Q76.2 not documented")
        self.assertTrue(resent["changed_by"])
        self.assertRegex(resent["link"], r"^queue:\d+$")
        row = int(resent["link"].split(":")[1])
        self.assertGreater(row, it.get("msg_id", 0) or 0)
        # Delivered: its row left the queue.
        h.wait_for(lambda: self.pg.psql("SELECT count(*) FROM spinegate_msgs WHERE id=%d"
                                        % row).strip() == "0", 10, "the resent row delivered")
        rc, _, _ = admin(self.cfg_idle, "resend", str(it["id"]), "-", stdin=fixed)
        self.assertEqual(rc, 1)  # not open any more

    def test_2_dead_letter_requeued(self):
        type(self).refuse = True
        for cid in ("POISON01", "NEXT0001"):
            ack = h.mllp_send(self.b.mllp_port, dft(cid, ["J20.9"]))
            self.assertEqual(h.ack_code(ack), "AA")
        h.wait_for(lambda: "NEXT0001" in self.sink.control_ids(), 20, "the feed going on")
        dead = h.wait_for(lambda: items(self.cfg_b, "--kind", "dead"), 20, "the dead letter")
        self.assertEqual([i["control_id"] for i in dead], ["POISON01"])
        self.assertEqual(dead[0]["state"], "open")
        self.assertIn("AR", dead[0]["reason"])
        refused = self.sink.control_ids().count("POISON01")
        self.assertEqual(refused, 3)  # downstream-reject-retries
        dead_row = self.pg.psql("SELECT id, state FROM spinegate_msgs WHERE"
                                " convert_from(control_id, 'UTF8')='POISON01'").split()
        self.assertEqual(len(dead_row), 1, dead_row)
        dead_id, dead_state = dead_row[0].split("|")
        self.assertIn(dead_state, ("3", "4"))

        # Requeued with no daemon in between: the lease holder takes it at
        # once (NOTIFY), whichever instance that is.
        type(self).refuse = False
        rc, out, err = admin(self.cfg_idle, "requeue", str(dead[0]["id"]))
        self.assertEqual(rc, 0, out + err)
        h.wait_for(lambda: self.sink.control_ids().count("POISON01") == refused + 1, 10,
                   "the requeued message delivered")
        again = item(self.cfg_b, "POISON01")
        self.assertEqual(again["state"], "requeued")
        self.assertRegex(again["link"], r"^queue:\d+$")
        self.assertGreater(int(again["link"].split(":")[1]), int(dead_id))
        # The dead row is no longer the only copy: dead-lettered, pruned in time.
        self.assertEqual(self.pg.psql("SELECT state FROM spinegate_msgs WHERE id=%s"
                                      % dead_id).strip(), "4")
        rc, _, _ = admin(self.cfg_b, "requeue", str(dead[0]["id"]))
        self.assertEqual(rc, 1)  # not open any more
        # Only a dead letter is requeued.
        self.assertEqual(h.ack_code(h.mllp_send(self.a.mllp_port, h.demo(
            "04-reject-excludes1.hl7").replace(b"DEMO0004", b"REJ00002"))), "AE")
        rc, _, _ = admin(self.cfg_idle, "requeue", str(item(self.cfg_idle, "REJ00002")["id"]))
        self.assertEqual(rc, 1)

    def test_3_resolve_stats_prune(self):
        self.assertEqual(h.ack_code(h.mllp_send(self.b.mllp_port, h.demo(
            "04-reject-excludes1.hl7").replace(b"DEMO0004", b"REJ00003"))), "AE")
        self.assertEqual(h.ack_code(h.mllp_send(self.a.mllp_port, h.demo(
            "04-reject-excludes1.hl7").replace(b"DEMO0004", b"REJ00004"))), "AE")
        it = item(self.cfg_b, "REJ00003")
        rc, out, err = admin(self.cfg_b, "resolve", str(it["id"]), "--note", "payer accepts")
        self.assertEqual(rc, 0, out + err)
        done = item(self.cfg_idle, "REJ00003")
        self.assertEqual((done["state"], done["note"]), ("resolved", "payer accepts"))
        self.assertTrue(done["changed_by"])
        rc, _, _ = admin(self.cfg_idle, "resolve", str(it["id"]), "--note", "again")
        self.assertEqual(rc, 1)

        for cfg in (self.cfg_b, self.cfg_idle):
            rc, out, err = admin(cfg, "stats", "--json")
            self.assertEqual(rc, 0, err)
            st = json.loads(out)
            self.assertEqual(st["states"], {"open": 2, "resent": 1, "requeued": 1,
                                            "resolved": 1}, st)
            self.assertEqual(st["kinds"], {"reject": 4, "dead": 1}, st)
            self.assertEqual(st["inbox"], 0)
            self.assertEqual(st["queue"]["hl7"]["pending"], 0, st)
            self.assertEqual(st["queue"]["hl7"]["dead"], 1, st)  # the requeued dead row
        rc, text, _ = admin(self.cfg_idle, "stats")
        self.assertIn("queue hl7: 0 pending, 1 dead", text)

        # Everything made a year old: prune takes what is done, never what is open.
        self.pg.psql("UPDATE spinegate_worklist SET received_ms=1,"
                     " changed_ms=CASE WHEN changed_ms IS NULL THEN NULL ELSE 1 END")
        rc, out, err = admin(self.cfg_idle, "prune")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), "3 items pruned")
        left = items(self.cfg_b)
        self.assertEqual(sorted(i["control_id"] for i in left), ["REJ00002", "REJ00004"])
        self.assertEqual({i["state"] for i in left}, {"open"})
        rc, out, _ = admin(self.cfg_b, "prune")
        self.assertEqual(out.strip(), "0 items pruned")

    def test_4_web_page_lists_every_instance(self):
        base = "http://127.0.0.1:%d" % self.admin_port
        status, head, _ = curl(base + "/login", "-X", "POST", "--data-binary",
                               "user=coder1&password=" + PASSWORD.replace(" ", "+"))
        self.assertIn(status, (302, 303), head)
        cookie = [l.split(":", 1)[1].strip().split(";")[0] for l in head.split("\r\n")
                  if l.lower().startswith("set-cookie:")][0]
        status, _, body = curl(base + "/api/items?state=open", "-H", "Cookie: " + cookie)
        self.assertEqual(status, 200, body)
        listed = json.loads(body)
        ids = sorted(i["control_id"] for i in listed["items"])
        self.assertEqual(ids, sorted(i["control_id"] for i in items(self.cfg_idle, "--state",
                                                                      "open")))
        self.assertIn("REJ00004", ids)  # rejected by instance A, listed by B's page
        one = [i for i in listed["items"] if i["control_id"] == "REJ00004"][0]
        status, _, body = curl(base + "/api/items/%d" % one["id"], "-H", "Cookie: " + cookie)
        self.assertEqual(status, 200, body)
        self.assertIn("REJ00004", json.loads(body)["message"])
        # A change through the page: resolved, seen by spinegate-admin.
        status, _, body = curl(base + "/api/session", "-H", "Cookie: " + cookie)
        csrf = json.loads(body)["csrf"]
        status, _, body = curl(base + "/api/items/%d/resolve" % one["id"], "-X", "POST",
                               "-H", "Cookie: " + cookie, "-H", "X-CSRF-Token: " + csrf,
                               "-H", "Content-Type: application/json",
                               "--data-binary", json.dumps({"note": "fixed at the source"}))
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["state"], "resolved")
        done = item(self.cfg_idle, "REJ00004")
        self.assertEqual((done["state"], done["changed_by"], done["note"]),
                         ("resolved", "coder1", "fixed at the source"))
        # Without a session: nothing.
        status, _, _ = curl(base + "/api/items")
        self.assertIn(status, (302, 303, 401))

    def test_5_a_slow_database_read_does_not_hold_the_claims(self):
        """The page reads the worklist on the thread pool: while a read waits
        on a database that does not answer, B still answers its senders at
        once. (The worklist's server processes are stopped with SIGSTOP; the
        queue's own connections are left alone.)"""
        base = "http://127.0.0.1:%d" % self.admin_port
        status, head, _ = curl(base + "/login", "-X", "POST", "--data-binary",
                               "user=coder1&password=" + PASSWORD.replace(" ", "+"))
        cookie = [l.split(":", 1)[1].strip().split(";")[0] for l in head.split("\r\n")
                  if l.lower().startswith("set-cookie:")][0]
        pids = [int(p) for p in self.pg.psql(
            "SELECT pid FROM pg_stat_activity WHERE application_name='spinegate-worklist'"
        ).split()]
        self.assertGreaterEqual(len(pids), 3)  # A's and B's admin sockets, B's page (two)
        page = {}

        def read_page():
            t0 = time.monotonic()
            page["status"], _, page["body"] = curl(base + "/api/items", "-H",
                                                   "Cookie: " + cookie)
            page["took"] = time.monotonic() - t0
            page["end"] = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            reader = threading.Thread(target=read_page)
            reader.start()
            time.sleep(0.3)  # the read is waiting for its answer now
            t0 = time.monotonic()
            accept = h.demo("01-accept-no-spine-codes.hl7")
            ack = h.mllp_send(self.b.mllp_port, accept.replace(h.msh10(accept).encode(),
                                                               b"SLOWREAD1"))
            acked = time.monotonic()
            time.sleep(1.5)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        reader.join(30)
        self.assertEqual(h.ack_code(ack), "AA")
        self.assertEqual(page["status"], 200, page["body"])
        self.assertGreater(page["took"], 1.5)  # it did wait
        self.assertLess(acked - t0, 3.0)  # (blocked, it would wait for the SIGCONT)
        self.assertLess(acked, page["end"])  # answered while the page's read waited
        h.wait_for(lambda: "SLOWREAD1" in self.sink.control_ids(), 10, "the message at billing")
    def test_6_database_restarted_worklist_connections_come_back(self):
        """The worklist connections of B's socket and page are broken by a
        restart of the server: the next command and the next page read
        connect again by themselves and succeed, at the first try."""
        base = "http://127.0.0.1:%d" % self.admin_port
        status, head, _ = curl(base + "/login", "-X", "POST", "--data-binary",
                               "user=coder1&password=" + PASSWORD.replace(" ", "+"))
        cookie = [l.split(":", 1)[1].strip().split(";")[0] for l in head.split("\r\n")
                  if l.lower().startswith("set-cookie:")][0]
        before = items(self.cfg_b)
        self.assertTrue(before)
        self.pg.stop()
        self.pg.start()
        self.assertEqual(items(self.cfg_b), before)  # B's socket, its connection made again
        status, _, body = curl(base + "/api/items", "-H", "Cookie: " + cookie)
        self.assertEqual(status, 200, body)
        self.assertEqual(sorted(i["id"] for i in json.loads(body)["items"]),
                         sorted(i["id"] for i in before))
        self.assertIn("admin socket: list by", self.b.logtext())


if __name__ == "__main__":
    h.run(__name__)
