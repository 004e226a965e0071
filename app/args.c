/* args.c - command line parsing on top of the config table. The config
 * file is read first, wherever --config appears, so that the command line
 * always wins over the file. */
#include "args.h"

#include <stdio.h>
#include <string.h>

/* Records a usage error in d and returns 2. */
#define USAGE(...) (err_set(d, ERR_BAD_CONFIG, 0, __VA_ARGS__), 2)

int args_parse(int argc, char *const *argv, config_t *c, args_t *a, err_detail_t *d)
{
    err_clear(d);
    memset(a, 0, sizeof *a);
    config_defaults(c);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) {
            if (i + 1 >= argc)
                return USAGE("--config needs a file name");
            a->config_file = argv[++i];
        }
    }
    if (a->config_file && config_load_file(c, a->config_file, d) != ERR_OK)
        return 2;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--config") == 0 || strcmp(arg, "-c") == 0) {
            i++;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            a->help = true;
            continue;
        }
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
            a->version = true;
            continue;
        }
        if (strcmp(arg, "--check-config") == 0) {
            a->check_config = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0)
            return USAGE("unexpected argument '%.100s' (see --help)", arg);
        char key[64];
        const char *value = NULL;
        const char *eq = strchr(arg + 2, '=');
        size_t klen = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        if (klen >= sizeof key)
            return USAGE("unknown option '%.100s' (see --help)", arg);
        memcpy(key, arg + 2, klen);
        key[klen] = '\0';
        if (!config_key_exists(key))
            return USAGE("unknown option '--%s' (see --help)", key);
        if (eq)
            value = eq + 1;
        else if (config_key_is_flag(key))
            value = "yes";
        else if (i + 1 < argc)
            value = argv[++i];
        else
            return USAGE("--%s needs a value (see --help)", key);
        if (config_set(c, key, value, 0, d) != ERR_OK) {
            char why[sizeof d->msg];
            snprintf(why, sizeof why, "%s", d->msg);
            return USAGE("--%.150s", why);
        }
    }
    return 0;
}
