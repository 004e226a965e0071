#!/usr/bin/env python3
"""make-queue-seeds.py - writes the seed corpus of fuzz/fuzz_queue_record:
small queue databases (first byte 0x00: a whole file) and row descriptions
(first byte 0x01: columns as [type, length, bytes], see the fuzz target)."""
import os
import sqlite3
import sys

SCHEMA = """CREATE TABLE msgs( id INTEGER PRIMARY KEY AUTOINCREMENT, dest TEXT NOT NULL,
 control_id TEXT NOT NULL, content_type TEXT NOT NULL, payload BLOB NOT NULL, findings TEXT,
 state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
 created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE INDEX msgs_dest ON msgs(dest, state, id);
PRAGMA user_version=1;"""

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "fuzz", "corpus", "queue_record")
os.makedirs(out, exist_ok=True)


def db_seed(name, rows):
    p = os.path.join(out, ".tmp.db")
    if os.path.exists(p):
        os.unlink(p)
    c = sqlite3.connect(p)
    c.execute("PRAGMA page_size=512")
    c.executescript(SCHEMA)
    for r in rows:
        c.execute("INSERT INTO msgs(dest, control_id, content_type, payload, findings, state,"
                  " attempts, created_ms, updated_ms) VALUES(?,?,?,?,?,?,?,?,?)", r)
    c.commit()
    c.close()
    with open(p, "rb") as f:
        data = f.read()
    os.unlink(p)
    with open(os.path.join(out, name), "wb") as f:
        f.write(b"\x00" + data)


def col(t, b):
    return bytes([t, len(b)]) + b


msg = b"MSH|^~\\&|EHR|HOSP|BILL|HOSP|20240101||DFT^P03|MSG00001|P|2.5\rDG1|1||M43.04^^I10\r"
db_seed("db-two-rows", [("hl7", "MSG00001", "application/hl7-v2", msg, "M4304 reject", 0, 0, 1, 1),
                        ("hl7", "MSG00002", "application/hl7-v2", msg, None, 0, 2, 1, 1)])
db_seed("db-mixed", [("hl7", "A", "a/b", b"x", None, 0, 0, 1, 1),
                     ("fhir", "B", "application/fhir+json", b"{}", None, 0, 0, 1, 1),
                     ("hl7", "C", "a/b", b"y", None, 3, 10, 1, 1),
                     ("hl7", b"bl\x00ob", "a/b", "text", None, 0, -1, 1, 1)])
db_seed("db-empty", [])
row = (col(2, b"hl7") + col(2, b"MSG1") + col(2, b"application/hl7-v2") + col(3, b"MSH|^~\\&|x")
       + col(0, b"") + col(1, b"\x02") + col(1, b"\x01"))
bad = (col(2, b"hl7") + col(3, b"M\x00G") + col(1, b"") + col(4, b"abc") + col(2, b"f")
       + col(0x81, b"") + col(2, b"x"))
for name, data in [("rows-good", b"\x01" + row + row), ("rows-bad-types", b"\x01" + bad + row),
                   ("garbage", b"\x00SQLite format 3\x00" + bytes(range(256)) * 2),
                   ("empty-file", b"\x00")]:
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
