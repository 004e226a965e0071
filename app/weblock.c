/* weblock.c - failed-login counts per account and per address (weblock.h). */
#include "weblock.h"

#include <stdio.h>
#include <string.h>

#include "xmalloc.h"

#define KEY_MAX 80 /* an account name (64) or an address with its port cut */

typedef struct {
    bool used;
    char key[KEY_MAX];
    unsigned failures;
    uint64_t first_ms; /* the first failure of the current window */
    uint64_t locked_until;
} slot_t;

struct weblock {
    unsigned attempts;
    uint64_t window_ms;
    slot_t names[WEBLOCK_SLOTS], addrs[WEBLOCK_SLOTS];
};

weblock_t *weblock_new(unsigned attempts, uint64_t window_ms)
{
    weblock_t *l = xcalloc(1, sizeof *l);
    l->attempts = attempts;
    l->window_ms = window_ms;
    return l;
}

void weblock_free(weblock_t *l)
{
    xfree(l);
}

static slot_t *find(slot_t *t, const char *key)
{
    for (size_t i = 0; i < WEBLOCK_SLOTS; i++)
        if (t[i].used && strcmp(t[i].key, key) == 0)
            return &t[i];
    return NULL;
}

/* A slot for key: its own, a free one, else the one that matters least (an
 * unlocked one with the oldest window, then the lock that ends first). */
static slot_t *take(slot_t *t, const char *key, uint64_t now)
{
    slot_t *s = find(t, key), *victim = NULL;
    if (s)
        return s;
    for (size_t i = 0; i < WEBLOCK_SLOTS; i++) {
        slot_t *c = &t[i];
        if (!c->used) {
            victim = c;
            break;
        }
        bool c_locked = c->locked_until > now;
        if (!victim || (!c_locked && victim->locked_until > now) ||
            (c_locked == (victim->locked_until > now) &&
             (c_locked ? c->locked_until < victim->locked_until : c->first_ms < victim->first_ms)))
            victim = c;
    }
    memset(victim, 0, sizeof *victim);
    victim->used = true;
    snprintf(victim->key, sizeof victim->key, "%s", key);
    return victim;
}

/* "10.0.0.7:51234" or "[::1]:51234" -> the address without the port. */
static void addr_key(const char *peer, char *out, size_t cap)
{
    snprintf(out, cap, "%s", peer ? peer : "");
    char *colon = strrchr(out, ':');
    if (colon && (out[0] != '[' || (colon > out && colon[-1] == ']')))
        *colon = '\0';
}

static bool locked(const slot_t *s, uint64_t now)
{
    return s && s->locked_until > now;
}

weblock_state_t weblock_check(weblock_t *l, const char *name, const char *addr, uint64_t now)
{
    char key[KEY_MAX];
    addr_key(addr, key, sizeof key);
    if (locked(find(l->names, name), now))
        return WEBLOCK_ACCOUNT;
    if (locked(find(l->addrs, key), now))
        return WEBLOCK_ADDRESS;
    return WEBLOCK_OPEN;
}

/* One more failure in s's window; true when it reaches limit and locks. */
static bool count(weblock_t *l, slot_t *s, unsigned limit, uint64_t now)
{
    if (s->failures == 0 || now - s->first_ms >= l->window_ms) {
        s->failures = 0;
        s->first_ms = now;
    }
    if (++s->failures < limit)
        return false;
    s->locked_until = now + l->window_ms;
    s->failures = 0;
    return true;
}

bool weblock_failed(weblock_t *l, const char *name, const char *addr, uint64_t now)
{
    char key[KEY_MAX];
    addr_key(addr, key, sizeof key);
    count(l, take(l->addrs, key, now), l->attempts * WEBLOCK_ADDR_FACTOR, now);
    return count(l, take(l->names, name, now), l->attempts, now);
}

void weblock_succeeded(weblock_t *l, const char *name)
{
    slot_t *s = find(l->names, name);
    if (s)
        memset(s, 0, sizeof *s);
}

bool weblock_unlock(weblock_t *l, const char *name, uint64_t now)
{
    slot_t *s = find(l->names, name);
    bool was = locked(s, now);
    if (s)
        memset(s, 0, sizeof *s);
    return was;
}
