/* test_tls.c - unit tests of the TLS engine (common/tls.c): a server and a
 * client session wired to each other through their memory BIOs, no socket,
 * with certificates made by the openssl command in a temp folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tls.h"

static char dir[] = "/tmp/sg-tls-unit-XXXXXX";

static const char *path(const char *name)
{
    static char buf[8][256];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

#define NEWKEY "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "

static void leaf(const char *name, const char *ca, const char *cn, const char *san, int days)
{
    sh(NEWKEY "-keyout %s/%s.key -out %s/%s.csr -subj /CN=%s 2>/dev/null", dir, name, dir, name,
       cn);
    sh("printf 'subjectAltName=%s\\n' >%s/%s.ext", san, dir, name);
    sh("openssl x509 -req -in %s/%s.csr -CA %s/%s.pem -CAkey %s/%s.key -set_serial %d -days %d "
       "-extfile %s/%s.ext -out %s/%s.pem 2>/dev/null",
       dir, name, dir, ca, dir, ca, rand() % 100000 + 1, days, dir, name, dir, name);
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir))
        return -1;
    sh(NEWKEY "-x509 -keyout %s/ca.key -out %s/ca.pem -days 30 -subj /CN=CA 2>/dev/null", dir, dir);
    sh(NEWKEY "-x509 -keyout %s/wrongca.key -out %s/wrongca.pem -days 30 -subj /CN=Other "
              "2>/dev/null",
       dir, dir);
    leaf("server", "ca", "localhost", "DNS:localhost", 20);
    leaf("client", "ca", "mirth.example", "DNS:mirth.example,email:if@example.org", 30);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sh("rm -rf %s", dir);
    return 0;
}

/* Moves ciphertext from a to b. */
static void move(tls_conn_t *a, tls_conn_t *b)
{
    char buf[64 * 1024];
    size_t n;
    while ((n = tls_conn_out_take(a, buf, sizeof buf)) > 0)
        tls_conn_feed(b, buf, n);
}

/* Runs the handshake to its end; returns -1 when one side failed. */
static int handshake(tls_conn_t *cli, tls_conn_t *srv)
{
    char buf[256];
    for (int round = 0; round < 10; round++) {
        if (tls_conn_read(cli, buf, sizeof buf) < 0)
            return -1;
        move(cli, srv);
        if (tls_conn_read(srv, buf, sizeof buf) < 0)
            return -1;
        move(srv, cli);
        if (tls_conn_established(cli) && tls_conn_established(srv))
            return 0;
    }
    return -1;
}

static tls_ctx_t *server_ctx(const char *client_ca, const char *allow)
{
    tls_settings_t s = {.cert_file = path("server.pem"),
                        .key_file = path("server.key"),
                        .ca_file = client_ca,
                        .allow = allow};
    tls_ctx_t *ctx;
    err_detail_t e;
    assert_int_equal(tls_ctx_new(TLS_SERVER, &s, &ctx, &e), ERR_OK);
    return ctx;
}

static tls_ctx_t *client_ctx(const char *ca, bool with_cert)
{
    tls_settings_t s = {.ca_file = ca};
    if (with_cert) {
        s.cert_file = path("client.pem");
        s.key_file = path("client.key");
    }
    tls_ctx_t *ctx;
    err_detail_t e;
    assert_int_equal(tls_ctx_new(TLS_CLIENT, &s, &ctx, &e), ERR_OK);
    return ctx;
}

static void test_round_trip_both_ways(void **state)
{
    (void)state;
    tls_ctx_t *sc = server_ctx(NULL, NULL), *cc = client_ctx(path("ca.pem"), false);
    tls_conn_t *srv = tls_conn_new(sc, NULL), *cli = tls_conn_new(cc, "localhost");
    tls_ctx_unref(sc); /* the sessions hold their own references */
    tls_ctx_unref(cc);
    assert_int_equal(handshake(cli, srv), 0);
    assert_string_equal(tls_conn_peer_subject(srv), "");

    char big[40000], got[64 * 1024];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('A' + i % 26);
    assert_int_equal(tls_conn_write(cli, big, sizeof big), 0);
    move(cli, srv);
    size_t have = 0;
    long n;
    while ((n = tls_conn_read(srv, got + have, sizeof got - have)) > 0)
        have += (size_t)n;
    assert_int_equal(n, 0);
    assert_int_equal(have, sizeof big);
    assert_memory_equal(got, big, sizeof big);

    assert_int_equal(tls_conn_write(srv, "ACK", 3), 0);
    move(srv, cli);
    assert_int_equal(tls_conn_read(cli, got, sizeof got), 3);
    assert_memory_equal(got, "ACK", 3);

    tls_conn_close_notify(cli);
    move(cli, srv);
    assert_int_equal(tls_conn_read(srv, got, sizeof got), 0);
    assert_true(tls_conn_peer_closed(srv));
    tls_conn_free(srv);
    tls_conn_free(cli);
}

static void test_client_refuses_unknown_ca_and_wrong_name(void **state)
{
    (void)state;
    tls_ctx_t *sc = server_ctx(NULL, NULL);
    tls_ctx_t *wrong = client_ctx(path("wrongca.pem"), false);
    tls_conn_t *srv = tls_conn_new(sc, NULL), *cli = tls_conn_new(wrong, "localhost");
    assert_int_equal(handshake(cli, srv), -1);
    assert_non_null(strstr(tls_conn_error(cli), "certificate verify failed"));
    tls_conn_free(srv);
    tls_conn_free(cli);

    tls_ctx_t *right = client_ctx(path("ca.pem"), false);
    srv = tls_conn_new(sc, NULL);
    cli = tls_conn_new(right, "billing.example");
    assert_int_equal(handshake(cli, srv), -1);
    assert_non_null(strstr(tls_conn_error(cli), "hostname mismatch"));
    tls_conn_free(srv);
    tls_conn_free(cli);
    tls_ctx_unref(sc);
    tls_ctx_unref(wrong);
    tls_ctx_unref(right);
}

/* With TLS 1.3 the client finishes first; the server's verdict on its
 * certificate comes with the server's next read. */
static int mutual(const char *allow, bool client_cert, tls_conn_t **srv_out)
{
    tls_ctx_t *sc = server_ctx(path("ca.pem"), allow);
    tls_ctx_t *cc = client_ctx(path("ca.pem"), client_cert);
    assert_true(tls_ctx_mutual(sc));
    tls_conn_t *srv = tls_conn_new(sc, NULL), *cli = tls_conn_new(cc, "localhost");
    tls_ctx_unref(sc);
    tls_ctx_unref(cc);
    int rc = handshake(cli, srv);
    if (rc == 0 && tls_conn_write(cli, "x", 1) == 0) {
        char c;
        move(cli, srv);
        rc = tls_conn_read(srv, &c, 1) == 1 ? 0 : -1;
    }
    if (rc != 0)
        print_message("mutual(%s): client: %s; server: %s\n", allow ? allow : "-",
                      tls_conn_error(cli), tls_conn_error(srv));
    tls_conn_free(cli);
    *srv_out = srv;
    return rc;
}

static void test_mutual_allow_list(void **state)
{
    (void)state;
    tls_conn_t *srv;
    assert_int_equal(mutual("nobody\nmirth.example", true, &srv), 0);
    assert_string_equal(tls_conn_peer_subject(srv), "CN=mirth.example");
    tls_conn_free(srv);

    assert_int_equal(mutual("if@example.org", true, &srv), 0); /* a SAN email */
    tls_conn_free(srv);

    assert_int_equal(mutual("CN=mirth.*", true, &srv), 0); /* the subject, a glob */
    tls_conn_free(srv);

    assert_int_equal(mutual("other.example\n*.net", true, &srv), -1);
    assert_true(tls_conn_not_allowed(srv));
    tls_conn_free(srv);

    assert_int_equal(mutual(NULL, false, &srv), -1); /* no certificate at all */
    assert_false(tls_conn_not_allowed(srv));
    assert_non_null(strstr(tls_conn_error(srv), "certificate"));
    tls_conn_free(srv);
}

static void test_context_errors_and_expiry(void **state)
{
    (void)state;
    tls_ctx_t *ctx = (tls_ctx_t *)1;
    err_detail_t e;
    tls_settings_t mismatch = {.cert_file = path("server.pem"), .key_file = path("client.key")};
    assert_int_equal(tls_ctx_new(TLS_SERVER, &mismatch, &ctx, &e), ERR_BAD_CONFIG);
    assert_null(ctx);
    assert_non_null(strstr(e.msg, "client.key")); /* names the key that does not fit */

    tls_settings_t missing = {.cert_file = path("none.pem"), .key_file = path("server.key")};
    assert_int_equal(tls_ctx_new(TLS_SERVER, &missing, &ctx, &e), ERR_BAD_CONFIG);
    assert_non_null(strstr(e.msg, "none.pem"));

    tls_settings_t nocert = {0};
    assert_int_equal(tls_ctx_new(TLS_SERVER, &nocert, &ctx, &e), ERR_BAD_CONFIG);

    tls_settings_t badver = {
        .cert_file = path("server.pem"), .key_file = path("server.key"), .min_version = 11};
    assert_int_equal(tls_ctx_new(TLS_SERVER, &badver, &ctx, &e), ERR_BAD_CONFIG);

    ctx = server_ctx(NULL, NULL);
    int64_t left = tls_ctx_not_after(ctx) - (int64_t)time(NULL);
    assert_true(left > 19 * 86400 && left <= 20 * 86400); /* made with -days 20 */
    tls_ctx_unref(ctx);
}

static void test_plaintext_detection(void **state)
{
    (void)state;
    assert_false(tls_looks_like_plaintext(0x16));
    assert_true(tls_looks_like_plaintext(0x0B)); /* an MLLP frame */
    assert_true(tls_looks_like_plaintext('P'));  /* POST */
    assert_true(tls_looks_like_plaintext('G'));  /* GET */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_both_ways),
        cmocka_unit_test(test_client_refuses_unknown_ca_and_wrong_name),
        cmocka_unit_test(test_mutual_allow_list),
        cmocka_unit_test(test_context_errors_and_expiry),
        cmocka_unit_test(test_plaintext_detection),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
