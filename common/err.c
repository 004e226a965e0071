/* err.c - names and descriptions for err_t, and the detail helpers. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const err_descs[] = {
#define ERR__DESC(name, desc) desc,
    ERR_MAP(ERR__DESC)
#undef ERR__DESC
};

static const char *const err_names[] = {
#define ERR__NAME(name, desc) #name,
    ERR_MAP(ERR__NAME)
#undef ERR__NAME
};

const char *err_str(err_t code)
{
    if ((unsigned)code >= ERR__COUNT)
        return "unknown error";
    return err_descs[code];
}

const char *err_name(err_t code)
{
    if ((unsigned)code >= ERR__COUNT)
        return "UNKNOWN";
    return err_names[code];
}

void err_clear(err_detail_t *d)
{
    if (d)
        memset(d, 0, sizeof *d);
}

err_t err_set(err_detail_t *d, err_t code, size_t offset, const char *fmt, ...)
{
    if (!d)
        return code;
    d->code = code;
    d->offset = offset;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->msg, sizeof d->msg, fmt, ap);
        va_end(ap);
    } else {
        snprintf(d->msg, sizeof d->msg, "%s", err_str(code));
    }
    return code;
}
