/* attack_exec_target: a process that calls execve while a snapshot of it is still being written
 * (tests/e2e_linux/test_snapshot_attack_exec.py). Its pid stays, its [vdso] and code move.
 *   attack_exec_target: 16 MiB of touched heap, prints its pid; on "exec" execs itself with "again".
 *   attack_exec_target again: installs a SIGSEGV handler (exits 77 if ever run), prints "again PID";
 *   on each "report" line prints {"handler": 1 if its SIGSEGV handler is still installed,
 *   "waitpid": what waitpid(-1, __WALL|WNOHANG) returns (-1: no child at all)}. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_segv(int sig) { (void)sig; _exit(77); }

int main(int argc, char **argv) {
    char line[64];
    if (argc > 1) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_segv;
        sigaction(SIGSEGV, &sa, NULL);
        printf("again %d\n", getpid());
        fflush(stdout);
        while (fgets(line, sizeof line, stdin)) {
            struct sigaction now;
            sigaction(SIGSEGV, NULL, &now);
            int st, got = waitpid(-1, &st, __WALL | WNOHANG);
            printf("{\"handler\": %d, \"waitpid\": %d}\n", now.sa_handler == on_segv, got);
            fflush(stdout);
        }
        return 0;
    }
    char *heap = malloc(16 << 20);
    for (int i = 0; i < (16 << 20); i += 4096) heap[i] = 1;
    printf("%d\n", getpid());
    fflush(stdout);
    while (fgets(line, sizeof line, stdin))
        if (!strncmp(line, "exec", 4)) {
            char *args[] = {argv[0], "again", NULL};
            execv("/proc/self/exe", args);
            return 9;
        }
    return 0;
}
