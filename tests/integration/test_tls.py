"""test_tls.py - TLS and mTLS end to end: the real daemon with certificates
made here by the openssl command (a CA, a second CA nobody trusts, server and
client certificates, an expired one), python3's ssl module as the MLLP
sender and as a TLS billing endpoint, curl for HTTPS. Each case checks what
the peer saw, the daemon's log line and the /metrics counters."""
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

import harness as h

CERTS = None


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


class Certs:
    """Keys and certificates in a temp folder; EC P-256 keys (fast)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sg-tls-")
        self.ca("ca", "Spinegate Test CA")
        self.ca("wrongca", "Nobody's CA")
        self.leaf("server", "ca", "localhost", "DNS:localhost,IP:127.0.0.1")
        self.leaf("server2", "ca", "localhost", "DNS:localhost,IP:127.0.0.1")
        self.leaf("mirth", "ca", "mirth.example", "DNS:mirth.example")
        self.leaf("other", "ca", "other.example", "DNS:other.example")
        self.leaf("stranger", "wrongca", "mirth.example", "DNS:mirth.example")
        self.leaf("billing", "ca", "billing.example", "DNS:billing.example,IP:127.0.0.1")
        self.leaf("gate", "ca", "spinegate.example", "DNS:spinegate.example")
        # Expired: valid until a day before it was made.
        self.leaf("expired", "ca", "localhost", "DNS:localhost,IP:127.0.0.1", days="-1")
        self.leaf("soon", "ca", "localhost", "DNS:localhost,IP:127.0.0.1", days="10")

    def path(self, name, ext="pem"):
        return os.path.join(self.dir, "%s.%s" % (name, ext))

    def key(self, name):
        return self.path(name, "key")

    def _newkey(self, name, subject, *extra):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", self.key(name), "-subj", "/CN=" + subject, *extra)

    def ca(self, name, subject):
        self._newkey(name, subject, "-x509", "-days", "30", "-out", self.path(name))

    def leaf(self, name, ca, cn, san, days="30"):
        csr = self.path(name, "csr")
        self._newkey(name, cn, "-out", csr)
        ext = self.path(name, "ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\n" % san)
        openssl("x509", "-req", "-in", csr, "-CA", self.path(ca), "-CAkey", self.key(ca),
                "-set_serial", str(len(os.listdir(self.dir))), "-days", days,
                "-extfile", ext, "-out", self.path(name))

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def setUpModule():
    global CERTS
    CERTS = Certs()


def tearDownModule():
    CERTS.cleanup()


def client_ctx(cert=None, ca="ca"):
    ctx = ssl.create_default_context(cafile=CERTS.path(ca))
    if cert:
        ctx.load_cert_chain(CERTS.path(cert), CERTS.key(cert))
    return ctx


def tls_mllp_send(port, message, cert=None, ca="ca", timeout=10.0):
    """Sends one framed message over TLS; returns the ACK text. Raises
    ssl.SSLError or ConnectionError when the daemon refuses the peer."""
    ctx = client_ctx(cert, ca)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return exchange(s, message)


def exchange(s, message):
    data = message if isinstance(message, bytes) else message.encode()
    s.sendall(h.SB + data + h.EB + h.CR)
    buf = b""
    while h.EB + h.CR not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the daemon with %d bytes read" % len(buf))
        buf += chunk
    return buf[buf.find(h.SB) + 1:buf.find(h.EB)].decode()


def refused(port, cert=None, ca="ca"):
    """True when the daemon refuses the peer: no ACK, a TLS error or a close."""
    try:
        tls_mllp_send(port, h.demo("01-accept-no-spine-codes.hl7"), cert=cert, ca=ca)
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return False


def metric(d, name, labels=""):
    out = curl(d, "/metrics")
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), out, re.M)
    return float(m.group(1)) if m else None


def curl(d, path, *extra):
    """GET over HTTPS (with the test CA) or plain HTTP, whichever d serves."""
    scheme = "https" if d.https else "http"
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", CERTS.path("ca")] +
                       list(extra) + ["%s://localhost:%d%s" % (scheme, d.http_port, path)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise ConnectionError("curl %s: exit %d: %s" % (path, r.returncode, r.stderr.decode()))
    return r.stdout.decode()


def tls_daemon(*extra, mllp=True, http=True, https=False):
    args = []
    if mllp:
        args += ["--mllp-tls-cert", CERTS.path("server"), "--mllp-tls-key", CERTS.key("server")]
    if https:
        args += ["--http-tls-cert", CERTS.path("server"), "--http-tls-key", CERTS.key("server")]
    d = h.Daemon(*(args + list(extra)), mllp=mllp, http=http)
    d.https = https
    return d


def wait_log(d, pattern, what):
    return h.wait_for(lambda: re.search(pattern, d.logtext()), what=what)


class TlsMllpSink:
    """Billing over TLS: a python ssl server answering each frame with AA.
    client_ca set: requires a client certificate from it."""

    def __init__(self, cert="billing", client_ca=None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(CERTS.path(cert), CERTS.key(cert))
        if client_ca:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(CERTS.path(client_ca))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received, self.peers, self.errors = [], [], []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as s:
                peer = s.getpeercert()
                self.peers.append(dict(x[0] for x in peer["subject"]) if peer else None)
                buf = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                    while h.EB + h.CR in buf:
                        frame, buf = buf.split(h.EB + h.CR, 1)
                        msg = frame[frame.find(h.SB) + 1:].decode()
                        self.received.append(msg)
                        cid = h.msh10(msg)
                        ack = "MSH|^~\\&|BILLING|X|SPINEGATE|X|20260101000000||ACK|A%s|P|2.5\r" \
                              "MSA|AA|%s\r" % (cid, cid)
                        s.sendall(h.SB + ack.encode() + h.EB + h.CR)
        except (ssl.SSLError, OSError) as e:
            self.errors.append(str(e))

    def stop(self):
        self.sock.close()


class MllpListenerTls(unittest.TestCase):
    """TLS on the MLLP listener, without client certificates."""

    @classmethod
    def setUpClass(cls):
        cls.d = tls_daemon("--tls-handshake-timeout", "500ms").start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def test_message_over_tls_is_acknowledged(self):
        ack = tls_mllp_send(self.d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"))
        self.assertEqual(h.ack_code(ack), "AA")
        self.assertRegex(self.d.logtext(), r"mllp conn #\d+ from 127\.0\.0\.1:\d+: TLSv1\.[23]")

    def test_server_not_trusted_by_client(self):
        # A client that trusts another CA refuses the daemon's certificate.
        with self.assertRaises(ssl.SSLCertVerificationError):
            tls_mllp_send(self.d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"), ca="wrongca")

    def test_plaintext_to_tls_port_is_closed_others_go_on(self):
        before = metric(self.d, "spinegate_tls_handshakes_total",
                        '{listener="mllp",result="plaintext"}')
        c = h.RawClient(self.d.mllp_port)
        c.send(c.frame(h.demo("01-accept-no-spine-codes.hl7")))
        with self.assertRaises((ConnectionError, OSError)):
            c.read_frame()
        c.close()
        wait_log(self.d, r"plaintext sent to the TLS port, closing", "plaintext log line")
        after = metric(self.d, "spinegate_tls_handshakes_total",
                       '{listener="mllp",result="plaintext"}')
        self.assertEqual(after, before + 1)
        ack = tls_mllp_send(self.d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"))
        self.assertEqual(h.ack_code(ack), "AA")

    def test_tcp_probe_is_not_a_failure(self):
        # A load balancer's health check connects and leaves without a byte.
        failed = metric(self.d, "spinegate_tls_handshakes_total",
                        '{listener="mllp",result="failed"}')
        closed = lambda: self.d.logtext().count("closed before its TLS handshake completed")
        before = closed()
        socket.create_connection(("127.0.0.1", self.d.mllp_port), timeout=10).close()
        h.wait_for(lambda: closed() > before, what="the probe's close")
        self.assertEqual(metric(self.d, "spinegate_tls_handshakes_total",
                                '{listener="mllp",result="failed"}'), failed)

    def test_stalled_handshake_is_closed_others_go_on(self):
        before = metric(self.d, "spinegate_tls_handshakes_total",
                        '{listener="mllp",result="timeout"}')
        stalled = socket.create_connection(("127.0.0.1", self.d.mllp_port), timeout=20)
        stalled.sendall(b"\x16\x03\x01")  # the start of a handshake record, then nothing
        # Served while the other one stalls.
        ack = tls_mllp_send(self.d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"))
        self.assertEqual(h.ack_code(ack), "AA")
        self.assertEqual(stalled.recv(100), b"")  # closed by the daemon
        stalled.close()
        wait_log(self.d, r"TLS handshake not done after 500 ms, closing", "timeout log line")
        self.assertEqual(metric(self.d, "spinegate_tls_handshakes_total",
                                '{listener="mllp",result="timeout"}'), before + 1)


class MllpListenerMtls(unittest.TestCase):
    """mTLS: client certificates from the test CA, CN or SAN on the allow-list."""

    @classmethod
    def setUpClass(cls):
        cls.d = tls_daemon("--mllp-tls-client-ca", CERTS.path("ca"),
                           "--mllp-tls-allow", "mirth.example",
                           "--mllp-tls-allow", "CN=billing.*").start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def counter(self, result):
        return metric(self.d, "spinegate_tls_handshakes_total",
                      '{listener="mllp",result="%s"}' % result)

    def test_allowed_client_certificate(self):
        ack = tls_mllp_send(self.d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"),
                            cert="mirth")
        self.assertEqual(h.ack_code(ack), "AA")
        self.assertIn("client CN=mirth.example", self.d.logtext())

    def test_allowed_by_subject_pattern(self):
        ack = tls_mllp_send(self.d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"),
                            cert="billing")
        self.assertEqual(h.ack_code(ack), "AA")

    def test_no_client_certificate_refused(self):
        before = self.counter("failed")
        self.assertTrue(refused(self.d.mllp_port))
        wait_log(self.d, r"TLS handshake failed: .*certificate", "handshake failure line")
        h.wait_for(lambda: self.counter("failed") >= before + 1, what="failed counter")

    def test_certificate_from_another_ca_refused(self):
        before = self.counter("failed")
        self.assertTrue(refused(self.d.mllp_port, cert="stranger"))
        wait_log(self.d, r"TLS handshake failed: .*unable to get local issuer certificate",
                 "verify failure line")
        h.wait_for(lambda: self.counter("failed") >= before + 1, what="failed counter")

    def test_expired_client_certificate_refused(self):
        self.assertTrue(refused(self.d.mllp_port, cert="expired"))
        wait_log(self.d, r"TLS handshake failed: .*certificate has expired", "expiry line")

    def test_certificate_not_on_allow_list_refused(self):
        before = self.counter("not_allowed")
        self.assertTrue(refused(self.d.mllp_port, cert="other"))
        wait_log(self.d, r'client certificate "CN=other.example" not on the allow-list',
                 "allow-list line")
        self.assertEqual(self.counter("not_allowed"), before + 1)
        # Nothing from the refused peer reached the queue or the outbox.
        ack = tls_mllp_send(self.d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"),
                            cert="mirth")
        self.assertEqual(h.ack_code(ack), "AA")


class HttpsListener(unittest.TestCase):
    """TLS and mTLS on the HTTP listener, with curl."""

    @classmethod
    def setUpClass(cls):
        cls.d = tls_daemon("--http-tls-client-ca", CERTS.path("ca"),
                           "--http-tls-allow", "mirth.example", mllp=False, https=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def mine(self, *extra):
        return curl(self.d, "/healthz", "--cert", CERTS.path("mirth"), "--key",
                    CERTS.key("mirth"), *extra)

    def test_https_with_client_certificate(self):
        self.mine()
        out = curl(self.d, "/metrics", "--cert", CERTS.path("mirth"), "--key", CERTS.key("mirth"))
        self.assertRegex(out, r'spinegate_tls_handshakes_total\{listener="http",result="ok"\} [1-9]')

    def test_https_validate_claim(self):
        r = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", CERTS.path("ca"),
                            "--cert", CERTS.path("mirth"), "--key", CERTS.key("mirth"),
                            "-o", "/dev/null", "-w", "%{http_code}",
                            "-H", "Content-Type: application/fhir+json", "--data-binary",
                            "@" + os.path.join(h.DATA, "fhir", "json", "spine-m4304-mri.json"),
                            "https://localhost:%d/fhir/Claim/$validate" % self.d.http_port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode(), "200")

    def test_without_client_certificate_refused(self):
        with self.assertRaises(ConnectionError):
            curl(self.d, "/healthz")
        self.mine()  # others unaffected

    def test_client_certificate_not_allowed(self):
        with self.assertRaises(ConnectionError):
            curl(self.d, "/healthz", "--cert", CERTS.path("other"), "--key", CERTS.key("other"))
        wait_log(self.d, r'http conn #\d+ .*"CN=other.example" not on the allow-list',
                 "allow-list line")

    def test_plaintext_http_to_https_port(self):
        # Told why in clear, then closed; never served.
        r = subprocess.run(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}",
                            "http://127.0.0.1:%d/healthz" % self.d.http_port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode().split("\n")[-1], "400")
        self.assertIn("This port speaks HTTPS", r.stdout.decode())
        wait_log(self.d, r"http conn #\d+ .*plaintext sent to the TLS port", "plaintext line")
        self.mine()

    def test_tls13_minimum_refuses_tls12_client(self):
        d = tls_daemon("--tls-min-version", "1.3", mllp=False, https=True).start()
        try:
            curl(d, "/healthz", "--tlsv1.3")
            with self.assertRaises(ConnectionError):
                curl(d, "/healthz", "--tlsv1.2", "--tls-max", "1.2")
        finally:
            d.cleanup()


class HttpsClientCertificateAuth(unittest.TestCase):
    """With http-auth = token, a verified client certificate authenticates a
    request as a token does (no tokens file needed)."""

    def test_certificate_authenticates_request(self):
        d = h.Daemon("--http-tls-cert", CERTS.path("server"), "--http-tls-key", CERTS.key("server"),
                     "--http-tls-client-ca", CERTS.path("ca"), mllp=False, http=True,
                     http_auth="token")
        d.https = True
        self.addCleanup(d.cleanup)
        d.start()
        mine = ["--cert", CERTS.path("mirth"), "--key", CERTS.key("mirth")]
        self.assertIn("spinegate_tls_handshakes_total", curl(d, "/metrics", *mine))
        r = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", CERTS.path("ca")] + mine +
                           ["-o", "/dev/null", "-w", "%{http_code}",
                            "-H", "Content-Type: application/fhir+json", "--data-binary",
                            "@" + os.path.join(h.DATA, "fhir", "json", "spine-m4304-mri.json"),
                            "https://localhost:%d/fhir/Claim" % d.http_port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertIn(r.stdout.decode(), ("200", "201"), r.stderr)
        wait_log(d, r"http conn=\d+ client=cert:CN=mirth\.example", "the request's log line")


class DownstreamTls(unittest.TestCase):
    """The MLLP deliverer over TLS: billing verified against the CA, a client
    certificate presented, failures retried and logged."""

    def deliver(self, sink_port, *extra):
        d = h.Daemon("--downstream-mllp", "127.0.0.1:%d" % sink_port, "--downstream-mllp-tls",
                     "--retry-base", "50ms", "--retry-max-delay", "200ms",
                     "--ack-timeout", "5s", *extra)
        self.addCleanup(d.cleanup)
        d.start()
        ack = h.mllp_send(d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"))
        self.assertEqual(h.ack_code(ack), "AA")
        return d

    def test_delivered_with_client_certificate(self):
        sink = TlsMllpSink(client_ca="ca").start()
        self.addCleanup(sink.stop)
        self.deliver(sink.port, "--downstream-tls-ca", CERTS.path("ca"),
                     "--downstream-tls-cert", CERTS.path("gate"),
                     "--downstream-tls-key", CERTS.key("gate"),
                     "--downstream-tls-server-name", "billing.example")
        h.wait_for(lambda: sink.received, what="delivery over TLS")
        self.assertEqual(sink.peers[-1], {"commonName": "spinegate.example"})

    def test_wrong_ca_is_not_trusted(self):
        sink = TlsMllpSink().start()
        self.addCleanup(sink.stop)
        d = self.deliver(sink.port, "--downstream-tls-ca", CERTS.path("wrongca"))
        wait_log(d, r"TLS with 127\.0\.0\.1:\d+ failed: certificate verify failed", "verify line")
        self.assertEqual(sink.received, [])

    def test_server_name_checked(self):
        sink = TlsMllpSink().start()
        self.addCleanup(sink.stop)
        d = self.deliver(sink.port, "--downstream-tls-ca", CERTS.path("ca"),
                         "--downstream-tls-server-name", "payer.example")
        wait_log(d, r"TLS with .* failed: certificate verify failed \(hostname mismatch\)",
                 "name mismatch line")
        self.assertEqual(sink.received, [])

    def test_broken_client_key_on_reload_keeps_delivering(self):
        sink = TlsMllpSink(client_ca="ca").start()
        self.addCleanup(sink.stop)
        work = tempfile.mkdtemp(prefix="sg-tls-down-")
        self.addCleanup(shutil.rmtree, work, True)
        key = os.path.join(work, "gate.key")
        shutil.copy(CERTS.key("gate"), key)
        d = self.deliver(sink.port, "--downstream-tls-ca", CERTS.path("ca"),
                         "--downstream-tls-cert", CERTS.path("gate"), "--downstream-tls-key", key,
                         "--downstream-tls-server-name", "billing.example")
        h.wait_for(lambda: len(sink.received) == 1, what="the first delivery")
        with open(key, "w") as f:
            f.write("not a key\n")
        d.send_signal(signal.SIGHUP)
        wait_log(d, r"downstream: TLS reload failed, keeping the running certificates: TLS key",
                 "failed reload line")
        msg = h.demo("01-accept-no-spine-codes.hl7").decode()
        msg = msg.replace(h.msh10(msg), "AFTER-RELOAD", 1)
        self.assertEqual(h.ack_code(h.mllp_send(d.mllp_port, msg)), "AA")
        h.wait_for(lambda: len(sink.received) == 2, what="delivery after the failed reload")
        self.assertEqual(h.msh10(sink.received[1]), "AFTER-RELOAD")

    def test_tls_to_plaintext_downstream_retries(self):
        sink = h.MllpSink().start()
        self.addCleanup(sink.stop)
        d = self.deliver(sink.port, "--downstream-tls-ca", CERTS.path("ca"))
        # The sink waits for a frame and never answers the ClientHello: the
        # handshake times out (connect timeout, 5 s), the attempt is logged
        # and retried; nothing is ever sent in clear.
        h.wait_for(lambda: re.search(r"attempt 1 failed: (TLS handshake timeout|connection "
                                     r"closed by downstream during the TLS handshake).*retry in",
                                     d.logtext()), timeout=30, what="a retried TLS attempt")
        self.assertEqual(sink.messages(), [])


class FhirDownstreamHttps(unittest.TestCase):
    """downstream-fhir https://: the same CA and client certificate settings,
    handed to libcurl."""

    def sink(self, client_ca=None):
        sink = h.HttpSink()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CERTS.path("server"), CERTS.key("server"))
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(CERTS.path(client_ca))
        sink.httpd.socket = ctx.wrap_socket(sink.httpd.socket, server_side=True)
        sink.start()
        self.addCleanup(sink.stop)
        return sink

    def post(self, sink, *extra):
        d = h.Daemon("--downstream-fhir", "https://localhost:%d/fhir" % sink.port,
                     "--retry-base", "50ms", "--retry-max-delay", "200ms", *extra,
                     mllp=False, http=True)
        d.https = False
        self.addCleanup(d.cleanup)
        d.start()
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                            "-H", "Content-Type: application/fhir+json", "--data-binary",
                            "@" + os.path.join(h.DATA, "fhir", "json", "spine-m4304-mri.json"),
                            "http://127.0.0.1:%d/fhir/Claim" % d.http_port],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertIn(r.stdout.decode(), ("200", "201"), r.stderr)
        return d

    def test_delivered_with_ca_and_client_certificate(self):
        sink = self.sink(client_ca="ca")
        self.post(sink, "--downstream-tls-ca", CERTS.path("ca"),
                  "--downstream-tls-cert", CERTS.path("gate"),
                  "--downstream-tls-key", CERTS.key("gate"))
        h.wait_for(lambda: sink.received, what="a Claim over HTTPS")

    def test_wrong_ca_not_delivered(self):
        sink = self.sink()
        d = self.post(sink, "--downstream-tls-ca", CERTS.path("wrongca"))
        wait_log(d, r"out fhir: .*attempt 1 failed: .*(certificate|SSL)", "failed attempt line")
        self.assertEqual(sink.received, [])


class Reload(unittest.TestCase):
    """SIGHUP: new certificates for new connections, open ones go on; a
    broken file keeps the running certificates."""

    def test_reload_new_broken_and_expiring(self):
        work = tempfile.mkdtemp(prefix="sg-tls-reload-")
        self.addCleanup(shutil.rmtree, work, True)
        cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        shutil.copy(CERTS.path("server"), cert)
        shutil.copy(CERTS.key("server"), key)
        d = h.Daemon("--mllp-tls-cert", cert, "--mllp-tls-key", key, http=True)
        d.https = False
        self.addCleanup(d.cleanup)
        d.start()

        def serial():
            ctx = client_ctx()
            with socket.create_connection(("127.0.0.1", d.mllp_port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    return s.getpeercert()["serialNumber"]

        first = serial()
        ctx = client_ctx()
        raw = socket.create_connection(("127.0.0.1", d.mllp_port), timeout=10)
        old = ctx.wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(old.close)
        self.assertEqual(h.ack_code(exchange(old, h.demo("01-accept-no-spine-codes.hl7"))), "AA")

        # A certificate that expires in 10 days: taken, and warned about.
        shutil.copy(CERTS.path("soon"), cert)
        shutil.copy(CERTS.key("soon"), key)
        d.send_signal(signal.SIGHUP)
        wait_log(d, r"mllp: TLS certificates reloaded", "reload line")
        self.assertNotEqual(serial(), first)
        self.assertRegex(d.logtext(), r"TLS certificate of mllp expires in [89] days")
        self.assertEqual(metric(d, "spinegate_tls_cert_expiring"), 1)
        # The connection opened before the reload is still served.
        self.assertEqual(h.ack_code(exchange(old, h.demo("01-accept-no-spine-codes.hl7"))), "AA")

        # A broken key: the running certificate stays.
        second = serial()
        with open(key, "w") as f:
            f.write("not a key\n")
        d.send_signal(signal.SIGHUP)
        wait_log(d, r"mllp: TLS reload failed, keeping the running certificates: TLS key",
                 "failed reload line")
        self.assertEqual(serial(), second)
        self.assertEqual(metric(d, "spinegate_tls_reloads_total", '{result="failed"}'), 1)
        self.assertEqual(h.ack_code(exchange(old, h.demo("01-accept-no-spine-codes.hl7"))), "AA")


class ReloadHttps(unittest.TestCase):
    def test_http_listener_takes_new_certificate(self):
        work = tempfile.mkdtemp(prefix="sg-tls-reload-http-")
        self.addCleanup(shutil.rmtree, work, True)
        cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        shutil.copy(CERTS.path("server"), cert)
        shutil.copy(CERTS.key("server"), key)
        d = h.Daemon("--http-tls-cert", cert, "--http-tls-key", key, mllp=False, http=True)
        d.https = True
        self.addCleanup(d.cleanup)
        d.start()

        def serial():
            with socket.create_connection(("127.0.0.1", d.http_port), timeout=10) as raw:
                with client_ctx().wrap_socket(raw, server_hostname="localhost") as s:
                    return s.getpeercert()["serialNumber"]

        first = serial()
        # A keep-alive connection opened before the reload.
        raw = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
        old = client_ctx().wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(old.close)
        get = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
        old.sendall(get)
        self.assertTrue(old.recv(65536).startswith(b"HTTP/1.1 200"))
        shutil.copy(CERTS.path("server2"), cert)
        shutil.copy(CERTS.key("server2"), key)
        d.send_signal(signal.SIGHUP)
        wait_log(d, r"http: TLS certificates reloaded", "reload line")
        self.assertNotEqual(serial(), first)
        old.sendall(get)
        self.assertTrue(old.recv(65536).startswith(b"HTTP/1.1 200"))


class ReloadUnderLoad(unittest.TestCase):
    """Senders on several TLS connections, new and kept open, while
    certificates are reloaded: every message is acknowledged AA and stored."""

    def test_nothing_lost(self):
        work = tempfile.mkdtemp(prefix="sg-tls-load-")
        self.addCleanup(shutil.rmtree, work, True)
        cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        shutil.copy(CERTS.path("server"), cert)
        shutil.copy(CERTS.key("server"), key)
        d = h.Daemon("--mllp-tls-cert", cert, "--mllp-tls-key", key)
        self.addCleanup(d.cleanup)
        d.start()
        template = h.demo("01-accept-no-spine-codes.hl7").decode()
        cid = h.msh10(template)
        results, errors, stop = [], [], threading.Event()

        def sender(n):
            ctx = client_ctx()
            i = 0
            try:
                while i < 200 and not (stop.is_set() and i >= 5):
                    # Odd senders keep a connection for 20 messages, even ones
                    # reconnect (a new handshake) for each.
                    raw = socket.create_connection(("127.0.0.1", d.mllp_port), timeout=20)
                    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                        for _ in range(20 if n % 2 else 1):
                            msg = template.replace(cid, "R%d-%d" % (n, i), 1)
                            results.append((h.msh10(msg), h.ack_code(exchange(s, msg))))
                            i += 1
            except Exception as e:  # reported by the test, not lost in the thread
                errors.append("sender %d after %d messages: %r" % (n, i, e))

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        reloaded = lambda: d.logtext().count("mllp: TLS certificates reloaded")
        for name in ("server2", "server", "server2"):
            flowing = len(results) + 10
            h.wait_for(lambda: len(results) >= flowing or errors, what="traffic between reloads")
            shutil.copy(CERTS.path(name), cert)
            shutil.copy(CERTS.key(name), key)
            before = reloaded()
            d.send_signal(signal.SIGHUP)
            h.wait_for(lambda: reloaded() > before, what="the reload")
        stop.set()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        ids = [r[0] for r in results]
        self.assertGreater(len(ids), 40)
        self.assertEqual(sorted(set(r[1] for r in results)), ["AA"])
        self.assertEqual(len(set(ids)), len(ids))
        # Every acknowledged message is in the outbox (delivered by folder).
        h.wait_for(lambda: len(d.outbox()) >= len(ids), what="every message in the outbox")
        self.assertEqual(len(d.outbox()), len(ids))


class Settings(unittest.TestCase):
    def test_key_without_certificate_refused_at_start(self):
        d = h.Daemon("--mllp-tls-key", CERTS.key("server"))
        self.addCleanup(shutil.rmtree, d.data_dir, True)
        r = subprocess.run(d.args(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"mllp-tls-cert and mllp-tls-key go together", r.stdout)

    def test_unreadable_certificate_refused_at_start(self):
        d = h.Daemon("--mllp-tls-cert", os.path.join(CERTS.dir, "missing.pem"),
                     "--mllp-tls-key", CERTS.key("server"))
        self.addCleanup(shutil.rmtree, d.data_dir, True)
        r = subprocess.run(d.args(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"TLS certificate", r.stdout)

    def test_expired_server_certificate_logged_and_refused_by_clients(self):
        d = h.Daemon("--mllp-tls-cert", CERTS.path("expired"), "--mllp-tls-key",
                     CERTS.key("expired"))
        self.addCleanup(d.cleanup)
        d.start()
        self.assertRegex(d.logtext(), r"TLS certificate of mllp expired \d+ days ago")
        with self.assertRaises(ssl.SSLCertVerificationError):
            tls_mllp_send(d.mllp_port, h.demo("01-accept-no-spine-codes.hl7"))


if __name__ == "__main__":
    h.run(__name__)
