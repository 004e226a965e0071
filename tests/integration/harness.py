"""harness.py - what the integration tests share: starting the real daemon on
loopback with its own data directory, real MLLP clients (python3-hl7's and a
raw socket one), and real downstream listeners (an MLLP server built on
python3-hl7's asyncio streams, and an HTTP server from the standard library).

Runs under Debian's /usr/bin/python3, which sees the python3-hl7 package.
"""
import asyncio
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import hl7
import hl7.client
import hl7.mllp

TOP_SRCDIR = os.environ.get("top_srcdir", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
TOP_BUILDDIR = os.environ.get("top_builddir", TOP_SRCDIR)
DAEMON = os.path.join(TOP_BUILDDIR, "spinegate")
CHECK = os.path.join(TOP_BUILDDIR, "spinegate-check")
DATA = os.path.join(TOP_SRCDIR, "tests", "data")

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("daemon exited early with status %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("port %d did not open" % port)


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


class Daemon:
    """The real spinegate process with a private data dir and free ports."""

    def __init__(self, *extra, mllp=True, http=False, data_dir=None, http_auth="none"):
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="sg-it-")
        self.mllp_port = free_port() if mllp else None
        self.http_port = free_port() if http else None
        self.extra = list(extra)
        # The tests talk to a loopback listener with no tokens: they say so,
        # as the daemon requires (http_auth=None leaves it to the extras).
        self.http_auth = http_auth
        self.proc = None
        self.log_path = os.path.join(self.data_dir, "daemon.log")

    def args(self):
        a = [DAEMON, "--data-dir", self.data_dir, "--log-level", "debug"]
        a += ["--listen-mllp", "127.0.0.1:%d" % self.mllp_port if self.mllp_port else "off"]
        if self.http_port:
            a += ["--listen-http", "127.0.0.1:%d" % self.http_port]
            if self.http_auth:
                a += ["--http-auth", self.http_auth]
        return a + self.extra

    def start(self):
        self.log = open(self.log_path, "ab")
        env = dict(os.environ)
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=subprocess.STDOUT, env=env)
        for port in (self.mllp_port, self.http_port):
            if port:
                wait_port(port, proc=self.proc)
        return self

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("daemon did not stop within %ss of %s" % (timeout, sig))
        if getattr(self, "log", None):
            self.log.close()
            self.log = None
        return self.proc.returncode

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.log = None

    def logtext(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def sanitizer_report(self):
        """What ASan/UBSan/LSan said in the daemon's log, or "" (a sanitizer
        build reports there and the tests must not pass over it)."""
        text = self.logtext()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            at = text.find(marker)
            if at >= 0:
                return text[max(0, at - 200):at + 3000]
        return ""

    def cleanup(self):
        self.stop()
        report = self.sanitizer_report()
        if report:
            print("sanitizer report kept in " + self.data_dir)
            raise AssertionError("sanitizer report in the daemon's log:\n" + report)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def outbox(self):
        return self.folder("outbox")

    def folder(self, name):
        # Files being written are dot-named temp files renamed into place
        # when complete: only finished files count.
        d = os.path.join(self.data_dir, name)
        return sorted(n for n in os.listdir(d) if not n.startswith(".")) if os.path.isdir(d) else []

    def read(self, folder, name):
        with open(os.path.join(self.data_dir, folder, name), "rb") as f:
            return f.read()


def mllp_send(port, message, timeout=10.0):
    """Sends one message with python3-hl7's MLLP client; returns the ACK text."""
    with hl7.client.MLLPClient("127.0.0.1", port) as c:
        c.socket.settimeout(timeout)
        data = message if isinstance(message, bytes) else message.encode()
        reply = c.send_message(data)
        while not reply.rstrip().endswith(EB) and EB not in reply:
            more = c.socket.recv(65536)
            if not more:
                break
            reply += more
        return reply.strip(SB + EB + CR + b"\n").decode("utf-8", "replace")


class RawClient:
    """A plain socket, for frames split, merged or broken on purpose."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def frame(self, message):
        return SB + (message if isinstance(message, bytes) else message.encode()) + EB + CR

    def read_frame(self):
        while True:
            start = self.buf.find(SB)
            end = self.buf.find(EB + CR, start + 1 if start >= 0 else 0)
            if start >= 0 and end > start:
                msg = self.buf[start + 1:end]
                self.buf = self.buf[end + 2:]
                return msg.decode("utf-8", "replace")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed with %d bytes buffered" % len(self.buf))
            self.buf += chunk

    def close(self):
        self.sock.close()


def ack_code(ack):
    for seg in ack.replace("\n", "\r").split("\r"):
        if seg.startswith("MSA"):
            return seg.split(seg[3])[1]
    return None


def msh10(message):
    text = message.decode() if isinstance(message, bytes) else message
    seg = text.split("\r")[0]
    return seg.split(seg[3])[9]


class MllpSink:
    """A real downstream MLLP listener (python3-hl7 asyncio streams) in a
    thread. mode(msg) returns "AA", "AE", "AR" or None (no answer), or a
    (code, text) pair: the ACK then carries text in MSA-3 and an ERR segment."""

    def __init__(self, port=None, mode=lambda m: "AA"):
        self.port = port or free_port()
        self.mode = mode
        self.received = []
        self.raw = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.server = None

    def start(self):
        self.thread.start()
        self.ready.wait(10)
        return self

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def handle(reader, writer):
            try:
                while True:
                    # The block as it came, for byte-for-byte checks, then
                    # parsed as readmessage() does.
                    block = await reader.readblock()
                    msg = hl7.parse(block.decode(reader.encoding, reader.encoding_errors))
                    text = str(msg)
                    with self.lock:
                        self.received.append(text)
                        self.raw.append(bytes(block))
                    code = self.mode(text)
                    if isinstance(code, tuple):
                        # (code, text): billing's own words in MSA-3 and an ERR.
                        code, why = code
                        segs = str(msg.create_ack(ack_code=code)).split("\r")
                        segs = [sg + "|" + why if sg.startswith("MSA|") else sg for sg in segs]
                        segs.append("ERR|||207^Application internal error^HL70357|E||||" + why)
                        writer.writemessage(hl7.parse("\r".join(segs)))
                        await writer.drain()
                    elif code:
                        writer.writemessage(msg.create_ack(ack_code=code))
                        await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, hl7.mllp.InvalidBlockError):
                pass
            finally:
                writer.close()

        async def main():
            self.server = await hl7.mllp.start_hl7_server(handle, "127.0.0.1", self.port)
            self.ready.set()
            async with self.server:
                await self.server.serve_forever()

        try:
            self.loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass

    def messages(self):
        with self.lock:
            return list(self.received)

    def raw_messages(self):
        """The messages exactly as they arrived (bytes, without MLLP framing)."""
        with self.lock:
            return list(self.raw)

    def control_ids(self):
        return [msh10(m) for m in self.messages()]

    def stop(self):
        if self.server:
            self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(self.loop)])
        self.thread.join(5)


class HttpSink:
    """A real downstream HTTP server recording POSTed bodies; status(body)
    gives the answer's status code."""

    def __init__(self, status=lambda body: 201):
        self.port = free_port()
        self.received = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                code = status(body)
                sink.received.append((self.path, self.headers.get("Content-Type"), body, code))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def demo(name):
    with open(os.path.join(DATA, "demo", name), "rb") as f:
        return f.read()


def run(module_name):
    """Runs a test module's TestCases and prints the plain closing line."""
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[module_name])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors)
    passed = result.testsRun - failed - len(result.skipped)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or result.testsRun == 0 else 0)


_json_validator = None


def fhir_json_valid(body):
    """Validates a JSON resource against the official FHIR R4 JSON schema
    (Debian's python3-jsonschema). Returns (ok, reason)."""
    global _json_validator
    import jsonschema
    if _json_validator is None:
        with open(os.path.join(DATA, "fhir", "schema", "fhir.schema.json")) as f:
            schema = json.load(f)
        # The redistributed schema was generated for 4.0.0: its version
        # enums lack "4.0.1", which an R4 server states. Add that, nothing else.
        stack = [schema]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                e = node.get("enum")
                if isinstance(e, list) and "4.0.0" in e and "4.0.1" not in e:
                    e.append("4.0.1")
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        _json_validator = jsonschema.Draft6Validator(schema)
    doc = json.loads(body)
    errors = list(_json_validator.iter_errors(doc))
    if not errors:
        return True, ""
    best = jsonschema.exceptions.best_match(errors)
    return False, "%s at %s" % (best.message[:300], list(best.absolute_path))


def fhir_xml_valid(body):
    """Validates an XML resource with xmllint against the FHIR R4 XSDs."""
    xsd = os.path.join(DATA, "fhir", "xsd", "fhir-single.xsd")
    with tempfile.NamedTemporaryFile(suffix=".xml", delete=False) as f:
        f.write(body)
    try:
        r = subprocess.run(["xmllint", "--noout", "--nonet", "--schema", xsd, f.name],
                           capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(f.name)
    return r.returncode == 0, r.stderr[-600:]
