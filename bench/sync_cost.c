/* sync_cost.c - what one synchronized write costs on this disk, with nothing
 * else running: the floor under the CPU a queue-sync=full group commit adds.
 *
 *   sync_cost DIR [BYTES] [N]
 *
 * Writes N (2000) blocks of BYTES (16384) to a scratch file in DIR, each as
 * the queue's log writes a group commit: O_DIRECT at the next offset with
 * RWF_DSYNC (or, where the file system refuses either, a plain write and
 * fdatasync). Prints the mean CPU time (getrusage: user + system) and wall
 * time of one write, and which way it wrote. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static double cpu_us(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 +
           (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

static double wall_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: sync_cost DIR [BYTES] [N]\n");
        return 2;
    }
    size_t bytes = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 16384;
    long n = argc > 3 ? strtol(argv[3], NULL, 10) : 2000;
    bytes = (bytes + 4095) / 4096 * 4096;
    if (bytes == 0 || n <= 0) {
        fprintf(stderr, "sync_cost: BYTES and N must be positive\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/sync_cost.bin", argv[1]);
    bool direct = true;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0600);
    if (fd < 0 && errno == EINVAL) {
        direct = false;
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    }
    if (fd < 0) {
        fprintf(stderr, "sync_cost: %s: %s\n", path, strerror(errno));
        return 1;
    }
    void *block;
    if (posix_memalign(&block, 4096, bytes) != 0) {
        fprintf(stderr, "sync_cost: out of memory\n");
        return 1;
    }
    memset(block, 'q', bytes);
    /* Write the whole file once first, as the log's preallocated segment is
     * written: the timed writes then change no file size or block map. */
    for (long i = 0; i < n; i++)
        if (pwrite(fd, block, bytes, (off_t)i * (off_t)bytes) != (ssize_t)bytes) {
            fprintf(stderr, "sync_cost: write: %s\n", strerror(errno));
            return 1;
        }
    if (fsync(fd) != 0) {
        fprintf(stderr, "sync_cost: fsync: %s\n", strerror(errno));
        return 1;
    }
    bool dsync = direct;
    double c0 = cpu_us(), t0 = wall_us();
    for (long i = 0; i < n; i++) {
        struct iovec v = {block, bytes};
        off_t at = (off_t)i * (off_t)bytes;
        if (dsync) {
            if (pwritev2(fd, &v, 1, at, RWF_DSYNC) == (ssize_t)bytes)
                continue;
            if (errno != EOPNOTSUPP && errno != ENOSYS) {
                fprintf(stderr, "sync_cost: pwritev2: %s\n", strerror(errno));
                return 1;
            }
            dsync = false;
        }
        if (pwrite(fd, block, bytes, at) != (ssize_t)bytes || fdatasync(fd) != 0) {
            fprintf(stderr, "sync_cost: write+fdatasync: %s\n", strerror(errno));
            return 1;
        }
    }
    double cpu = (cpu_us() - c0) / (double)n, wall = (wall_us() - t0) / (double)n;
    close(fd);
    unlink(path);
    free(block);
    printf("bytes=%zu writes=%ld cpu_us=%.1f wall_us=%.1f way=%s\n", bytes, n, cpu, wall,
           dsync    ? "direct+RWF_DSYNC"
           : direct ? "direct+fdatasync"
                    : "buffered+fdatasync");
    return 0;
}
