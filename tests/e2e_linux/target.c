/* A Linux test target for dumplib: known function names per thread, a heap marker, awkward memory.
 *
 *   target [--threads N] [--heap MIB] [--ticker] [--nodump]
 *
 * Prints one JSON line (pid, marker, marker address, secret/prot-none/eof-mapping addresses), then
 * obeys stdin: "gap" prints the ticker's largest gap in microseconds since the last "gap";
 * end of input exits. Built by the tests with gcc; never committed as a binary.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static volatile long max_gap_us;
static volatile long last_tick_us;
static volatile int spin_forever = 1;

/* Threads that have reached their function: "ready" is printed only once all have, so that a dump
 * made at once finds each in its function, not still in clone3 (seen on a loaded CI machine). */
static int started;

static void thread_started(void) { __atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST); }

static long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

__attribute__((noinline)) void *thread_alpha_spin(void *arg) {
    volatile unsigned long n = 0;
    thread_started();
    while (spin_forever) { n++; if ((n & 0xfffff) == 0) usleep(1000); }
    return arg;
}

__attribute__((noinline)) void *thread_beta_wait(void *arg) {
    thread_started();
    pthread_mutex_lock(&lock);
    for (;;) pthread_cond_wait(&never, &lock);
    return arg;
}

__attribute__((noinline)) void *thread_gamma_sleep(void *arg) {
    thread_started();
    for (;;) sleep(100);
    return arg;
}

__attribute__((noinline)) void *thread_many_park(void *arg) {
    thread_started();
    for (;;) pause();
    return arg;
}

__attribute__((noinline)) void *thread_ticker(void *arg) {
    thread_started();
    last_tick_us = now_us();
    for (;;) {
        usleep(1000);
        long t = now_us();
        if (t - last_tick_us > max_gap_us) max_gap_us = t - last_tick_us;
        last_tick_us = t;
    }
    return arg;
}

__attribute__((noinline)) static void main_wait_for_input(void) {
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "gap", 3) == 0) {
            /* Right after a stop ends this thread may answer before the ticker has woken to
             * record the gap: count the gap still open too. */
            long open_gap = last_tick_us ? now_us() - last_tick_us : 0;
            printf("%ld\n", open_gap > max_gap_us ? open_gap : max_gap_us);
            fflush(stdout);
            max_gap_us = 0;
        }
    }
}

int main(int argc, char **argv) {
    int threads = 3, ticker = 0;
    long heap_mib = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--heap") && i + 1 < argc) heap_mib = atol(argv[++i]);
        else if (!strcmp(argv[i], "--ticker")) ticker = 1;
        else if (!strcmp(argv[i], "--nodump")) prctl(PR_SET_DUMPABLE, 0);  /* as setuid programs are */
    }
    char *marker = malloc(64);
    snprintf(marker, 64, "DUMPLIB-HEAP-MARKER-%d", (int)getpid());
    if (heap_mib > 0) {  /* touched with non-zero data so every page is real */
        size_t n = (size_t)heap_mib << 20;
        unsigned char *heap = malloc(n);
        for (size_t i = 0; i < n; i += 64) heap[i] = (unsigned char)(i >> 6) | 1;
    }
    /* MADV_DONTDUMP: must never reach a core. */
    char *secret = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    snprintf(secret, 64, "DUMPLIB-DONTDUMP-SECRET-%d", (int)getpid());
    madvise(secret, 1 << 20, MADV_DONTDUMP);
    /* PROT_NONE: described, never read. */
    char *guard = mmap(NULL, 1 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    /* A private file mapping two pages long over a 100-byte file: the second page faults (SIGBUS). */
    char path[] = "/tmp/dumplib-eof-XXXXXX";
    int fd = mkstemp(path);
    if (write(fd, "DUMPLIB-FILE-PAGE", 17) != 17) return 2;
    ftruncate(fd, 100);
    char *eof = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, fd, 0);
    unlink(path);
    /* Read once, so its page is resident: a core never faults in a file's page that is not. */
    if (eof != MAP_FAILED && *(volatile char *)eof != 'D') return 2;

    pthread_t t;
    void *(*named[3])(void *) = {thread_alpha_spin, thread_beta_wait, thread_gamma_sleep};
    for (int i = 0; i < threads; i++) pthread_create(&t, NULL, i < 3 ? named[i] : thread_many_park, NULL);
    if (ticker) pthread_create(&t, NULL, thread_ticker, NULL);
    while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < threads + ticker) usleep(100);
    printf("{\"pid\": %d, \"marker\": \"%s\", \"marker_address\": %lu, \"secret_address\": %lu,"
           " \"guard_address\": %lu, \"eof_address\": %lu, \"threads\": %d}\n",
           (int)getpid(), marker, (unsigned long)marker, (unsigned long)secret, (unsigned long)guard,
           (unsigned long)eof, threads + 1 + ticker);
    fflush(stdout);
    main_wait_for_input();
    return 0;
}
