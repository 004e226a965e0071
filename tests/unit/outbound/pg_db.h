/* pg_db.h - the PostgreSQL unit tests' own statements on the test server,
 * each on a connection of its own (libpq, blocking): set-up, faults and the
 * counts the tests check. Included by one test file each. */
#ifndef SPINEGATE_TEST_PG_DB_H
#define SPINEGATE_TEST_PG_DB_H

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

static PGconn *db_conn(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect %s: %s", url, PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

static void db_exec(const char *url, const char *sql)
{
    PGconn *c = db_conn(url);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* The first value of sql's answer, as text, into out. */
static void db_value(const char *url, const char *sql, char *out, size_t len)
{
    PGconn *c = db_conn(url);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    snprintf(out, len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
}

static long long db_count(const char *url, const char *sql)
{
    char v[32];
    db_value(url, sql, v, sizeof v);
    return atoll(v);
}

#endif
