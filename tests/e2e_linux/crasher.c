/* A process that crashes on purpose, for the postmortem handler's tests.
   crasher [MiB [NAME [FORKS [r]]]]: touches MiB of heap (r: fills it with random bytes, which no
   compressor shrinks), renames itself NAME (prctl), forks FORKS children that live on, then a worker
   thread writes through a null pointer (SIGSEGV). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <unistd.h>

volatile char *marker;

static void *idle(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

static void *worker(void *arg) {
    (void)arg;
    volatile int *nowhere = (int *)8;
    *nowhere = 42; /* CRASH HERE */
    return NULL;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1;
    if (argc > 2 && argv[2][0]) prctl(PR_SET_NAME, argv[2], 0, 0, 0);
    int forks = argc > 3 ? atoi(argv[3]) : 0;
    marker = malloc(mib << 20);
    for (size_t i = 0; i < (mib << 20); i += 4096) marker[i] = (char)(i >> 12) | 1;
    if (argc > 4 && argv[4][0] == 'r') {
        int fd = open("/dev/urandom", O_RDONLY);
        for (size_t got = 0; fd >= 0 && got < (mib << 20);) {
            ssize_t n = read(fd, (char *)marker + got, (mib << 20) - got);
            if (n <= 0) break;
            got += (size_t)n;
        }
        close(fd);
    }
    memcpy((char *)marker, "POSTMORTEM-MARKER", 17);
    for (int i = 0; i < forks; i++) {
        if (fork() == 0) { close(1); close(2); sleep(10); _exit(0); }
    }
    pthread_t a, b, c;
    pthread_create(&a, NULL, idle, NULL);
    pthread_create(&b, NULL, idle, NULL);
    usleep(100000);
    printf("ready\n");
    fflush(stdout);
    pthread_create(&c, NULL, worker, NULL);
    pthread_join(c, NULL);
    return 0;
}
