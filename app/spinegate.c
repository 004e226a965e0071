/* spinegate.c - the daemon's main: settings from the config file and the
 * command line, --help/--version/--check-config, logging, then daemon_run(). */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "auth.h"
#include "daemon.h"
#include "log.h"
#include "xmalloc.h"

static void usage(FILE *f)
{
    fputs("usage: spinegate [--config FILE] [--KEY VALUE ...]\n"
          "       spinegate --listen-mllp HOST:PORT [--downstream-mllp HOST:PORT] --data-dir DIR\n"
          "       spinegate --listen-http HOST:PORT [--downstream-fhir URL] --data-dir DIR\n"
          "       spinegate --help | --version | --check-config\n\n"
          "Pre-billing gate for ICD-10-CM spine coding: HL7 v2 over MLLP, FHIR R4 Claims\n"
          "over HTTP. Every setting below is also a config file line 'key = value'\n"
          "(see spinegate.conf(5)); the command line wins over the file.\n\n"
          "  --config FILE                      read settings from FILE first\n"
          "  --check-config                     check settings, rule pack, tables and http-tokens;\n"
          "                                     print them\n"
          "  --help, --version\n",
          f);
    config_print_help(f);
}

int main(int argc, char **argv)
{
    config_t cfg;
    args_t a;
    err_detail_t e;
    int rc = args_parse(argc, argv, &cfg, &a, &e);
    if (rc != 0) {
        fprintf(stderr, "spinegate: %s\n", e.msg);
        config_free(&cfg);
        return rc;
    }
    if (a.help) {
        usage(stdout);
        config_free(&cfg);
        return 0;
    }
    xmalloc_hook_libraries();
    if (a.version) {
        rule_pack_t *pack = NULL;
        printf("spinegate %s\n", PACKAGE_VERSION);
        if (daemon_pack_load(&cfg, &pack, &e) == ERR_OK)
            printf("%s\n", rule_pack_describe(pack));
        rule_pack_free(pack);
        config_free(&cfg);
        return 0;
    }
    err_clear(&e);
    if (config_validate(&cfg, &e) != ERR_OK) {
        fprintf(stderr, "spinegate: %s\n", e.msg);
        config_free(&cfg);
        return 2;
    }
    if (a.check_config) {
        rule_pack_t *pack = NULL;
        if (daemon_pack_load(&cfg, &pack, &e) != ERR_OK) {
            fprintf(stderr, "spinegate: rule pack: %s%s%s\n", e.where, e.where[0] ? ": " : "",
                    e.msg);
            config_free(&cfg);
            return 2;
        }
        auth_tokens_t *tokens = NULL;
        if (cfg.http_tokens && auth_tokens_load(cfg.http_tokens, &tokens, &e) != ERR_OK) {
            fprintf(stderr, "spinegate: http-tokens: %s\n", e.msg);
            rule_pack_free(pack);
            config_free(&cfg);
            return 2;
        }
        const char *warn[2];
        for (size_t i = 0, n = config_http_warnings(&cfg, warn, 2); i < n; i++)
            fprintf(stderr, "spinegate: warning: %s\n", warn[i]);
        for (size_t i = 0, n = config_admin_warnings(&cfg, warn, 2); i < n; i++)
            fprintf(stderr, "spinegate: warning: %s\n", warn[i]);
        printf("# configuration OK%s%s\n# %s\n", a.config_file ? " in " : "",
               a.config_file ? a.config_file : "", rule_pack_describe(pack));
        if (tokens)
            printf("# http-tokens: %zu tokens\n", auth_tokens_count(tokens));
        auth_tokens_free(tokens);
        config_dump(&cfg, stdout);
        rule_pack_free(pack);
        config_free(&cfg);
        return 0;
    }
    log_init("spinegate", cfg.log_target, (log_level_t)log_level_parse(cfg.log_level), cfg.log_phi);
    if (cfg.log_phi)
        log_warn("log-phi is on: message content (patient data) will be logged");
    return daemon_run(&cfg, argc, argv);
}
