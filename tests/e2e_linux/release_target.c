/* A target for the hand-over release tests: SIDEFILE DIR MIB
 *
 * Fills MIB MiB with bytes that compress slowly (pseudo-random, 16 values), so a full compressed dump
 * of it takes a while to write, flush and read back. A ticker thread wakes every millisecond and
 * records the longest gap between two wake-ups: how long the process was held stopped.
 *
 * The SIGUSR1 handler (SA_SIGINFO, run by the main thread: the ticker blocks the signal) appends to
 * SIDEFILE one line "signo=N code=C pid=P" followed by " entry=NAME" for every name DIR holds at that
 * moment: what a reader of DIR could see when the program went on. Only system calls in the handler
 * (open, getdents64, write): nothing that could wait on a lock the interrupted code holds.
 *
 * Prints one JSON line (pid) once the memory is filled, then obeys stdin: "gap N" prints N and the
 * ticker's longest gap in microseconds since the last "gap"; end of input exits. Built by the tests with gcc.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *sidefile, *directory;
static volatile long max_gap_us, last_tick_us;

static long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

static void *ticker(void *arg) {  /* started with SIGUSR1 blocked: the handler always runs on the main thread */
    last_tick_us = now_us();
    for (;;) {
        usleep(1000);
        long t = now_us();
        if (t - last_tick_us > max_gap_us) max_gap_us = t - last_tick_us;
        last_tick_us = t;
    }
    return arg;
}

struct dirent64_raw { unsigned long long ino; long long off; unsigned short reclen; unsigned char type; char name[]; };

static void put(char *line, size_t *at, size_t cap, const char *text) {
    size_t n = strlen(text);
    if (*at + n < cap) { memcpy(line + *at, text, n); *at += n; }
}

static void on_signal(int signo, siginfo_t *info, void *ctx) {
    (void)ctx; (void)signo;
    static char line[65536], number[96];
    size_t at = 0;
    snprintf(number, sizeof number, "signo=%d code=%d pid=%d", info->si_signo, info->si_code, (int)info->si_pid);
    put(line, &at, sizeof line, number);
    int dir = open(directory, O_RDONLY | O_DIRECTORY);
    if (dir >= 0) {
        static char buf[32768];
        long n;
        while ((n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
            for (long off = 0; off < n;) {
                struct dirent64_raw *d = (struct dirent64_raw *)(buf + off);
                if (strcmp(d->name, ".") && strcmp(d->name, "..")) {
                    put(line, &at, sizeof line, " entry=");
                    put(line, &at, sizeof line, d->name);
                }
                off += d->reclen;
            }
        }
        close(dir);
    }
    put(line, &at, sizeof line, "\n");
    int f = open(sidefile, O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (f >= 0) {
        if (write(f, line, at) < 0) {}
        close(f);
    }
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    sidefile = argv[1];
    directory = argv[2];
    size_t size = (size_t)atol(argv[3]) << 20;
    unsigned char *block = malloc(size);
    if (!block) return 3;
    unsigned long x = 88172645463325252UL;
    for (size_t i = 0; i < size; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;  /* xorshift64 */
        block[i] = (unsigned char)(x & 0x0f);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    pthread_t t;
    pthread_create(&t, NULL, ticker, NULL);
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    printf("{\"pid\": %d}\n", (int)getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "gap", 3) == 0) {
            long open_gap = now_us() - last_tick_us;
            /* "gap N" is answered "N GAP": a request read twice (its answer given twice) shows */
            printf("%ld %ld\n", atol(line + 3), open_gap > max_gap_us ? open_gap : max_gap_us);
            fflush(stdout);
            max_gap_us = 0;
        }
    }
    return 0;
}
