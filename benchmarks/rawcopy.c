/* Lower bound for the Linux benchmark: copy the given ranges of a process with process_vm_readv
 * (4 MiB chunks) and write them out, nothing else: no ptrace stop, no notes, no sparseness.
 *   rawcopy PID OUT < "start end" lines (hex). Compiled by linux_vs_gcore.py; never committed built. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    pid_t pid = atoi(argv[1]);
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    size_t chunk = 4 << 20;
    char *buf = malloc(chunk);
    unsigned long lo, hi;
    while (scanf("%lx %lx", &lo, &hi) == 2) {
        for (unsigned long a = lo; a < hi; a += chunk) {
            size_t n = hi - a < chunk ? hi - a : chunk;
            struct iovec l = {buf, n}, r = {(void *)a, n};
            ssize_t got = process_vm_readv(pid, &l, 1, &r, 1, 0);
            if (got > 0 && write(fd, buf, got) != got) return 1;
        }
    }
    close(fd);
    return 0;
}
