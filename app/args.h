/* args.h - the command line shared by the daemon: --config FILE, --help,
 * --version, --check-config, and every config key as --key [VALUE]. */
#ifndef SPINEGATE_ARGS_H
#define SPINEGATE_ARGS_H

#include <stdbool.h>

#include "config.h"

typedef struct {
    bool help, version, check_config;
    const char *config_file;
} args_t;

/* Reads argv into c (defaults, then the config file, then the command line
 * over it). Returns 0 on success, 2 on a usage error, described in d. c
 * holds allocations either way: config_free() it. SIGHUP calls this again
 * with the same argv, so a reload sees the same precedence as the start. */
int args_parse(int argc, char *const *argv, config_t *c, args_t *a, err_detail_t *d);

#endif
