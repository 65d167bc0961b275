/* Process shapes that make stopping a target hard, for tests/e2e_linux/test_pause.py.
 *
 *   pause_target HEARTBEAT_FILE [--pthread-exit] [--heap MIB]
 *
 * A heartbeat thread rewrites HEARTBEAT_FILE with a counter every 5 ms, so a test can see from the
 * outside whether the process runs. It prints {"pid", "heartbeat_tid", "marker_address", "marker"} on
 * stdout (after filling MIB of heap with data, so that a full dump of it takes a while), then:
 *   --pthread-exit: the main thread calls pthread_exit; the process lives on in its other threads
 *                   (the leader is a zombie, as /proc shows it).
 *   otherwise:      the main thread obeys stdin: "vfork S" vforks a child that sleeps S seconds
 *                   (the main thread then waits in the kernel, where no signal or ptrace stop can
 *                   reach it) and answers "vforked" when the child is gone.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int heartbeat_fd;
static char marker[64];

__attribute__((noinline)) void *pause_heartbeat(void *arg) {
    (void)arg;
    char text[32];
    for (unsigned long beat = 1;; beat++) {
        int n = snprintf(text, sizeof text, "%020lu\n", beat);
        if (pwrite(heartbeat_fd, text, (size_t)n, 0) != n) abort();
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

__attribute__((noinline)) void *pause_worker_waits(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int pthread_exit_mode = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--pthread-exit")) pthread_exit_mode = 1;
        if (!strcmp(argv[i], "--heap") && i + 1 < argc) {
            size_t n = (size_t)atol(argv[++i]) << 20;
            unsigned char *heap = malloc(n);
            for (size_t j = 0; j < n; j += 64) heap[j] = (unsigned char)(j >> 6) | 1;
        }
    }
    heartbeat_fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (heartbeat_fd < 0) return 3;
    snprintf(marker, sizeof marker, "DUMPLIB-PAUSE-MARKER-%d", (int)getpid());
    pthread_t t;
    pthread_create(&t, NULL, pause_heartbeat, NULL);
    pthread_create(&t, NULL, pause_worker_waits, NULL);
    printf("{\"pid\": %d, \"marker\": \"%s\", \"marker_address\": %lu, \"threads\": 3}\n", (int)getpid(), marker,
           (unsigned long)marker);
    fflush(stdout);
    if (pthread_exit_mode) pthread_exit(NULL);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        int seconds;
        if (sscanf(line, "vfork %d", &seconds) == 1) {
            pid_t child = vfork();
            if (child == 0) {
                sleep((unsigned)seconds);
                _exit(0);
            }
            printf("vforked\n");
            fflush(stdout);
        }
    }
    return 0;
}
