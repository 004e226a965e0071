"""test_auth.py - bearer tokens on the HTTP listener, with the real daemon
and curl: missing, wrong and out-of-scope tokens refused (401 with
WWW-Authenticate, 403) with OperationOutcomes valid against the R4 schema
and XSD; each scope allowed where it belongs; health and metadata open; the
tokens file reloaded on SIGHUP (a broken one keeps the running set); a
malformed file refuses the start with file:line; the start policy for
non-loopback listeners; and log lines that name the token, never show it.
"""
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import unittest

import harness as h

FHIR = os.path.join(h.DATA, "fhir")


def load(name):
    with open(os.path.join(FHIR, "json", name)) as f:
        return json.load(f)


def curl(port, path, body=None, token=None, method=None, extra=(), host="127.0.0.1"):
    """Runs curl; returns (status, body bytes, headers with lower-case names)."""
    with tempfile.NamedTemporaryFile(delete=False) as out:
        pass
    with tempfile.NamedTemporaryFile(delete=False) as hdr:
        pass
    args = ["curl", "-s", "-o", out.name, "-D", hdr.name, "-w", "%{http_code}", "--max-time", "30"]
    if body is not None:
        args += ["--data-binary", "@-", "-H", "Content-Type: application/fhir+json"]
    if token is not None:
        args += ["-H", "Authorization: Bearer " + token]
    if method:
        args += ["-X", method]
    args += list(extra) + ["http://%s:%d%s" % (host, port, path)]
    data = json.dumps(body).encode() if body is not None else None
    r = subprocess.run(args, input=data, capture_output=True, timeout=60)
    with open(out.name, "rb") as f:
        content = f.read()
    os.unlink(out.name)
    headers = {}
    with open(hdr.name, "rb") as f:
        for line in f.read().decode("latin-1").split("\r\n")[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
    os.unlink(hdr.name)
    return int(r.stdout or 0), content, headers


def token_line(name, scopes, token):
    return "%s %s sha256:%s\n" % (name, scopes, hashlib.sha256(token.encode()).hexdigest())


def metric(text, labels):
    m = re.search(r"^spinegate_http_auth_refused_total\{%s\} (\d+)$" % re.escape(labels), text, re.M)
    return int(m.group(1)) if m else None


def claim(cid):
    c = load("spine-m4304-mri.json")
    c["id"] = cid
    return c


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


class Tokens(unittest.TestCase):
    """One daemon with three tokens, one scope each."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sg-auth-")
        cls.engine = secrets.token_hex(32)
        cls.checker = secrets.token_urlsafe(32)
        cls.prom = secrets.token_hex(32)
        cls.tokens = os.path.join(cls.tmp, "http-tokens")
        write(cls.tokens, "# three tokens\n" + token_line("engine", "submit", cls.engine) +
              token_line("checker", "validate", cls.checker) + "\n" +
              token_line("prom", "metrics", cls.prom) + "   # Prometheus\n")
        cls.d = h.Daemon("--http-tokens", cls.tokens, mllp=False, http=True, http_auth=None).start()
        cls.port = cls.d.http_port

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def assertOutcome(self, body, code):
        """body is a valid OperationOutcome (R4 JSON schema) whose issue is code."""
        doc = json.loads(body)
        self.assertEqual(doc["resourceType"], "OperationOutcome")
        ok, why = h.fhir_json_valid(body)
        self.assertTrue(ok, why)
        self.assertEqual([i["code"] for i in doc["issue"]], [code])

    def test_no_token_is_401_with_challenge(self):
        for path, body in (("/fhir/Claim", claim("a1")), ("/fhir/Claim/$validate", claim("a2")),
                           ("/fhir", {"resourceType": "Bundle", "type": "batch"}),
                           ("/metrics", None)):
            status, out, hdr = curl(self.port, path, body)
            self.assertEqual(status, 401, path)
            self.assertEqual(hdr.get("www-authenticate"), 'Bearer realm="spinegate"', path)
            self.assertOutcome(out, "login")
        # Refused before the method is looked at: a GET learns nothing more.
        status, _, hdr = curl(self.port, "/fhir/Claim")
        self.assertEqual(status, 401)

    def test_outcome_in_xml_is_valid(self):
        status, out, hdr = curl(self.port, "/fhir/Claim?_format=xml", claim("x1"))
        self.assertEqual(status, 401)
        self.assertIn(b"<OperationOutcome", out)
        self.assertIn(b'<code value="login"/>', out)
        ok, why = h.fhir_xml_valid(out)
        self.assertTrue(ok, why)
        status, out, _ = curl(self.port, "/fhir/Claim?_format=xml", claim("x2"), token=self.prom)
        self.assertEqual(status, 403)
        self.assertIn(b'<code value="forbidden"/>', out)
        ok, why = h.fhir_xml_valid(out)
        self.assertTrue(ok, why)

    def test_wrong_token_is_401(self):
        wrong = [secrets.token_hex(32), self.engine[:-1], self.engine + "0", self.engine.upper()]
        for t in wrong:
            status, out, hdr = curl(self.port, "/fhir/Claim", claim("w1"), token=t)
            self.assertEqual(status, 401, t)
            self.assertEqual(hdr.get("www-authenticate"),
                             'Bearer realm="spinegate", error="invalid_token"')
            self.assertOutcome(out, "login")
        # Another scheme, or the digest itself, is not the token either.
        digest = hashlib.sha256(self.engine.encode()).hexdigest()
        for auth in ("Basic " + self.engine, "Bearer sha256:" + digest, "Bearer " + digest):
            status, _, _ = curl(self.port, "/fhir/Claim", claim("w2"), extra=("-H", "Authorization: " + auth))
            self.assertEqual(status, 401, auth)

    def test_token_without_the_scope_is_403(self):
        cases = (("/fhir/Claim", claim("s1"), self.checker, "submit"),
                 ("/fhir/Claim", claim("s2"), self.prom, "submit"),
                 ("/fhir/Claim/$validate", claim("s3"), self.engine, "validate"),
                 ("/fhir/$validate", claim("s4"), self.prom, "validate"),
                 ("/metrics", None, self.engine, "metrics"),
                 ("/metrics", None, self.checker, "metrics"))
        for path, body, token, scope in cases:
            status, out, hdr = curl(self.port, path, body, token=token)
            self.assertEqual(status, 403, (path, scope))
            self.assertEqual(hdr.get("www-authenticate"),
                             'Bearer realm="spinegate", error="insufficient_scope", scope="%s"' % scope)
            self.assertOutcome(out, "forbidden")

    def test_each_scope_allowed_where_it_belongs(self):
        status, out, _ = curl(self.port, "/fhir/Claim", claim("ok-submit"), token=self.engine)
        self.assertEqual(status, 201, out)
        bundle = {"resourceType": "Bundle", "type": "batch",
                  "entry": [{"resource": claim("ok-batch"),
                             "request": {"method": "POST", "url": "Claim"}}]}
        status, out, _ = curl(self.port, "/fhir", bundle, token=self.engine)
        self.assertEqual(status, 200, out)
        status, out, _ = curl(self.port, "/fhir/Claim/$validate", claim("ok-val"), token=self.checker)
        self.assertEqual(status, 200, out)
        status, out, _ = curl(self.port, "/metrics", token=self.prom)
        self.assertEqual(status, 200, out)
        self.assertIn(b"spinegate_messages_total", out)

    def test_health_readiness_and_metadata_are_open(self):
        for path in ("/healthz", "/readyz", "/fhir/metadata"):
            status, out, _ = curl(self.port, path)
            self.assertEqual(status, 200, (path, out))
        # A token that is wrong does not close them either.
        status, _, _ = curl(self.port, "/healthz", token="x" * 40)
        self.assertEqual(status, 200)

    def test_capability_statement_says_how_to_authenticate(self):
        status, out, _ = curl(self.port, "/fhir/metadata")
        self.assertEqual(status, 200)
        ok, why = h.fhir_json_valid(out)
        self.assertTrue(ok, why)
        self.assertIn("Bearer", json.loads(out)["rest"][0]["security"]["description"])
        status, out, _ = curl(self.port, "/fhir/metadata?_format=xml")
        self.assertEqual(status, 200)
        ok, why = h.fhir_xml_valid(out)
        self.assertTrue(ok, why)
        self.assertIn(b"<security><description value=\"Bearer", out)

    def test_refusals_counted(self):
        def counts():
            status, out, _ = curl(self.port, "/metrics", token=self.prom)
            self.assertEqual(status, 200)
            text = out.decode()
            return [metric(text, 'reason="%s"' % r) for r in ("missing", "invalid", "forbidden")]

        before = counts()
        self.assertNotIn(None, before)
        curl(self.port, "/fhir/Claim", claim("c1"))
        curl(self.port, "/fhir/Claim", claim("c2"))
        curl(self.port, "/fhir/Claim", claim("c3"), token=secrets.token_hex(32))
        curl(self.port, "/metrics", token=self.engine)
        after = counts()
        self.assertEqual([a - b for a, b in zip(after, before)], [2, 1, 1])

    def test_log_names_the_token_never_shows_it(self):
        status, _, _ = curl(self.port, "/fhir/Claim", claim("log-submit"), token=self.engine)
        self.assertEqual(status, 201)
        status, _, _ = curl(self.port, "/fhir/Claim/$validate", claim("log-val"), token=self.checker)
        self.assertEqual(status, 200)
        status, _, _ = curl(self.port, "/fhir/Claim", claim("log-403"), token=self.prom)
        self.assertEqual(status, 403)
        self.assertEqual(curl(self.port, "/metrics", token=self.prom)[0], 200)
        stranger = secrets.token_hex(32)
        status, _, _ = curl(self.port, "/fhir/Claim", claim("log-401"), token=stranger)
        self.assertEqual(status, 401)
        log = h.wait_for(lambda: "client=checker" in self.d.logtext() and self.d.logtext(), 10,
                         "the validate log line")
        self.assertRegex(log, r"client=engine id=log-submit ")
        self.assertRegex(log, r"client=checker id=log-val ")
        self.assertRegex(log, r"client=prom metrics")  # at log level debug
        self.assertRegex(log, r": 403 POST /fhir/Claim, client=prom")
        self.assertRegex(log, r": 401 POST /fhir/Claim, client=-")
        for secret in (self.engine, self.checker, self.prom, stranger):
            self.assertNotIn(secret, log)
            self.assertNotIn(secret[:16], log)


class Reload(unittest.TestCase):
    def test_sighup_adds_and_removes_tokens_and_keeps_them_on_a_broken_file(self):
        tmp = tempfile.mkdtemp(prefix="sg-auth-")
        path = os.path.join(tmp, "tokens")
        old, new = secrets.token_hex(32), secrets.token_hex(32)
        write(path, token_line("old", "metrics", old))
        d = h.Daemon("--http-tokens", path, mllp=False, http=True, http_auth=None).start()
        try:
            self.assertEqual(curl(d.http_port, "/metrics", token=old)[0], 200)
            self.assertEqual(curl(d.http_port, "/metrics", token=new)[0], 401)

            write(path, token_line("new", "metrics", new))
            d.send_signal(signal.SIGHUP)
            h.wait_for(lambda: "reloaded http-tokens: 1 tokens" in d.logtext(), 10, "the reload")
            self.assertEqual(curl(d.http_port, "/metrics", token=new)[0], 200)
            self.assertEqual(curl(d.http_port, "/metrics", token=old)[0], 401)

            write(path, "# broken\n" + token_line("new", "metrics,everything", new))
            d.send_signal(signal.SIGHUP)
            h.wait_for(lambda: "reload of http-tokens failed" in d.logtext(), 10, "the failed reload")
            self.assertIn("%s:2: unknown scope 'everything'" % path, d.logtext())
            self.assertEqual(curl(d.http_port, "/metrics", token=new)[0], 200)
            status, out, _ = curl(d.http_port, "/metrics", token=new)
            self.assertIn(b'spinegate_http_tokens_reloads_total{result="failed"} 1', out)
            self.assertIn(b'spinegate_http_tokens_reloads_total{result="ok"} 1', out)
        finally:
            d.cleanup()


def run_daemon(*args, timeout=20):
    """Runs the daemon to its exit (a refused start); returns (status, stderr)."""
    data = tempfile.mkdtemp(prefix="sg-auth-")
    try:
        r = subprocess.run([h.DAEMON, "--data-dir", data, "--listen-mllp", "off"] + list(args),
                           capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    # A sanitizer build reports on stderr: a refused start must be clean too.
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        if marker in r.stderr:
            raise AssertionError("sanitizer report:\n" + r.stderr[-3000:])
    return r.returncode, r.stderr


class StartPolicy(unittest.TestCase):
    def test_malformed_tokens_file_refuses_start_with_file_and_line(self):
        tmp = tempfile.mkdtemp(prefix="sg-auth-")
        path = os.path.join(tmp, "tokens")
        write(path, "# ok so far\n" + token_line("a", "submit", secrets.token_hex(32)) +
              "b submit sha256:1234\n")
        port = h.free_port()
        code, err = run_daemon("--listen-http", "127.0.0.1:%d" % port, "--http-tokens", path)
        self.assertNotEqual(code, 0)
        self.assertIn("%s:3: expected sha256:" % path, err)
        r = subprocess.run([h.DAEMON, "--listen-http", "127.0.0.1:%d" % port, "--http-tokens", path,
                            "--check-config"], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 2)
        self.assertIn("%s:3: expected sha256:" % path, r.stderr)
        code, err = run_daemon("--listen-http", "127.0.0.1:%d" % port, "--http-tokens",
                               os.path.join(tmp, "missing"))
        self.assertNotEqual(code, 0)
        self.assertIn("cannot open", err)

    def test_non_loopback_without_auth_refused_unless_insecure(self):
        port = h.free_port()
        code, err = run_daemon("--listen-http", "0.0.0.0:%d" % port, "--http-auth", "none")
        self.assertEqual(code, 2)
        self.assertIn("is not a loopback address", err)
        # With insecure = yes it starts, and says what it is doing.
        d = h.Daemon("--listen-http", "0.0.0.0:%d" % port, "--http-auth", "none", "--insecure",
                     mllp=False, http=False, http_auth=None)
        d.start()
        try:
            h.wait_port(port, proc=d.proc)
            self.assertEqual(curl(port, "/fhir/Claim", claim("open"))[0], 201)
            self.assertIn("insecure = yes", d.logtext())
        finally:
            d.cleanup()

    def test_loopback_binds_need_auth_none_said_explicitly(self):
        # No http-auth and no tokens: it starts but serves only health and
        # metadata, and says why.
        d = h.Daemon(mllp=False, http=True, http_auth=None).start()
        try:
            self.assertEqual(curl(d.http_port, "/fhir/Claim", claim("closed"))[0], 401)
            self.assertEqual(curl(d.http_port, "/metrics")[0], 401)
            self.assertEqual(curl(d.http_port, "/healthz")[0], 200)
            self.assertIn("no http-tokens file", d.logtext())
        finally:
            d.cleanup()
        for host in ("127.0.0.1", "[::1]", "localhost"):
            r = subprocess.run([h.DAEMON, "--listen-http", "%s:8080" % host, "--http-auth", "none",
                                "--check-config"], capture_output=True, text=True, timeout=20)
            self.assertEqual(r.returncode, 0, (host, r.stderr))
            self.assertIn("http-auth = none", r.stdout)

    def test_tokens_without_tls_off_loopback_warn(self):
        tmp = tempfile.mkdtemp(prefix="sg-auth-")
        path = os.path.join(tmp, "tokens")
        write(path, token_line("a", "submit", secrets.token_hex(32)))
        r = subprocess.run([h.DAEMON, "--listen-http", "192.0.2.1:8080", "--http-tokens", path,
                            "--check-config"], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("cross the network in clear", r.stderr)
        self.assertIn("# http-tokens: 1 tokens", r.stdout)

    def test_contradictory_settings_refused(self):
        r = subprocess.run([h.DAEMON, "--listen-http", "127.0.0.1:8080", "--http-auth", "none",
                            "--http-tokens", "/nonexistent", "--check-config"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 2)
        self.assertIn("http-tokens is set but http-auth = none", r.stderr)
        r = subprocess.run([h.DAEMON, "--listen-http", "127.0.0.1:8080", "--http-auth", "basic",
                            "--check-config"], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 2)
        self.assertIn("http-auth: expected token or none", r.stderr)


if __name__ == "__main__":
    h.run(__name__)
