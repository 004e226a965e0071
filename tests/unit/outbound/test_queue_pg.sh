#!/bin/sh
# test_queue_pg.sh - the PostgreSQL queue's unit tests, on a server of their own.
exec sh "${top_srcdir:-.}/tests/unit/outbound/pg_run.sh" test_queue_pg
