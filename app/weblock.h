/* weblock.h - login throttling of the worklist web page: an account with
 * `attempts` failed logins within `window_ms` is locked for `window_ms`;
 * a client address with ADDR_FACTOR times as many failures (many coders may
 * share one address behind a proxy) is refused as long. Names that have no
 * account are counted and locked like those that have, so that a lock says
 * nothing about which accounts exist.
 *
 * The counts live in the daemon's memory only, in tables of fixed size (a
 * flood of made-up names cannot grow them): a restart forgets them, which
 * an attacker cannot cause, and `spinegate-admin user unlock` asks the
 * running daemon. Times are the caller's clock in ms. Not thread-safe: the
 * daemon's loop thread only.
 */
#ifndef SPINEGATE_WEBLOCK_H
#define SPINEGATE_WEBLOCK_H

#include <stdbool.h>
#include <stdint.h>

#define WEBLOCK_ADDR_FACTOR 4
#define WEBLOCK_SLOTS 512 /* accounts, and addresses, tracked at once */

typedef struct weblock weblock_t;

weblock_t *weblock_new(unsigned attempts, uint64_t window_ms);
void weblock_free(weblock_t *l); /* accepts NULL */

/* Why a login is refused before its password is looked at. */
typedef enum { WEBLOCK_OPEN, WEBLOCK_ACCOUNT, WEBLOCK_ADDRESS } weblock_state_t;
weblock_state_t weblock_check(weblock_t *l, const char *name, const char *addr, uint64_t now);

/* A failed login of name from addr. True when it locked the account. */
bool weblock_failed(weblock_t *l, const char *name, const char *addr, uint64_t now);

/* A good login: the account's failures are forgotten. */
void weblock_succeeded(weblock_t *l, const char *name);

/* Clears name's lock and failures. True when it was locked at now. */
bool weblock_unlock(weblock_t *l, const char *name, uint64_t now);

#endif
