/* A target for dumplib's signal watcher.
 *
 *   signal_target SIDEFILE            SIGTERM/SIGUSR1 handler (SA_SIGINFO) records si_signo, si_code,
 *                                     si_pid into SIDEFILE and flips a marker in memory
 *   signal_target SIDEFILE --one-thread   the same without the sleeping second thread
 *   signal_target --segv              reads "go" on stdin, then dereferences NULL in crash_here()
 *   signal_target --segv-thread       the same, in a second thread (prints its tid too)
 *
 * Prints one JSON line (pid) once its handlers are in place. Built by the tests with gcc; never committed.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char marker[64];
static const char *sidefile;

static void on_signal(int signo, siginfo_t *info, void *ctx) {
    (void)ctx;
    snprintf(marker, sizeof marker, "HANDLER-HAS-RUN-%d", (int)getpid());
    FILE *f = fopen(sidefile, "a");
    if (f) {
        fprintf(f, "signo=%d code=%d pid=%d\n", info->si_signo, info->si_code, (int)info->si_pid);
        fclose(f);
    }
    (void)signo;
}

static void *worker_sleeps(void *arg) {
    for (;;) sleep(100);
    return arg;
}

__attribute__((noinline)) void crash_here(volatile int *p) {
    *p = 42; /* CRASH-LINE */
}

static void *reader_crashes(void *arg) {
    char line[16];
    printf("{\"pid\": %d, \"tid\": %d}\n", (int)getpid(), (int)gettid());
    fflush(stdout);
    if (fgets(line, sizeof line, stdin)) crash_here(NULL);
    return arg;
}

int main(int argc, char **argv) {
    pthread_t t;
    snprintf(marker, sizeof marker, "HANDLER-NOT-RUN-%d", (int)getpid());
    if (!(argc > 2 && strcmp(argv[2], "--one-thread") == 0)) pthread_create(&t, NULL, worker_sleeps, NULL);
    if (argc > 1 && strcmp(argv[1], "--segv-thread") == 0) {
        pthread_create(&t, NULL, reader_crashes, NULL);
        for (;;) pause();
    }
    if (argc > 1 && strcmp(argv[1], "--segv") == 0) {
        printf("{\"pid\": %d}\n", (int)getpid());
        fflush(stdout);
        char line[16];
        if (fgets(line, sizeof line, stdin)) crash_here(NULL);
        return 0;
    }
    sidefile = argc > 1 ? argv[1] : "/dev/null";
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    /* Announced once the handlers are in place: a signal sent as soon as the line is read must not
     * meet the default action (SIGTERM's would end the process, and the test would wait for a handler). */
    printf("{\"pid\": %d}\n", (int)getpid());
    fflush(stdout);
    for (;;) pause();
}
