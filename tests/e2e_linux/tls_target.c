/* Threads that each hold a known errno (thread-local): 7100 in the main thread, 7101.. in the others;
   and tls_pad[0] and tls_pad[10000]: 50 in the main thread, 51.. in the others.
   Prints one JSON line, then sleeps until its stdin closes. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define WORKERS 3
static pthread_barrier_t ready;
/* Five pages of the executable's static TLS: its bytes lie pages below the thread pointer. */
__thread char tls_pad[20480];

static void *worker(void *arg) {
    errno = 7101 + (int)(long)arg;
    tls_pad[0] = tls_pad[10000] = (char)(51 + (int)(long)arg);
    pthread_barrier_wait(&ready);
    for (;;) pause();
    return NULL;
}

int main(void) {
    pthread_t t[WORKERS];
    pthread_barrier_init(&ready, NULL, WORKERS + 1);
    for (long i = 0; i < WORKERS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    pthread_barrier_wait(&ready);
    printf("{\"pid\": %d, \"threads\": %d}\n", getpid(), WORKERS + 1);
    fflush(stdout);
    errno = 7100;
    tls_pad[0] = tls_pad[10000] = 50;
    char buf[16];
    while (read(0, buf, sizeof buf) > 0) errno = 7100;
    return 0;
}
