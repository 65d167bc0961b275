/* attack_fds_target: a process that closes descriptors while a snapshot of it lives (tests/e2e_linux/
 * test_snapshot_attack_fds.py), and reports what the kernel then does for it: an epoll set forgets a
 * descriptor once it is closed, a flock goes with the descriptor that held it.
 *   attack_fds_target LOCKFILE: prints {"pid": N}; on each "close" line closes the pipe end it watches
 *   and its locked file, then prints {"events": N, "data": X}: what epoll_wait returns at once (0). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int p[2];
    if (argc < 2 || pipe(p)) return 2;
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xC0FFEE};
    if (write(p[1], "x", 1) != 1 || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev)) return 3;
    int lock = open(argv[1], O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX)) return 4;
    printf("{\"pid\": %d}\n", getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "close", 5)) continue;
        close(p[0]);
        close(lock);
        struct epoll_event got[4];
        int n = epoll_wait(ep, got, 4, 0);
        printf("{\"events\": %d, \"data\": %llu}\n", n, n > 0 ? (unsigned long long)got[0].data.u64 : 0ULL);
        fflush(stdout);
    }
    return 0;
}
