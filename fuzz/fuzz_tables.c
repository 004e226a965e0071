/* fuzz_tables.c - the table file parser on arbitrary bytes. The parser
 * checks the header's body checksum first, which would make most mutated
 * inputs stop there; so when the input has no header, the target builds one
 * around the bytes with the right checksum, and the body rows (codes, notes,
 * code references, DRG lists) get fuzzed too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"
#include "xmalloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rule__table_t t;
    err_detail_t d;
    if (size && data[0] == '#') {
        if (rule__table_parse("fuzz", (const char *)data, size, &t, &d) == ERR_OK)
            rule__table_free(&t);
        return 0;
    }
    size_t lines = 0;
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n' || i == 0;
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "#spinegate-tables\t1\n#fiscal_year\tFY2026\n#valid_from\t2025-10-01\n"
                      "#valid_to\t2026-09-30\n#body_lines\t%zu\n#body_fnv1a64\t%016llx\n",
                      lines, (unsigned long long)fnv(data, size));
    char *buf = xmalloc((size_t)hl + size);
    memcpy(buf, head, (size_t)hl);
    memcpy(buf + hl, data, size);
    if (rule__table_parse("fuzz", buf, (size_t)hl + size, &t, &d) == ERR_OK) {
        /* exercise the lookups the rules make */
        rule__table_find(&t, "M4304");
        rule__table_seven_for(&t, "S32001A");
        rule__table_free(&t);
    }
    xfree(buf);
    return 0;
}
