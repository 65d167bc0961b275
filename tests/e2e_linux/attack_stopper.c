/* attack_stopper PID SIG: sends SIG to PID the moment one of its threads is traced (TracerPid not 0),
 * i.e. while a dump holds it stopped; prints "ready" as it starts looking, then "sent". A C loop, so the signal lands within
 * microseconds of the stop (tests/e2e_linux/test_snapshot_attack_sigstop.py). */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int pid = atoi(argv[1]), sig = atoi(argv[2]);
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    printf("ready\n");
    fflush(stdout);
    for (long i = 0; i < 100000000L; i++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) return 3;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) return 3;
        buf[n] = 0;
        char *t = strstr(buf, "TracerPid:\t");
        if (t && t[11] != '0') {
            kill(pid, sig);
            printf("sent\n");
            return 0;
        }
    }
    return 1;
}
