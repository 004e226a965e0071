/* fuzz_config.c - the config file reader on arbitrary bytes: it must give
 * a setting or an error naming the line, never crash. The bytes go through
 * a real file because that is the seam the daemon uses. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/sg-fuzz-config-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);
    config_t c;
    config_defaults(&c);
    err_detail_t d;
    if (config_load_file(&c, path, &d) == ERR_OK) {
        config_validate(&c, &d);
        FILE *null = fopen("/dev/null", "w");
        if (null) {
            config_dump(&c, null);
            fclose(null);
        }
    }
    config_free(&c);
    unlink(path);
    return 0;
}
