/* A target for dumplib's exit watcher (ProcessExit).
 *
 *   exit_target main      reads a line, then exit(3) from the main thread
 *   exit_target thread    reads a line in a second thread, which calls exit(3) (exit_group off the main thread)
 *   exit_target pthread   reads a line: a second thread ends alone (pthread_exit) and the process answers
 *                         "alive"; the next line ends it with exit(0)
 *   exit_target segv      reads a line, then dereferences NULL (dies of SIGSEGV, core dumps aside)
 *
 * One sleeping worker thread besides; marker holds "EXIT-MARKER-<pid>". Prints one JSON line first
 * (pid, and the tid of the thread that will end the process or itself). Built by the tests with gcc.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char marker[64];
static volatile int ended_alone;

static void *sleeper(void *arg) {
    for (;;) sleep(100);
    return arg;
}

__attribute__((noinline)) static void end_here(int code) {
    exit(code); /* EXIT-LINE */
}

static void *exiter(void *arg) {
    char line[16];
    printf("{\"pid\": %d, \"tid\": %d}\n", (int)getpid(), (int)gettid());
    fflush(stdout);
    if (fgets(line, sizeof line, stdin)) end_here(3);
    return arg;
}

static void *leaves_alone(void *arg) {
    ended_alone = 1;
    pthread_exit(arg);
}

int main(int argc, char **argv) {
    pthread_t t;
    char line[16];
    const char *mode = argc > 1 ? argv[1] : "main";
    snprintf(marker, sizeof marker, "EXIT-MARKER-%d", (int)getpid());
    pthread_create(&t, NULL, sleeper, NULL);
    if (strcmp(mode, "thread") == 0) {
        pthread_create(&t, NULL, exiter, NULL);
        for (;;) pause();
    }
    printf("{\"pid\": %d, \"tid\": %d}\n", (int)getpid(), (int)getpid());
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 1;
    if (strcmp(mode, "segv") == 0) {
        *(volatile int *)0 = 42;
    } else if (strcmp(mode, "pthread") == 0) {
        pthread_create(&t, NULL, leaves_alone, NULL);
        pthread_join(t, NULL);
        printf("alive %d\n", ended_alone);
        fflush(stdout);
        if (fgets(line, sizeof line, stdin)) end_here(0);
    }
    end_here(3);
    return 0;
}
