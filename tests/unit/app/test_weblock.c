/* test_weblock.c - unit tests of app/weblock.c: an account locks after its
 * attempts within the window and not when they are spread wider, stays
 * locked for the window, is unlocked by a good login's forgetting only
 * before the lock, by weblock_unlock at any time; an address locks at
 * WEBLOCK_ADDR_FACTOR times the attempts, IPv4 and IPv6 ports cut; a flood
 * of names does not push a locked account out of the table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>

#include "weblock.h"

#define MIN 60000ULL

static void test_account_locks(void **state)
{
    (void)state;
    weblock_t *l = weblock_new(3, 15 * MIN);
    assert_false(weblock_failed(l, "ann", "10.0.0.1:1000", 0));
    assert_false(weblock_failed(l, "ann", "10.0.0.2:1000", 1000));
    assert_int_equal(weblock_check(l, "ann", "10.0.0.3:1", 1000), WEBLOCK_OPEN);
    assert_true(weblock_failed(l, "ann", "10.0.0.3:1000", 2000)); /* the third locks */
    assert_int_equal(weblock_check(l, "ann", "10.0.0.9:1", 3000), WEBLOCK_ACCOUNT);
    assert_int_equal(weblock_check(l, "bob", "10.0.0.9:1", 3000), WEBLOCK_OPEN);
    /* Locked for the window, then open again. */
    assert_int_equal(weblock_check(l, "ann", "10.0.0.9:1", 2000 + 15 * MIN - 1), WEBLOCK_ACCOUNT);
    assert_int_equal(weblock_check(l, "ann", "10.0.0.9:1", 2000 + 15 * MIN), WEBLOCK_OPEN);
    weblock_free(l);
}

static void test_window(void **state)
{
    (void)state;
    weblock_t *l = weblock_new(3, 15 * MIN);
    /* Three failures, but the first is out of the window by the third. */
    assert_false(weblock_failed(l, "ann", "a:1", 0));
    assert_false(weblock_failed(l, "ann", "a:1", 10 * MIN));
    assert_false(weblock_failed(l, "ann", "a:1", 16 * MIN));
    assert_false(weblock_failed(l, "ann", "a:1", 17 * MIN));
    assert_true(weblock_failed(l, "ann", "a:1", 18 * MIN));
    weblock_free(l);
}

static void test_success_and_unlock(void **state)
{
    (void)state;
    weblock_t *l = weblock_new(2, MIN);
    assert_false(weblock_failed(l, "ann", "a:1", 0));
    weblock_succeeded(l, "ann"); /* forgets the failure */
    assert_false(weblock_failed(l, "ann", "a:1", 1));
    assert_true(weblock_failed(l, "ann", "a:1", 2));
    assert_false(weblock_unlock(l, "bob", 3));
    assert_true(weblock_unlock(l, "ann", 3));
    assert_int_equal(weblock_check(l, "ann", "b:1", 4), WEBLOCK_OPEN);
    assert_false(weblock_unlock(l, "ann", 5)); /* not locked any more */
    weblock_free(l);
}

static void test_address(void **state)
{
    (void)state;
    weblock_t *l = weblock_new(2, MIN);
    char name[16];
    /* 2 x WEBLOCK_ADDR_FACTOR failures from one address, each a new name
     * and a new source port: the address is refused, another is not. */
    for (int i = 0; i < 2 * WEBLOCK_ADDR_FACTOR; i++) {
        snprintf(name, sizeof name, "u%d", i);
        char peer[32];
        snprintf(peer, sizeof peer, "[2001:db8::7]:%d", 40000 + i);
        assert_false(weblock_failed(l, name, peer, (uint64_t)i));
    }
    assert_int_equal(weblock_check(l, "ann", "[2001:db8::7]:1", 100), WEBLOCK_ADDRESS);
    assert_int_equal(weblock_check(l, "ann", "[2001:db8::8]:1", 100), WEBLOCK_OPEN);
    for (int i = 0; i < 2 * WEBLOCK_ADDR_FACTOR - 1; i++)
        weblock_failed(l, name, "192.0.2.1:5", 200);
    assert_int_equal(weblock_check(l, "zed", "192.0.2.1:6", 300), WEBLOCK_OPEN); /* one short */
    weblock_failed(l, "other", "192.0.2.1:7", 300);
    assert_int_equal(weblock_check(l, "zed", "192.0.2.1:8", 400), WEBLOCK_ADDRESS);
    weblock_free(l);
}

static void test_flood_keeps_locks(void **state)
{
    (void)state;
    weblock_t *l = weblock_new(3, 15 * MIN);
    for (int i = 0; i < 3; i++)
        weblock_failed(l, "ann", "a:1", (uint64_t)i);
    /* Made-up names, one failure each (none locked), far more than the
     * table holds: they push each other out, not the lock. */
    char name[16], peer[32];
    for (int i = 0; i < 4 * WEBLOCK_SLOTS; i++) {
        snprintf(name, sizeof name, "n%d", i);
        snprintf(peer, sizeof peer, "10.%d.%d.1:1", i / 256, i % 256);
        assert_false(weblock_failed(l, name, peer, 1000 + (uint64_t)i));
    }
    assert_int_equal(weblock_check(l, "ann", "b:1", 5 * MIN), WEBLOCK_ACCOUNT);
    weblock_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_account_locks),      cmocka_unit_test(test_window),
        cmocka_unit_test(test_success_and_unlock), cmocka_unit_test(test_address),
        cmocka_unit_test(test_flood_keeps_locks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
