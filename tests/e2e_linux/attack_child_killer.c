/* attack_child_killer TARGET DUMPER: SIGKILLs DUMPER the moment TARGET has a child, i.e. the moment the
 * snapshot's clone() has made one, while the injecting thread still holds the injected registers
 * (tests/e2e_linux/test_snapshot_attack_dumper_killed.py); prints "killed". */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int pid = atoi(argv[1]), dumper = atoi(argv[2]);
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
    for (long i = 0; i < 200000000L; i++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) return 3;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0) {
            kill(dumper, SIGKILL);
            printf("killed\n");
            return 0;
        }
    }
    return 1;
}
