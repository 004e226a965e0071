/* admincmd.h - spinegate-admin's worklist commands, shared by the program
 * (which runs them on the data folder when no daemon answers) and the daemon
 * (which runs them for it on its admin socket, app/adminsock.c), so that
 * both print the same thing and exit the same way.
 *
 * A command is parsed from the command line into an admin_req_t in the
 * program; the request travels to the daemon as JSON (admin_req_json,
 * admin_req_from_json, which checks it as strictly as the parser does, for
 * the socket is input) with the corrected message of a resend beside it.
 *
 * Ownership: an admin_req_t owns its strings; admin_req_free releases them.
 */
#ifndef SPINEGATE_ADMINCMD_H
#define SPINEGATE_ADMINCMD_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "rules.h"
#include "worklist.h"

typedef enum {
    ADMIN_LIST,
    ADMIN_SHOW,
    ADMIN_RESOLVE,
    ADMIN_REQUEUE,
    ADMIN_RESEND,
    ADMIN_STATS,
    ADMIN_PRUNE,
    ADMIN_UNLOCK, /* user unlock NAME: only the daemon holds the locks */
    ADMIN__COUNT
} admin_op_t;

/* The longest request header the socket takes (the message travels beside). */
#define ADMIN_REQ_MAX (64 * 1024)

typedef struct {
    admin_op_t op;
    bool json;                                /* --json */
    bool all;                                 /* requeue --all */
    char *state, *kind, *rule, *source, *ref; /* filters; NULL: none */
    int64_t since_ms, until_ms;
    int64_t *ids; /* show, resolve, resend: one; requeue: any */
    size_t nids;
    char *note;
    char *who;      /* who asks: recorded with a change */
    char *name;     /* user unlock */
    bool has_input; /* resend: the corrected message (else the stored one) */
    char *input;
    size_t input_len;
    char *input_path; /* the program's FILE argument ("-": stdin); never sent */
} admin_req_t;

/* The command's name as typed ("list", ...). */
const char *admin_op_name(admin_op_t op);

/* Parses argv (argv[0] the command: list, show, ...; not user) into r.
 * Returns 0, or 2 after saying why on err (a usage error). */
int admin_req_parse(int argc, char **argv, admin_req_t *r, FILE *err);

/* r as the JSON the socket carries (the message goes beside it). */
cJSON *admin_req_json(const admin_req_t *r);

/* The reverse, checking every member; false with why (cap bytes) when o
 * is not a request spinegate-admin would send. Borrows nothing from o. */
bool admin_req_from_json(const cJSON *o, admin_req_t *r, char *why, size_t cap);

void admin_req_free(admin_req_t *r);

/* What a command runs against. */
typedef struct {
    const config_t *cfg;
    worklist_t *wl;
    const rule_pack_t *pack; /* resend judges with it; NULL: loaded from cfg */
    const cJSON *live;       /* the daemon's destinations for stats; NULL without a daemon */
    FILE *out, *err;
} admin_env_t;

/* Runs r (not ADMIN_UNLOCK). Returns the exit status: 0 done, 1 refused,
 * 2 usage error, unknown item or unreadable data folder. */
int admin_run(const admin_env_t *env, const admin_req_t *r);

#endif
