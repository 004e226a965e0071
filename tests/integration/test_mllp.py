"""test_mllp.py - the MLLP daemon end to end: the real spinegate process,
python3-hl7's MLLP client and a raw socket client as senders, and a real
downstream MLLP listener (python3-hl7's asyncio server) as billing. Also
spinegate-check on the same HL7 messages where the daemon's settings have a
command-line twin (--adt) or the check prints what /metrics counts."""
import calendar
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import hl7.client

import harness as h


def dft(cid, dx, cpt="72146", ver="2.5", text="Spondylolysis, thoracic region", date="20260115",
        dg1=True):
    """A DFT^P03 of an outpatient visit on date (YYYYMMDD) with one FT1 and,
    unless dg1 is False, one DG1 per diagnosis code (first is principal).
    Without DG1 the codes travel in FT1-19 only, one repetition each."""
    segs = ["MSH|^~\\&|CHARGECAP|GENHOSP|SPINEGATE|BILLING|%s083000||DFT^P03^DFT_P03|%s|P|%s" % (date, cid, ver),
            "EVN|P03|%s083000" % date,
            "PID|1||MRN1^^^GENHOSP^MR||TESTPATIENT^ALEX||19800412|F",
            "PV1|1|O|SPINE^101^1"]
    ft1_dx = (dx[0] + "^^I10") if dg1 else "~".join(code + "^^I10" for code in dx)
    segs.append("FT1|1|||%s||CG|%s^^C4|||1|||||||||%s|||||%s^^C4" % (date, cpt, ft1_dx, cpt))
    if dg1:
        for i, code in enumerate(dx, 1):
            segs.append("DG1|%d||%s^%s^I10|||F|||||||||%d" % (i, code, text, 1 if i == 1 else 2))
    return "\r".join(segs) + "\r"


def adt(cid, dx, date="20260115", event="A01"):
    """An ADT (admission by default) with one admitting DG1 per code: working
    diagnoses, not a bill."""
    segs = ["MSH|^~\\&|ADTSYS|GENHOSP|SPINEGATE|BILLING|%s083000||ADT^%s^ADT_A01|%s|P|2.5" % (date, event, cid),
            "EVN|%s|%s083000" % (event, date),
            "PID|1||MRN1^^^GENHOSP^MR||TESTPATIENT^ALEX||19800412|F",
            "PV1|1|I|SPINE^101^1" + "|" * 41 + "%s080000" % date]
    for i, code in enumerate(dx, 1):
        segs.append("DG1|%d||%s^Spondylolysis, thoracic region^I10|||A" % (i, code))
    return "\r".join(segs) + "\r"


def demo_dated(name, date, cid):
    """A demo message with every date of its outpatient visit (2026-11-16,
    tools/make-demo.py) moved to date (YYYYMMDD) and a new control id."""
    msg = h.demo(name).decode()
    old_cid = h.msh10(msg)
    return msg.replace("20261116", date).replace(old_cid, cid)


def zsg_segments(body):
    return [s.split("|") for s in body.split("\r") if s.startswith("ZSG|")]


def err_segments(ack):
    return [s for s in ack.split("\r") if s.startswith("ERR|")]


def http_get(port, path):
    """GET over plain HTTP with curl (a real client); returns the body text."""
    r = subprocess.run(["curl", "-s", "--max-time", "10", "http://127.0.0.1:%d%s" % (port, path)],
                       capture_output=True, text=True, timeout=30)
    return r.stdout


def metric(text, name, labels):
    """The value of one sample of the Prometheus text, or None if absent."""
    m = re.search(r"^%s\{%s\} (\d+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return int(m.group(1)) if m else None


class Basic(unittest.TestCase):
    """Verdicts and ACKs, with the outbox as the embedded default sink."""

    @classmethod
    def setUpClass(cls):
        cls.d = h.Daemon("--max-message-size", "64K").start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def test_accept_goes_to_outbox_unchanged(self):
        msg = h.demo("01-accept-no-spine-codes.hl7")
        ack = h.mllp_send(self.d.mllp_port, msg)
        self.assertEqual(h.ack_code(ack), "AA", ack)
        self.assertIn("MSA|AA|DEMO0001", ack)
        name = h.wait_for(lambda: [n for n in self.d.outbox() if "DEMO0001" in n], what="outbox file")[0]
        self.assertEqual(self.d.read("outbox", name).rstrip(b"\r"), msg.rstrip(b"\r"))

    def test_ack_swaps_sender_and_receiver(self):
        ack = h.mllp_send(self.d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"))
        msh = ack.split("\r")[0].split("|")
        self.assertEqual(msh[2:6], ["SPINEGATE", "BILLING", "CHARGECAP", "GENHOSP"])
        self.assertEqual(msh[8], "ACK^P03^ACK")
        self.assertEqual(msh[10], "P")
        self.assertEqual(msh[11], "2.5")

    def test_ack_time_is_now_in_utc(self):
        # MSH-7 of the ACK is the time it was made, in UTC, to the second
        # (the daemon formats it once a second: a later ACK has a later one).
        def ack_time():
            ack = h.mllp_send(self.d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"))
            ts = ack.split("\r")[0].split("|")[6]
            self.assertRegex(ts, r"^\d{14}\+0000$")
            return calendar.timegm(time.strptime(ts[:14], "%Y%m%d%H%M%S"))
        first = ack_time()
        self.assertLessEqual(abs(first - time.time()), 2)
        time.sleep(1.1)
        self.assertGreater(ack_time(), first)

    def test_annotate_forwards_with_findings(self):
        ack = h.mllp_send(self.d.mllp_port, h.demo("03-annotate-site-unspecified.hl7"))
        self.assertEqual(h.ack_code(ack), "AA", ack)
        name = h.wait_for(lambda: [n for n in self.d.outbox() if "DEMO0003" in n], what="outbox file")[0]
        body = self.d.read("outbox", name).decode()
        self.assertIn("\rZSG|", body)
        self.assertIn("M43.00", body)
        # The original segments are kept, byte for byte, before the findings.
        original = h.demo("03-annotate-site-unspecified.hl7").decode().rstrip("\r").split("\r")
        for seg in original:
            self.assertIn(seg, body.split("\r"))

    def test_reject_answers_with_err_and_is_not_forwarded(self):
        ack = h.mllp_send(self.d.mllp_port, h.demo("04-reject-excludes1.hl7"))
        self.assertIn(h.ack_code(ack), ("AE", "AR"), ack)
        errs = [s for s in ack.split("\r") if s.startswith("ERR|")]
        self.assertTrue(errs, ack)
        self.assertTrue(any("Q76.2" in e for e in errs), errs)
        self.assertTrue(any("DG1" in e for e in errs), errs)
        h.wait_for(lambda: [n for n in self.d.folder("reject") if "DEMO0004" in n], what="reject copy")
        time.sleep(0.3)
        self.assertFalse([n for n in self.d.outbox() if "DEMO0004" in n])

    def test_seventh_character_rejected(self):
        ack = h.mllp_send(self.d.mllp_port, h.demo("05-reject-seventh-character.hl7"))
        self.assertIn(h.ack_code(ack), ("AE", "AR"), ack)

    def test_unparseable_gets_ar_and_connection_stays(self):
        c = h.RawClient(self.d.mllp_port)
        c.send(c.frame(b"garbage that is not HL7"))
        ack = c.read_frame()
        self.assertEqual(h.ack_code(ack), "AR", ack)
        self.assertIn("ERR|", ack)
        c.send(c.frame(h.demo("01-accept-no-spine-codes.hl7")))
        self.assertEqual(h.ack_code(c.read_frame()), "AA")
        c.close()

    def test_oversized_gets_ar_with_control_id(self):
        c = h.RawClient(self.d.mllp_port)
        big = dft("BIG0001", ["M43.04"]) + "NTE|1||" + "x" * (100 * 1024) + "\r"
        c.send(c.frame(big))
        ack = c.read_frame()
        self.assertEqual(h.ack_code(ack), "AR", ack)
        self.assertIn("BIG0001", ack)
        c.send(c.frame(dft("SMALL0001", ["J20.9"])))
        self.assertEqual(h.ack_code(c.read_frame()), "AA")
        c.close()

    def test_split_and_merged_frames(self):
        c = h.RawClient(self.d.mllp_port)
        frames = b"".join(c.frame(dft("MERGE%04d" % i, ["J20.9"])) for i in range(5))
        c.send(b"noise before a frame")  # dropped with a log line
        c.send(frames[:3])
        time.sleep(0.05)
        for i in range(3, len(frames), 7):  # then in 7-byte pieces
            c.send(frames[i:i + 7])
        acks = [c.read_frame() for _ in range(5)]
        self.assertEqual([a.split("\r")[1].split("|")[2] for a in acks], ["MERGE%04d" % i for i in range(5)])
        c.close()

    def test_hundred_connections(self):
        results = [None] * 100

        def one(i):
            try:
                results[i] = h.ack_code(h.mllp_send(self.d.mllp_port, dft("CONN%04d" % i, ["M43.16"])))
            except Exception as e:  # noqa: BLE001 - reported through results
                results[i] = repr(e)

        clients = [socket.create_connection(("127.0.0.1", self.d.mllp_port)) for _ in range(100)]
        threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for s in clients:
            s.close()
        self.assertEqual(results, ["AA"] * 100)

    def test_not_a_claim_passes_through(self):
        oru = h.demo("01-accept-no-spine-codes.hl7").replace(b"DFT^P03^DFT_P03", b"ORU^R01^ORU_R01").replace(b"DEMO0001", b"ORU0001")
        self.assertEqual(h.ack_code(h.mllp_send(self.d.mllp_port, oru)), "AA")

    def test_enhanced_mode_commit_ack(self):
        msg = dft("ENH0001", ["J20.9"]).replace("|P|2.5", "|P|2.5|||AL|NE")
        self.assertEqual(h.ack_code(h.mllp_send(self.d.mllp_port, msg)), "CA")

    def test_no_patient_data_in_log(self):
        h.mllp_send(self.d.mllp_port, h.demo("04-reject-excludes1.hl7"))
        # The verdict line may be written just after the ACK left.
        h.wait_for(lambda: "DEMO0004" in self.d.logtext(), 5, "the verdict line in the log")
        log = self.d.logtext()
        for phi in ("TESTPATIENT", "MRN00123", "19800412", "MAIN ST"):
            self.assertNotIn(phi, log)


def enhanced(message, accept_ack, app_ack):
    """message (str or bytes) with MSH-15/MSH-16 set: enhanced mode."""
    text = message.decode() if isinstance(message, bytes) else message
    first, rest = text.split("\r", 1)
    fields = first.split("|")
    fields += [""] * (17 - len(fields))
    fields[14], fields[15] = accept_ack, app_ack
    return "|".join(fields) + "\r" + rest


def send_read_acks(port, messages, expect, quiet=0.5):
    """Sends messages on one connection with python3-hl7's MLLP client and
    returns the frames that come back: `expect` of them, then none for
    `quiet` seconds (so an extra ACK is caught, not missed)."""
    with hl7.client.MLLPClient("127.0.0.1", port) as c:
        c.socket.settimeout(10)
        buf = b""
        for m in messages:
            c.socket.sendall(b"\x0b" + (m if isinstance(m, bytes) else m.encode()) + b"\x1c\r")
        while len(re.findall(rb"\x0b(.*?)\x1c\r", buf, re.S)) < expect:
            more = c.socket.recv(65536)
            if not more:
                break
            buf += more
        c.socket.settimeout(quiet)
        try:
            buf += c.socket.recv(65536)
        except socket.timeout:
            pass
        return [f.decode() for f in re.findall(rb"\x0b(.*?)\x1c\r", buf, re.S)]


def seg(ack, sid, n=1):
    """Fields of the n-th segment sid of an ACK (fields[0] is the id)."""
    found = [x.split("|") for x in ack.split("\r") if x.startswith(sid + "|")]
    return found[n - 1] if len(found) >= n else None


class Acks(unittest.TestCase):
    """ACK meaning (docs/hl7-acks.md): table 0357 codes, original mode, and
    enhanced mode's accept ACK followed by the application ACK."""

    @classmethod
    def setUpClass(cls):
        cls.d = h.Daemon().start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def test_original_mode_err3(self):
        ack = h.mllp_send(self.d.mllp_port, h.demo("03-annotate-site-unspecified.hl7"))
        self.assertEqual(h.ack_code(ack), "AA", ack)
        err = seg(ack, "ERR")
        self.assertEqual(err[3], "0^Message accepted^HL70357", ack)
        self.assertIn(err[4], ("W", "I"))
        self.assertEqual(err[5], "site-unspecified")
        ack = h.mllp_send(self.d.mllp_port, h.demo("10-reject-malformed-code.hl7"))
        self.assertEqual(h.ack_code(ack), "AE", ack)
        errs = [e.split("|") for e in err_segments(ack)]
        rejects = [e for e in errs if e[4] == "E"]
        self.assertTrue(rejects, ack)
        for e in rejects:
            self.assertEqual(e[3], "103^Table value not found^HL70357", ack)
        self.assertNotIn("207^", ack)
        ack = h.mllp_send(self.d.mllp_port, h.demo("04-reject-excludes1.hl7"))
        self.assertEqual(h.ack_code(ack), "AE", ack)
        self.assertIn("|103^Table value not found^HL70357|E|excludes1-pair|", ack)
        self.assertNotIn("207^", ack)

    def test_al_al_commit_then_application_ack(self):
        msg = enhanced(h.demo("03-annotate-site-unspecified.hl7"), "AL", "AL")
        acks = send_read_acks(self.d.mllp_port, [msg], 2)
        self.assertEqual([h.ack_code(a) for a in acks], ["CA", "AA"], acks)
        commit, app = acks
        # The accept ACK is about storage only; the verdict is in the second.
        self.assertIsNone(seg(commit, "ERR"), commit)
        self.assertEqual(seg(commit, "MSA")[2], "DEMO0003")
        self.assertEqual(seg(app, "MSA")[2], "DEMO0003")
        self.assertEqual(seg(app, "ERR")[3], "0^Message accepted^HL70357")
        # Each ACK is a message of its own; the application ACK asks for none back.
        self.assertNotEqual(seg(commit, "MSH")[9], seg(app, "MSH")[9])
        self.assertEqual(seg(app, "MSH")[14:16], ["NE", "NE"])

    def test_al_al_rejected_is_stored_so_ca_then_ae(self):
        msg = enhanced(h.demo("04-reject-excludes1.hl7").replace(b"DEMO0004", b"ENHREJ01"), "AL", "AL")
        acks = send_read_acks(self.d.mllp_port, [msg], 2)
        self.assertEqual([h.ack_code(a) for a in acks], ["CA", "AE"], acks)
        self.assertIn("|103^Table value not found^HL70357|E|excludes1-pair|", acks[1])
        h.wait_for(lambda: [n for n in self.d.folder("reject") if "ENHREJ01" in n], what="reject copy")

    def test_er_er_answers_only_errors(self):
        reject = enhanced(dft("ENHER001", ["M43.04", "Q76.2"]), "ER", "ER")
        accept = enhanced(dft("ENHER002", ["J20.9"]), "ER", "ER")
        plain = dft("ENHER003", ["J20.9"])
        acks = send_read_acks(self.d.mllp_port, [reject, accept, plain], 2)
        # The reject gets its AE alone (stored: no CE); the success nothing at all.
        self.assertEqual([(h.ack_code(a), seg(a, "MSA")[2]) for a in acks],
                         [("AE", "ENHER001"), ("AA", "ENHER003")], acks)

    def test_su_al_and_ne_ne(self):
        su = enhanced(dft("ENHSU001", ["J20.9"]), "SU", "AL")
        ne = enhanced(dft("ENHNE001", ["J20.9"]), "NE", "NE")
        al_empty = enhanced(dft("ENHAL001", ["J20.9"]), "AL", "")
        acks = send_read_acks(self.d.mllp_port, [su, ne, al_empty], 3)
        self.assertEqual([(h.ack_code(a), seg(a, "MSA")[2]) for a in acks],
                         [("CA", "ENHSU001"), ("AA", "ENHSU001"), ("CA", "ENHAL001")], acks)

    def test_enhanced_unreadable_is_cr(self):
        bad = enhanced(dft("ENHBAD01", ["J20.9"]), "AL", "AL") + "P\x01D|1\r"
        acks = send_read_acks(self.d.mllp_port, [bad], 1)
        self.assertEqual([h.ack_code(a) for a in acks], ["CR"], acks)
        self.assertIn("ENHBAD01", acks[0])


class OnePass(unittest.TestCase):
    """Idempotent annotation: a message judged twice carries one pass."""

    def twice(self, message, *args):
        """Sends message, then what billing received from it, through a
        daemon; returns both messages as billing received them."""
        sink = h.MllpSink().start()
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % sink.port, *args).start()
        try:
            self.assertIn(h.ack_code(h.mllp_send(d.mllp_port, message)), ("AA",))
            h.wait_for(lambda: len(sink.raw_messages()) >= 1, 10, "first pass at billing")
            first = sink.raw_messages()[0]
            self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, first)), "AA")
            h.wait_for(lambda: len(sink.raw_messages()) >= 2, 10, "second pass at billing")
            return first, sink.raw_messages()[1]
        finally:
            d.cleanup()
            sink.stop()

    def test_zsg_twice_is_byte_for_byte_one_pass(self):
        original = h.demo("03-annotate-site-unspecified.hl7")
        first, second = self.twice(original)
        self.assertEqual(second, first)
        segs = first.decode().rstrip("\r").split("\r")
        added = [x for x in segs if x.startswith(("ZSH|", "ZSG|"))]
        zsh = [x.split("|") for x in added if x.startswith("ZSH|")]
        self.assertEqual(len(zsh), 1, first)
        self.assertEqual(zsh[0][1:4], ["1", "spinegate", "annotate"])
        self.assertEqual(zsh[0][4:6], ["spinegate-spine-rules", "1"])
        self.assertRegex(zsh[0][6], r"^FY20\d\d$")
        self.assertEqual(int(zsh[0][8]), len(added) - 1)
        self.assertGreaterEqual(len(added), 2)
        # The rest is the original, byte for byte, and the pass sits after the last DG1.
        kept = "\r".join(x for x in segs if x not in added) + "\r"
        self.assertEqual(kept.encode(), original)
        self.assertTrue(segs[segs.index(added[0]) - 1].startswith("DG1|"))

    def test_nte_accepted_with_header_twice(self):
        original = dft("ONEPASS2", ["J20.9"])
        first, second = self.twice(original, "--annotation", "nte", "--annotate-accepted")
        self.assertEqual(second, first)
        segs = first.decode().rstrip("\r").split("\r")
        header = [x for x in segs if x.startswith("NTE||O|[spinegate 1] verdict=accept ")]
        self.assertEqual(len(header), 1, first)
        self.assertIn("findings=0", header[0])
        self.assertEqual([x for x in segs if x not in header], original.rstrip("\r").split("\r"))

    def test_resent_after_fix_carries_only_new_findings(self):
        # A coder fixes a rejected message (as the reject sink kept it, with
        # its findings) and sends it again: billing gets the new pass only.
        rejects = h.MllpSink().start()
        billing = h.MllpSink().start()
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % billing.port,
                     "--reject-mllp", "127.0.0.1:%d" % rejects.port).start()
        try:
            h.mllp_send(d.mllp_port, h.demo("04-reject-excludes1.hl7"))
            h.wait_for(lambda: rejects.raw_messages(), 10, "reject at the reject sink")
            kept = rejects.raw_messages()[0]
            self.assertIn(b"|excludes1-pair|E|", kept)
            fixed = kept.replace(b"Q76.2^Congenital spondylolisthesis", b"M43.00^Spondylolysis, site unspecified")
            self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, fixed)), "AA")
            h.wait_for(lambda: billing.raw_messages(), 10, "fixed message at billing")
            body = billing.raw_messages()[0].decode()
            self.assertNotIn("excludes1-pair", body)
            self.assertEqual(body.count("\rZSH|"), 1, body)
            self.assertNotIn("|reject|", body)
        finally:
            d.cleanup()
            billing.stop()
            rejects.stop()


class Downstream(unittest.TestCase):
    """Delivery to a real MLLP listener: order, outages, retries, dead letters."""

    def test_downstream_down_then_up_nothing_lost_order_kept(self):
        port = h.free_port()
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % port, "--retry-base", "50ms",
                     "--retry-max-delay", "200ms", "--retry-max", "1000").start()
        try:
            ids = ["DOWN%04d" % i for i in range(30)]
            for cid in ids:
                self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, dft(cid, ["M43.16"]))), "AA")
            time.sleep(0.5)  # the deliverer is retrying against a closed port
            sink = h.MllpSink(port).start()
            try:
                h.wait_for(lambda: len(set(sink.control_ids())) >= 30, 20, "all messages downstream")
                seen = []
                for cid in sink.control_ids():
                    if cid not in seen:
                        seen.append(cid)
                self.assertEqual(seen, ids)
            finally:
                sink.stop()
        finally:
            d.cleanup()

    def test_dead_letter_after_retries_and_next_goes_on(self):
        sink = h.MllpSink(mode=lambda m: "AE" if "POISON" in m else "AA").start()
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % sink.port, "--retry-base", "20ms",
                     "--retry-max-delay", "50ms", "--downstream-reject-retries", "3").start()
        try:
            h.mllp_send(d.mllp_port, dft("POISON01", ["J20.9"]))
            h.mllp_send(d.mllp_port, dft("AFTER001", ["J20.9"]))
            h.wait_for(lambda: "AFTER001" in sink.control_ids(), 20, "message after the poison one")
            self.assertEqual(sink.control_ids().count("POISON01"), 3)
            h.wait_for(lambda: d.folder("deadletter"), 5, "dead-letter file")
            self.assertTrue(any("POISON01" in n for n in d.folder("deadletter")))
        finally:
            d.cleanup()
            sink.stop()

    def test_reject_sink_as_mllp_endpoint(self):
        billing = h.MllpSink().start()
        rejects = h.MllpSink().start()
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % billing.port,
                     "--reject-mllp", "127.0.0.1:%d" % rejects.port).start()
        try:
            h.mllp_send(d.mllp_port, h.demo("04-reject-excludes1.hl7"))
            h.mllp_send(d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"))
            h.wait_for(lambda: "DEMO0004" in rejects.control_ids(), 10, "reject at the reject sink")
            h.wait_for(lambda: "DEMO0001" in billing.control_ids(), 10, "accepted message at billing")
            self.assertNotIn("DEMO0004", billing.control_ids())
            reject = [m for m in rejects.messages() if "DEMO0004" in m][0]
            self.assertIn("ZSG|", reject)
            self.assertIn("excludes1-pair", reject)
        finally:
            d.cleanup()
            billing.stop()
            rejects.stop()

    def test_kill9_under_load_then_restart_delivers_every_acked_message(self):
        sink = h.MllpSink().start()
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % sink.port, "--retry-base", "20ms",
                     "--retry-max", "1000").start()
        acked = []
        stop = threading.Event()

        def sender(k):
            n = 0
            try:
                c = h.RawClient(d.mllp_port, timeout=5)
                while not stop.is_set():
                    cid = "K%d-%05d" % (k, n)
                    c.send(c.frame(dft(cid, ["M43.16"])))
                    if h.ack_code(c.read_frame()) == "AA":
                        acked.append(cid)
                    n += 1
            except (OSError, ConnectionError):
                pass

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        d.kill9()
        stop.set()
        for t in threads:
            t.join(10)
        self.assertGreater(len(acked), 50)
        time.sleep(0.3)  # bytes the killed daemon had sent reach the sink
        before = sink.control_ids()
        d2 = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % sink.port, data_dir=d.data_dir).start()
        try:
            h.wait_for(lambda: set(acked) <= set(sink.control_ids()), 30, "every AA'd message downstream")
            # Per connection, order is kept downstream.
            got = sink.control_ids()
            for k in range(4):
                mine = [c for c in acked if c.startswith("K%d-" % k)]
                firsts = sorted(mine, key=got.index)
                self.assertEqual(firsts, mine)
            # The delivery cursor: only the message in flight at the kill (the
            # last one the first daemon sent) may arrive a second time.
            twice = sorted(c for c in set(got) if got.count(c) > 1)
            self.assertLessEqual(len(twice), 1, "delivered more than once: %s" % twice[:10])
            if twice:
                self.assertEqual(got.count(twice[0]), 2)
                self.assertTrue(before and twice[0] == before[-1],
                                "%s is not the one in flight at the kill" % twice[0])
        finally:
            d2.cleanup()
            sink.stop()


class Backpressure(unittest.TestCase):
    def test_full_queue_holds_the_sender_and_others_go_on(self):
        port = h.free_port()
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % port, "--queue-max", "3",
                     "--retry-base", "50ms", "--retry-max-delay", "100ms", "--retry-max", "1000").start()
        try:
            for i in range(3):
                self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, dft("FULL%04d" % i, ["J20.9"]))), "AA")
            a = h.RawClient(d.mllp_port, timeout=1)
            a.send(a.frame(dft("HELD0001", ["J20.9"])))
            with self.assertRaises(OSError):  # no ACK while the queue is full: never AA before stored
                a.read_frame()
            # Another connection is still read and answered at once.
            b = h.RawClient(d.mllp_port, timeout=5)
            b.send(b.frame(b"not HL7 at all"))
            self.assertEqual(h.ack_code(b.read_frame()), "AR")
            b.close()
            sink = h.MllpSink(port).start()  # downstream comes up: the queue drains
            try:
                a.sock.settimeout(20)
                self.assertEqual(h.ack_code(a.read_frame()), "AA")
                h.wait_for(lambda: "HELD0001" in sink.control_ids(), 20, "held message delivered")
            finally:
                a.close()
                sink.stop()
        finally:
            d.cleanup()


class Reload(unittest.TestCase):
    def test_sighup_with_broken_pack_keeps_old_one(self):
        import tempfile
        pack = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        with open(os.path.join(h.TOP_SRCDIR, "rules", "spine-rules.json")) as f:
            pack.write(f.read())
        pack.close()
        conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
        conf.write("rules = %s\n" % pack.name)
        conf.close()
        d = h.Daemon("--config", conf.name).start()
        try:
            self.assertIn(h.ack_code(h.mllp_send(d.mllp_port, h.demo("04-reject-excludes1.hl7"))), ("AE", "AR"))
            c = h.RawClient(d.mllp_port)  # an open connection survives the reload
            with open(pack.name, "w") as f:
                f.write("{ this is not json")
            d.send_signal(signal.SIGHUP)
            h.wait_for(lambda: "reload failed" in d.logtext(), 5, "reload failure logged")
            c.send(c.frame(h.demo("04-reject-excludes1.hl7")))
            self.assertIn(h.ack_code(c.read_frame()), ("AE", "AR"))
            c.close()
            # Advisory mode through a reload: the same message is now accepted.
            with open(conf.name, "a") as f:
                f.write("advisory = yes\n")
            with open(os.path.join(h.TOP_SRCDIR, "rules", "spine-rules.json")) as src, open(pack.name, "w") as f:
                f.write(src.read())
            d.send_signal(signal.SIGHUP)
            h.wait_for(lambda: "reloaded" in d.logtext(), 5, "reload logged")
            self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, h.demo("04-reject-excludes1.hl7"))), "AA")
        finally:
            d.cleanup()
            os.unlink(pack.name)
            os.unlink(conf.name)

    def test_sigterm_exits_cleanly(self):
        d = h.Daemon().start()
        h.mllp_send(d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"))
        self.assertEqual(d.stop(), 0)
        self.assertIn("stopped", d.logtext())
        d.cleanup()


class Adt(unittest.TestCase):
    """ADT messages carry working and admitting diagnoses, not bills: the adt
    setting decides whether a finding can reject one. M43.04XA (a 7th
    character on a code that takes none) rejects a bill."""

    def send_adt(self, d, cid):
        return h.mllp_send(d.mllp_port, adt(cid, ["M43.04XA"]))

    def test_default_annotate_forwards_with_findings_never_rejects(self):
        d = h.Daemon().start()
        try:
            ack = self.send_adt(d, "ADTANN01")
            self.assertEqual(h.ack_code(ack), "AA", ack)
            # The findings ride on the AA as warnings (ERR-4 W/I), never errors.
            self.assertTrue(all(e.split("|")[4] in ("W", "I") for e in err_segments(ack)), ack)
            name = h.wait_for(lambda: [n for n in d.outbox() if "ADTANN01" in n], what="outbox file")[0]
            body = d.read("outbox", name).decode()
            zsg = zsg_segments(body)
            self.assertTrue(zsg, body)
            self.assertTrue(any("M43.04XA" in z[4] for z in zsg), zsg)
            self.assertTrue(all(z[3] in ("W", "I") for z in zsg), "a reject severity on an ADT: %s" % zsg)
            self.assertFalse(d.folder("reject"))
        finally:
            d.cleanup()

    def test_judge_rejects_like_a_bill(self):
        d = h.Daemon("--adt", "judge").start()
        try:
            ack = self.send_adt(d, "ADTJDG01")
            self.assertEqual(h.ack_code(ack), "AE", ack)
            self.assertTrue(any("M43.04XA" in e for e in err_segments(ack)), ack)
            h.wait_for(lambda: [n for n in d.folder("reject") if "ADTJDG01" in n], what="reject copy")
            time.sleep(0.3)
            self.assertFalse([n for n in d.outbox() if "ADTJDG01" in n])
        finally:
            d.cleanup()

    def test_forward_passes_untouched(self):
        d = h.Daemon("--adt", "forward").start()
        try:
            msg = adt("ADTFWD01", ["M43.04XA"])
            ack = h.mllp_send(d.mllp_port, msg)
            self.assertEqual(h.ack_code(ack), "AA", ack)
            self.assertFalse(err_segments(ack), ack)
            name = h.wait_for(lambda: [n for n in d.outbox() if "ADTFWD01" in n], what="outbox file")[0]
            body = d.read("outbox", name)
            self.assertNotIn(b"ZSG|", body)
            self.assertEqual(body.rstrip(b"\r"), msg.encode().rstrip(b"\r"))
        finally:
            d.cleanup()

    def test_bills_are_judged_whatever_adt_says(self):
        d = h.Daemon("--adt", "forward").start()
        try:
            ack = h.mllp_send(d.mllp_port, dft("ADTBILL1", ["M43.04XA"]))
            self.assertEqual(h.ack_code(ack), "AE", ack)
        finally:
            d.cleanup()

    def test_sighup_reloads_adt(self):
        conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
        conf.write("adt = judge\n")
        conf.close()
        d = h.Daemon("--config", conf.name).start()
        try:
            self.assertIn("adt=judge", d.logtext())
            self.assertEqual(h.ack_code(self.send_adt(d, "ADTHUP01")), "AE")
            with open(conf.name, "w") as f:
                f.write("adt = forward\n")
            d.send_signal(signal.SIGHUP)
            h.wait_for(lambda: "adt=forward" in d.logtext(), 5, "reload logged with the new adt")
            self.assertEqual(h.ack_code(self.send_adt(d, "ADTHUP02")), "AA")
            # A bad value fails the reload and keeps the running setting.
            with open(conf.name, "w") as f:
                f.write("adt = sometimes\n")
            d.send_signal(signal.SIGHUP)
            h.wait_for(lambda: "reload failed" in d.logtext(), 5, "reload failure logged")
            self.assertIn("adt: expected annotate, judge or forward", d.logtext())
            self.assertEqual(h.ack_code(self.send_adt(d, "ADTHUP03")), "AA")
        finally:
            d.cleanup()
            os.unlink(conf.name)


class EveryDiagnosis(unittest.TestCase):
    """Diagnoses carried only in FT1-19 are judged like DG1-3 ones."""

    @classmethod
    def setUpClass(cls):
        cls.d = h.Daemon().start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def test_ft1_19_only_code_is_judged(self):
        ack = h.mllp_send(self.d.mllp_port, dft("FT1ONLY1", ["M43.04XA"], dg1=False))
        self.assertEqual(h.ack_code(ack), "AE", ack)
        errs = err_segments(ack)
        self.assertTrue(any("M43.04XA" in e for e in errs), ack)
        # ERR-2 points at FT1(1)-19, not at a DG1 the message does not have.
        self.assertTrue(any("FT1^1^19" in e for e in errs), errs)
        h.wait_for(lambda: [n for n in self.d.folder("reject") if "FT1ONLY1" in n], what="reject copy")

    def test_ft1_19_only_valid_code_accepted(self):
        ack = h.mllp_send(self.d.mllp_port, dft("FT1ONLY2", ["M43.16"], dg1=False))
        self.assertEqual(h.ack_code(ack), "AA", ack)


class CodeSets(unittest.TestCase):
    """Each claim is judged with the ICD-10-CM code set of its date (FY2026,
    FY2027 from 2026-10-01); /metrics counts the code sets applied and the
    dates that fell outside every one of them."""

    @classmethod
    def setUpClass(cls):
        cls.d = h.Daemon(http=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def metrics(self):
        return http_get(self.d.http_port, "/metrics")

    def test_codes_sets_counted_and_fallbacks(self):
        # A claim of 2026-11-15 is judged with FY2027: the demo Excludes1
        # pair rejects there as it does in FY2026, with no table-coverage note.
        ack = h.mllp_send(self.d.mllp_port, demo_dated("04-reject-excludes1.hl7", "20261115", "FY27EX01"))
        self.assertEqual(h.ack_code(ack), "AE", ack)
        self.assertNotIn("table-coverage", ack)
        self.assertTrue(any("Q76.2" in e for e in err_segments(ack)), ack)
        ack = h.mllp_send(self.d.mllp_port, demo_dated("04-reject-excludes1.hl7", "20260115", "FY26EX01"))
        self.assertEqual(h.ack_code(ack), "AE", ack)
        # After the newest table: judged with it, and a warning says which.
        ack = h.mllp_send(self.d.mllp_port, dft("FY28NEW1", ["M43.16"], date="20271115"))
        self.assertEqual(h.ack_code(ack), "AA", ack)
        name = h.wait_for(lambda: [n for n in self.d.outbox() if "FY28NEW1" in n], what="outbox file")[0]
        body = self.d.read("outbox", name).decode()
        self.assertTrue(any(z[3] == "W" and "FY2027" in "|".join(z) for z in zsg_segments(body)), body)

        text = self.metrics()
        self.assertIn("# TYPE spinegate_code_set_total counter", text)
        self.assertIn("# TYPE spinegate_code_set_fallback_total counter", text)
        self.assertEqual(metric(text, "spinegate_code_set_total", 'code_set="FY2027"'), 2, text)
        self.assertEqual(metric(text, "spinegate_code_set_total", 'code_set="FY2026"'), 1, text)
        self.assertEqual(metric(text, "spinegate_code_set_fallback_total", 'fit="newer"'), 1, text)
        self.assertEqual(metric(text, "spinegate_code_set_fallback_total", 'fit="older"'), 0, text)

        # Before the oldest table: no validity checks, a warning, counted.
        ack = h.mllp_send(self.d.mllp_port, dft("FY24OLD1", ["M43.16"], date="20240615"))
        self.assertEqual(h.ack_code(ack), "AA", ack)
        text = self.metrics()
        self.assertEqual(metric(text, "spinegate_code_set_fallback_total", 'fit="older"'), 1, text)
        self.assertEqual(metric(text, "spinegate_code_set_fallback_total", 'fit="newer"'), 1, text)

    def test_fallback_counters_always_present(self):
        text = self.metrics()
        self.assertIn("# HELP spinegate_code_set_total ", text)
        self.assertIsNotNone(metric(text, "spinegate_code_set_fallback_total", 'fit="newer"'), text)
        self.assertIsNotNone(metric(text, "spinegate_code_set_fallback_total", 'fit="older"'), text)

    def test_healthz_names_adt(self):
        doc = json.loads(http_get(self.d.http_port, "/healthz"))
        self.assertEqual(doc["adt"], "annotate")
        self.assertIn("ICD-10-CM", doc["rules"])


class Cli(unittest.TestCase):
    def run_cmd(self, *args):
        import subprocess
        return subprocess.run([h.DAEMON] + list(args), capture_output=True, text=True, timeout=20)

    def test_help_lists_every_config_key(self):
        r = self.run_cmd("--help")
        self.assertEqual(r.returncode, 0)
        with open(os.path.join(h.TOP_SRCDIR, "docs", "spinegate.conf.5")) as f:
            man = f.read()
        keys = [line.split()[0][2:] for line in r.stdout.splitlines()
                if line.startswith("  --") and line.split()[0] not in ("--config", "--check-config", "--help,")]
        self.assertGreater(len(keys), 20)
        for k in keys:
            self.assertIn(".B " + k, man, "spinegate.conf(5) does not document " + k)

    def test_check_config_and_usage_errors(self):
        r = self.run_cmd("--check-config", "--listen-mllp", "127.0.0.1:9")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("listen-mllp = 127.0.0.1:9", r.stdout)
        self.assertEqual(self.run_cmd("--no-such-option").returncode, 2)
        r = self.run_cmd("--check-config", "--retry-max", "many")
        self.assertEqual(r.returncode, 2)
        self.assertIn("retry-max", r.stderr)

    def test_version(self):
        r = self.run_cmd("--version")
        self.assertEqual(r.returncode, 0)
        self.assertIn("spinegate", r.stdout)

    def test_adt_setting(self):
        r = self.run_cmd("--check-config")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("adt = annotate", r.stdout)
        r = self.run_cmd("--check-config", "--adt", "forward")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("adt = forward", r.stdout)
        r = self.run_cmd("--check-config", "--adt", "reject")
        self.assertEqual(r.returncode, 2)
        self.assertIn("adt", r.stderr)
        self.assertIn("--adt annotate|judge|forward", self.run_cmd("--help").stdout)


class CheckTool(unittest.TestCase):
    """spinegate-check: --adt, and the code set named per message."""

    def check(self, messages, *args):
        with tempfile.NamedTemporaryFile("w", suffix=".hl7", delete=False) as f:
            f.write("".join(messages))
        try:
            r = subprocess.run([h.CHECK, "--no-progress"] + list(args) + [f.name],
                               capture_output=True, text=True, timeout=60)
        finally:
            os.unlink(f.name)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        return r

    def check_json(self, messages, *args):
        r = self.check(messages, "--json", *args)
        return [json.loads(line) for line in r.stdout.splitlines()]

    def test_adt_modes(self):
        msg = adt("ADTCHK01", ["M43.04XA"])
        (o,) = self.check_json([msg])
        self.assertEqual(o["verdict"], "annotate", o)
        self.assertTrue(o["findings"], o)
        self.assertTrue(all(f["severity"] != "reject" for f in o["findings"]), o)
        (o,) = self.check_json([msg], "--adt", "judge")
        self.assertEqual(o["verdict"], "reject", o)
        (o,) = self.check_json([msg], "--adt", "forward")
        self.assertEqual((o["verdict"], o["findings"], o["code_set"]), ("accept", [], None), o)
        r = subprocess.run([h.CHECK, "--adt", "maybe", "/dev/null"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--adt", r.stderr)

    def test_json_names_code_set_and_fit(self):
        out = self.check_json([dft("CS26", ["M43.16"], date="20260115"),
                               dft("CS27", ["M43.16"], date="20261115"),
                               dft("CS28", ["M43.16"], date="20271115"),
                               dft("CS24", ["M43.16"], date="20240615"),
                               dft("CSNONE", ["J20.9"])])
        got = {o["id"]: (o["code_set"], o["code_set_fit"]) for o in out}
        self.assertEqual(got["CS26"], ("FY2026", "in-range"))
        self.assertEqual(got["CS27"], ("FY2027", "in-range"))
        self.assertEqual(got["CS28"], ("FY2027", "newer"))
        self.assertEqual(got["CS24"][1], "older")
        for o in out:
            self.assertIn("code_set", o)
            self.assertIn(o["code_set_fit"], ("in-range", "newer", "older"))

    def test_unreadable_has_null_code_set(self):
        (o,) = self.check_json(["garbage that is not HL7\r"])
        self.assertEqual((o["verdict"], o["code_set"], o["code_set_fit"]), ("reject", None, None))

    def test_text_names_code_set(self):
        r = self.check([dft("CSTXT27", ["M43.16"], date="20261115")])
        self.assertRegex(r.stdout, r"code set: ICD-10-CM FY2027\b")
        r = self.check([dft("CSTXT28", ["M43.16"], date="20271115")])
        self.assertRegex(r.stdout, r"code set: ICD-10-CM FY2027, the newest")


if __name__ == "__main__":
    h.run(__name__)
