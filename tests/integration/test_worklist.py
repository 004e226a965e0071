"""test_worklist.py - the coders' worklist end to end: the real daemon takes
a rejected HL7 message (python3-hl7's MLLP client) and a rejected FHIR Claim
(curl); spinegate-admin lists them (JSON Lines, filters), shows one with its
finding marked, resends a corrected message that billing (a real MLLP sink)
then receives, resolves one, and requeues a dead letter (billing's AE) with
the daemon running and with it stopped.

With the daemon running, spinegate-admin goes through its socket
DATA-DIR/admin.sock: SocketTest runs the same commands both ways and proves
which way they went (a resent message delivered long before the inbox poll,
stats with destination state only the daemon knows), and throws garbage, a
huge and a slow request, and a stranger's request at the socket.
"""
import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import unittest

import harness as h
from test_fhir import curl, load, with_dx
from test_mllp import dft

ADMIN = os.path.join(h.TOP_BUILDDIR, "spinegate-admin")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def admin(d, *args, stdin=None):
    """Runs spinegate-admin on d's data folder; returns (status, stdout)."""
    p = subprocess.run([ADMIN, "--data-dir", d.data_dir] + list(args), input=stdin,
                       capture_output=True, timeout=60)
    if p.stderr and (b"Sanitizer" in p.stderr or b"runtime error:" in p.stderr):
        raise AssertionError(p.stderr.decode())
    return p.returncode, p.stdout.decode()


def items(d, *filters):
    rc, out = admin(d, "list", "--json", *filters)
    assert rc == 0, (rc, out)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def item(d, cid):
    found = [i for i in items(d) if i["control_id"] == cid]
    assert len(found) == 1, found
    return found[0]


class RejectsTest(unittest.TestCase):
    """A rejected HL7 message and a rejected FHIR Claim through the worklist."""

    def setUp(self):
        self.billing = h.MllpSink().start()
        self.fhir = h.HttpSink().start()
        self.d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % self.billing.port,
                          "--downstream-fhir", "http://127.0.0.1:%d/r4" % self.fhir.port,
                          http=True).start()

    def tearDown(self):
        self.d.cleanup()
        self.billing.stop()
        self.fhir.stop()

    def test_list_show_resend_resolve(self):
        d = self.d
        ack = h.mllp_send(d.mllp_port, h.demo("04-reject-excludes1.hl7"))
        self.assertEqual(h.ack_code(ack), "AE")
        claim = with_dx(load("spine-m4304-mri.json"), ["M43.04", "Q76.2"])
        claim["id"] = "wl-reject-1"
        status, _, body = curl(d.http_port, "/fhir/Claim", claim)
        self.assertEqual(status, 422, body)

        # The item is written with the reject's queue row: listed at once.
        listed = items(d)
        self.assertEqual([i["control_id"] for i in listed], ["DEMO0004", "wl-reject-1"])
        for i in listed:
            for key in ("id", "state", "verdict", "source", "control_id", "rules", "received"):
                self.assertIn(key, i)
            self.assertEqual(i["state"], "open")
            self.assertEqual(i["verdict"], "reject")
            self.assertIn("excludes1-pair", i["rules"])
            self.assertRegex(i["received"], RFC3339)
        hl7_item, fhir_item = listed
        self.assertEqual((hl7_item["source"], fhir_item["source"]), ("mllp", "http"))
        self.assertEqual(hl7_item["type"], "DFT^P03")
        self.assertEqual(hl7_item["refs"], {"mrn": "MRN00123", "visit": "V0001"})
        self.assertTrue(fhir_item["refs"].get("mrn", "").startswith("Patient/")
                        or fhir_item["refs"].get("mrn", "").startswith("#"), fhir_item)

        # Filters.
        self.assertEqual([i["control_id"] for i in items(d, "--source", "http")], ["wl-reject-1"])
        self.assertEqual(len(items(d, "--rule", "excludes1-pair")), 2)
        self.assertEqual(items(d, "--rule", "no-such-rule"), [])
        self.assertEqual(items(d, "--state", "resolved"), [])
        day = hl7_item["received"][:10]
        self.assertEqual(len(items(d, "--since", day)), 2)
        self.assertEqual(items(d, "--until", day), [])
        self.assertEqual(items(d, "--since", "2999-01-01T00:00:00Z"), [])
        self.assertEqual([i["control_id"] for i in items(d, "--ref", "MRN00123")], ["DEMO0004"])
        rc, _ = admin(d, "list", "--since", "yesterday")
        self.assertEqual(rc, 2)

        # show: the finding under the segment it points at.
        rc, out = admin(d, "show", str(hl7_item["id"]))
        self.assertEqual(rc, 0, out)
        lines = out.splitlines()
        at = [n for n, l in enumerate(lines) if l.startswith("DG1(1)\t")][0]
        self.assertIn("^ DG1(1)-3 excludes1-pair reject", lines[at + 1])
        self.assertTrue(lines[at + 2].startswith("DG1(2)\t"))
        rc, _ = admin(d, "show", "999")
        self.assertEqual(rc, 2)

        # The stored message as it is: rejected again, nothing queued.
        rc, out = admin(d, "resend", str(hl7_item["id"]))
        self.assertEqual(rc, 1, out)
        self.assertEqual(item(d, "DEMO0004")["state"], "open")

        # Corrected (Q76.2 dropped, newline-separated as an editor leaves
        # it): judged, queued, delivered to billing; the item resent.
        fixed = b"\n".join(s for s in h.demo("04-reject-excludes1.hl7").split(b"\r")
                           if s and not s.startswith(b"DG1|2|"))
        rc, out = admin(d, "resend", str(hl7_item["id"]), "-", "--note", "Q76.2 not documented",
                        stdin=fixed)
        self.assertEqual(rc, 0, out)
        h.wait_for(lambda: "DEMO0004" in self.billing.control_ids(), 10, "the resent message")
        got = self.billing.messages()[-1]
        self.assertNotIn("Q76.2", got)
        self.assertEqual(got.count("ZSH|"), 0)  # accepted: no stale annotation
        resent = h.wait_for(lambda: (lambda i: i if i["link"].startswith("queue:") else None)(
            item(d, "DEMO0004")), 5, "the link to the queued row")
        self.assertEqual(resent["state"], "resent")
        self.assertEqual(resent["note"], "Q76.2 not documented")
        self.assertTrue(resent["changed_by"])
        rc, _ = admin(d, "resend", str(hl7_item["id"]), "-", stdin=fixed)
        self.assertEqual(rc, 1)  # not open any more

        # resolve
        rc, out = admin(d, "resolve", str(fhir_item["id"]), "--note", "payer accepts, per J. Doe")
        self.assertEqual(rc, 0, out)
        self.assertEqual(item(d, "wl-reject-1")["state"], "resolved")
        rc, _ = admin(d, "resolve", str(fhir_item["id"]), "--note", "again")
        self.assertEqual(rc, 1)
        rc, _ = admin(d, "resolve", str(fhir_item["id"]))
        self.assertEqual(rc, 2)  # --note is required

        rc, out = admin(d, "stats", "--json")
        self.assertEqual(rc, 0, out)
        st = json.loads(out)
        self.assertEqual(st["states"], {"resent": 1, "resolved": 1})

        # Lookup references are PHI: stored, never logged.
        self.assertNotIn("MRN00123", d.logtext())
        self.assertNotIn("V0001", d.logtext())

    def test_resend_fhir_claim(self):
        d = self.d
        claim = with_dx(load("spine-m4304-mri.json"), ["M43.04", "Q76.2"])
        claim["id"] = "wl-fhir-2"
        status, _, body = curl(d.http_port, "/fhir/Claim", claim)
        self.assertEqual(status, 422, body)
        it = item(d, "wl-fhir-2")
        fixed = with_dx(load("spine-m4304-mri.json"), ["M43.04"])
        fixed["id"] = "wl-fhir-2"
        rc, out = admin(d, "resend", str(it["id"]), "-", stdin=json.dumps(fixed).encode())
        self.assertEqual(rc, 0, out)
        h.wait_for(lambda: any(b"wl-fhir-2" in r[2] for r in self.fhir.received), 10,
                   "the resent Claim at the FHIR server")
        self.assertEqual(item(d, "wl-fhir-2")["state"], "resent")


class AnnotatedTest(unittest.TestCase):
    """worklist-annotated: annotated messages become items too; accepted ones
    never do, and without the setting annotated ones do not."""

    def test_annotated_items_only_when_asked(self):
        for setting, want in ((["--worklist-annotated"], ["DEMO0003"]), ([], [])):
            d = h.Daemon(*setting).start()
            try:
                for name in ("03-annotate-site-unspecified.hl7", "01-accept-no-spine-codes.hl7"):
                    self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, h.demo(name))), "AA")
                got = items(d)
                self.assertEqual([i["control_id"] for i in got], want)
                if want:
                    self.assertEqual((got[0]["kind"], got[0]["verdict"]), ("annotate", "annotate"))
            finally:
                d.cleanup()


class DeadLetterTest(unittest.TestCase):
    """Billing refuses a message (AE): a dead letter; requeued once billing
    takes it, with the daemon running and with it stopped."""

    def test_requeue_running_and_stopped(self):
        refuse = {"on": True}
        sink = h.MllpSink(mode=lambda m: ("AE", "Guarantor account closed")
                          if "POISON" in m and refuse["on"] else "AA").start()
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % sink.port).start()
        try:
            for cid in ("POISON01", "NEXT0001"):
                self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, dft(cid, ["J20.9"]))), "AA")
            h.wait_for(lambda: "NEXT0001" in sink.control_ids(), 10, "the feed going on")
            dead = h.wait_for(lambda: items(d, "--kind", "dead"), 10, "the dead letter item")
            self.assertEqual([i["control_id"] for i in dead], ["POISON01"])
            self.assertEqual(dead[0]["state"], "open")
            self.assertIn("AE", dead[0]["reason"])
            self.assertEqual(dead[0]["verdict"], "accept")  # judged fine; billing refused it
            rc, _ = admin(d, "requeue")
            self.assertEqual(rc, 2)  # no ids, filters or --all: refused

            # Running: billing takes it now; requeued by id.
            refuse["on"] = False
            rc, out = admin(d, "requeue", str(dead[0]["id"]))
            self.assertEqual(rc, 0, out)
            h.wait_for(lambda: sink.control_ids().count("POISON01") == 2, 10,
                       "the requeued message delivered")
            self.assertEqual(item(d, "POISON01")["state"], "requeued")
            rc, _ = admin(d, "requeue", str(dead[0]["id"]))
            self.assertEqual(rc, 1)  # not open any more

            # Stopped: dead-letter another, stop, requeue by filter, start.
            refuse["on"] = True
            self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, dft("POISON02", ["J20.9"]))), "AA")
            h.wait_for(lambda: [i for i in items(d, "--kind", "dead", "--state", "open")], 10,
                       "the second dead letter")
            d.stop()
            refuse["on"] = False
            rc, out = admin(d, "requeue", "--source", "mllp")
            self.assertEqual(rc, 0, out)
            self.assertIn("requeued", out)
            rc, out = admin(d, "stats", "--json")
            self.assertEqual(json.loads(out)["inbox"], 1)
            self.assertEqual(len(items(d, "--state", "requeued")), 2)
            before = len(sink.control_ids())
            d2 = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % sink.port,
                          data_dir=d.data_dir).start()
            try:
                h.wait_for(lambda: "POISON02" in sink.control_ids()[before:], 10,
                           "the message requeued while the daemon was stopped")
                rc, out = admin(d2, "stats", "--json")
                self.assertEqual(json.loads(out)["inbox"], 0)
                self.assertTrue(item(d2, "POISON02")["link"].startswith("queue:"))
            finally:
                d2.stop()  # same folder and log: d.cleanup() checks and removes them
        finally:
            d.cleanup()
            sink.stop()


def raw_request(path, data, shutdown=True, timeout=30):
    """Sends bytes to the admin socket; returns the answer's frames as
    [(type, bytes)] (the exit status frame last)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(timeout)
        c.connect(path)
        try:
            c.sendall(data)
            if shutdown:
                c.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all sent: the answer is still there
        got = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
    frames = []
    while len(got) >= 5:
        n = struct.unpack(">I", got[1:5])[0]
        frames.append((got[0:1], got[5:5 + n]))
        got = got[5 + n:]
    return frames


class SocketTest(unittest.TestCase):
    """spinegate-admin through the daemon's socket, and without it."""

    def setUp(self):
        self.billing = h.MllpSink().start()
        self.slow_poll = ["--downstream-mllp", "127.0.0.1:%d" % self.billing.port,
                          "--inbox-poll", "60s"]
        self.d = h.Daemon(*self.slow_poll).start()
        self.sock = os.path.join(self.d.data_dir, "admin.sock")

    def tearDown(self):
        self.d.cleanup()
        self.billing.stop()

    def reject(self, cid):
        ack = h.mllp_send(self.d.mllp_port, dft(cid, ["M43.04", "Q76.2"]))
        self.assertEqual(h.ack_code(ack), "AE")
        return item(self.d, cid)["id"]

    def test_same_commands_running_and_stopped(self):
        d = self.d
        self.assertEqual(stat.S_IMODE(os.stat(self.sock).st_mode), 0o600)
        first, second = self.reject("SOCK0001"), self.reject("SOCK0002")
        fixed = {cid: dft(cid, ["M43.04"]).encode() for cid in ("SOCK0001", "SOCK0002")}

        def snapshot():
            """What the read-only commands print, with their exit codes."""
            return {"list": admin(d, "list", "--json"), "list-text": admin(d, "list"),
                    "rule": admin(d, "list", "--json", "--rule", "excludes1-pair"),
                    "show": admin(d, "show", str(second)),
                    "show-json": admin(d, "show", str(second), "--json"),
                    "unknown": admin(d, "show", "999"),
                    "rejected": admin(d, "resend", str(second))}

        running = snapshot()
        self.assertEqual(running["unknown"][0], 2)
        self.assertEqual(running["rejected"][0], 1)  # the stored message fails again
        self.assertEqual(len(running["list"][1].splitlines()), 2)
        self.assertIn("admin socket: list by", d.logtext())
        self.assertIn("admin socket: show by", d.logtext())

        # stats: the daemon adds each destination's live state.
        rc, out = admin(d, "stats", "--json")
        self.assertEqual(rc, 0, out)
        live = json.loads(out)
        self.assertEqual(live["destinations"]["hl7"]["state"], "ok")
        self.assertIn("depth", live["destinations"]["hl7"])
        rc, text = admin(d, "stats")
        self.assertIn("destination hl7: ok", text)

        # resend: judged by the daemon and handed to the deliverer at once,
        # though the inbox is looked at only every 60s.
        t0 = time.monotonic()
        rc, out = admin(d, "resend", str(first), "-", "--note", "fixed", stdin=fixed["SOCK0001"])
        self.assertEqual(rc, 0, out)
        self.assertIn("resent: queued for hl7", out)
        h.wait_for(lambda: "SOCK0001" in self.billing.control_ids(), 10, "the resent message")
        took = time.monotonic() - t0
        self.assertLess(took, 5.0, "delivered in %.2fs: the inbox poll, not the socket" % took)
        sys.stderr.write("resend through the socket delivered in %.3fs\n" % took)
        rc, _ = admin(d, "resend", str(first), "-", stdin=fixed["SOCK0001"])
        self.assertEqual(rc, 1)  # resent already: refused, as without a daemon
        rc, out = admin(d, "resolve", str(first), "--note", "x")
        self.assertEqual(rc, 1, out)
        running_after = snapshot()

        # Stopped: the socket is gone and the same commands answer the same.
        d.stop()
        self.assertFalse(os.path.exists(self.sock))
        stopped = snapshot()
        self.assertEqual(stopped, running_after)
        rc, out = admin(d, "stats", "--json")
        offline = json.loads(out)
        self.assertNotIn("destinations", offline)
        self.assertEqual(set(offline), set(live) - {"destinations"})
        self.assertEqual(offline["states"], {"open": 1, "resent": 1})
        rc, out = admin(d, "resend", str(second), "-", stdin=fixed["SOCK0002"])
        self.assertEqual(rc, 0, out)
        self.assertEqual(json.loads(admin(d, "stats", "--json")[1])["inbox"], 1)
        rc, out = admin(d, "user", "unlock", "ann")
        self.assertEqual(rc, 0, out)
        self.assertIn("no account is locked", out)

        # Started again: the inbox is taken at open.
        d2 = h.Daemon(*self.slow_poll, data_dir=d.data_dir).start()
        try:
            h.wait_for(lambda: "SOCK0002" in self.billing.control_ids(), 10,
                       "the message resent while the daemon was stopped")
        finally:
            d2.stop()

    def test_hostile_requests(self):
        d = self.d
        # Garbage: an error, a log line, and the daemon goes on answering.
        frames = raw_request(self.sock, b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(frames[-1], (b"x", b"\x02"))
        self.assertIn(b"refused the request", frames[0][1])
        frames = raw_request(self.sock, struct.pack(">I", 9) + b"not json!")
        self.assertEqual(frames[-1], (b"x", b"\x02"))
        bad = json.dumps({"op": "resolve", "ids": [1]}).encode()  # no note
        frames = raw_request(self.sock, struct.pack(">I", len(bad)) + bad)
        self.assertEqual(frames[-1], (b"x", b"\x02"))
        bad = json.dumps({"op": "list", "ids": "all"}).encode()
        frames = raw_request(self.sock, struct.pack(">I", len(bad)) + bad)
        self.assertEqual(frames[-1], (b"x", b"\x02"))
        self.assertEqual(frames, raw_request(self.sock, struct.pack(">I", len(bad)) + bad))
        self.assertIn("admin socket: refused a request", d.logtext())
        # Huge: a message past the largest the daemon takes is refused as it arrives.
        head = json.dumps({"op": "resend", "ids": [1], "has_input": True}).encode()
        big = struct.pack(">I", len(head)) + head + b"A" * (12 * 1024 * 1024)  # past max-body-size (8M)
        frames = raw_request(self.sock, big)
        self.assertEqual(frames[-1], (b"x", b"\x02"))
        self.assertIn(b"too large", frames[0][1])
        # Slow: a request that never ends waits alone; others are served.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
            slow.settimeout(30)
            slow.connect(self.sock)
            slow.sendall(b"\x00\x00")
            t0 = time.monotonic()
            rc, out = admin(d, "stats")
            self.assertEqual(rc, 0, out)
            self.assertLess(time.monotonic() - t0, 5)
            answer = slow.recv(4096)
            self.assertIn(b"not sent within", answer)
        # A stranger (another uid) is refused even when the modes of the
        # socket and its folder would let them in.
        folder_mode = stat.S_IMODE(os.stat(d.data_dir).st_mode)
        self.assertEqual(folder_mode, 0o700)
        os.chmod(d.data_dir, 0o711)
        os.chmod(self.sock, 0o666)
        req = json.dumps({"op": "list"}).encode()
        code = ("import socket,struct,sys\n"
                "c=socket.socket(socket.AF_UNIX); c.connect(sys.argv[1])\n"
                "r=sys.argv[2].encode(); c.sendall(struct.pack('>I',len(r))+r)\n"
                "c.shutdown(socket.SHUT_WR); sys.stdout.buffer.write(c.recv(4096))\n")
        p = subprocess.run([sys.executable, "-c", code, self.sock, req.decode()],
                           capture_output=True, timeout=30,
                           preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
        if os.getuid() == 0:
            self.assertIn(b"not the daemon's user or root", p.stdout, p.stderr)
            self.assertIn("not the daemon's user or root", d.logtext())
        os.chmod(self.sock, 0o600)
        os.chmod(d.data_dir, folder_mode)
        # Still serving, and nothing of it crashed the daemon.
        rc, out = admin(d, "list", "--json")
        self.assertEqual(rc, 0, out)
        self.assertIsNone(d.proc.poll())

    def test_stale_socket_replaced(self):
        d = self.d
        d.kill9()
        self.assertTrue(os.path.exists(self.sock))  # left behind by the crash
        rc, out = admin(d, "list")  # nobody answers: the data folder directly
        self.assertEqual(rc, 0, out)
        d2 = h.Daemon(*self.slow_poll, data_dir=d.data_dir).start()
        try:
            self.assertIn("stopped uncleanly: replaced", d2.logtext())
            rc, out = admin(d2, "stats", "--json")
            self.assertIn("destinations", json.loads(out))
        finally:
            d2.stop()


if __name__ == "__main__":
    h.run(__name__)
