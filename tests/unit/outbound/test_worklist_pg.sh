#!/bin/sh
# test_worklist_pg.sh - the PostgreSQL worklist's unit tests, on a server of their own.
exec sh "${top_srcdir:-.}/tests/unit/outbound/pg_run.sh" test_worklist_pg
