/* Lower bound for the Linux benchmark: copy exactly the bytes dumplib's core holds from memory, to
 * the same file offsets, leaving the same holes, and nothing else: no ptrace stop, no notes, no
 * verification. Reads its plan from stdin: the file size, then "fileoff vaddr length" lines (hex),
 * taken from a dumplib core's PT_LOADs and data extents by linux_vs_gcore.py.
 *   rawcopy PID OUT < plan. Compiled by the benchmark; never committed built. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    pid_t pid = atoi(argv[1]);
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return 1;
    size_t chunk = 4 << 20;
    char *buf = malloc(chunk);
    unsigned long size, off, addr, len;
    if (scanf("%lx", &size) != 1) return 2;
    while (scanf("%lx %lx %lx", &off, &addr, &len) == 3) {
        for (unsigned long done = 0; done < len; done += chunk) {
            size_t n = len - done < chunk ? len - done : chunk;
            struct iovec l = {buf, n}, r = {(void *)(addr + done), n};
            ssize_t got = process_vm_readv(pid, &l, 1, &r, 1, 0);
            if (got > 0 && pwrite(fd, buf, got, off + done) != got) return 1;
        }
    }
    if (ftruncate(fd, size) != 0) return 1;
    return close(fd) != 0;
}
