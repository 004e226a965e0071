/* web.h - the files of the worklist web page (app/web/), embedded into the
 * daemon at build time by tools/embed.py (app/web_files.c). The page itself
 * is served by web.c; its entry points are in daemon.h. */
#ifndef SPINEGATE_WEB_H
#define SPINEGATE_WEB_H

#include <stddef.h>

typedef struct {
    const char *name;          /* base name: "index.html" */
    const unsigned char *data; /* NUL-terminated */
    size_t len;                /* without the NUL */
} web_embedded_t;

extern const web_embedded_t web_embedded_files[];
extern const size_t web_embedded_count;

#endif
