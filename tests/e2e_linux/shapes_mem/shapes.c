/* Process shapes that stress what a core must not read, for tests/e2e_linux/test_shapes.py.
 *
 *   shapes eof FILE      16 GiB shared + 16 GiB private mappings of a 10-byte file (LMDB-style)
 *   shapes reserve       64 GiB MAP_NORESERVE reservation holding 3 MiB of data
 *   shapes shared        8 GiB each of memfd, MAP_SHARED|MAP_ANONYMOUS and SysV shm, mostly holes
 *   shapes hugetlb       4 MiB private MAP_HUGETLB, first huge page touched
 *   shapes threads N [B] N threads blocked in a system call, B more computing (never in one)
 *   shapes many N FILE [PAGES]  N separate one-page mappings of the first PAGES pages of FILE (1: all at
 *                        offset 0, the most ELF-header candidates for the planner)
 *   shapes fragments N   one page touched every 128 KiB, N times, in one private mapping
 *
 * Prints one JSON line of addresses, then answers each stdin line with "ok" until EOF.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#define GiB (1UL << 30)
#define MiB (1UL << 20)

static void *must(void *p, const char *what) {
    if (p == MAP_FAILED || p == NULL) { perror(what); exit(2); }
    return p;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {  /* incompressible bytes */
    unsigned x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 17; x ^= x << 5; p[i] = (unsigned char)x; }
}

static void *sleeper(void *arg) {
    volatile char local[256];
    local[0] = (char)(long)arg;
    for (;;) pause();
    return NULL;
}

static void *spinner(void *arg) {
    volatile char local[256 * 1024];  /* a live stack the writer must take, bigger than any slack */
    for (unsigned long i = 0;; i++) local[i % sizeof local] = (char)i;
    return arg;
}

static void serve(void) {
    char line[256];
    while (fgets(line, sizeof line, stdin)) { puts("ok"); fflush(stdout); }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    pid_t pid = getpid();
    if (!strcmp(mode, "eof") && argc > 2) {
        int fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || write(fd, "EOF-MARKER", 10) != 10) { perror("file"); return 2; }
        char *sh = must(mmap(NULL, 16 * GiB, PROT_READ, MAP_SHARED, fd, 0), "mmap shared");
        char *pr = must(mmap(NULL, 16 * GiB, PROT_READ, MAP_PRIVATE, fd, 0), "mmap private");
        volatile char c = sh[0] + pr[0];
        (void)c;
        printf("{\"pid\": %d, \"shared\": %lu, \"private\": %lu, \"size\": %lu}\n", pid, (unsigned long)sh,
               (unsigned long)pr, 16 * GiB);
    } else if (!strcmp(mode, "reserve")) {
        unsigned char *r = must(mmap(NULL, 64 * GiB, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0), "reserve");
        fill(r, 2 * MiB, 1);                  /* data at the start */
        fill(r + 40 * GiB, MiB, 2);           /* and deep inside */
        unsigned char *marker = r + 40 * GiB + 4096;
        sprintf((char *)marker, "DUMPLIB-RESERVE-%d", pid);
        printf("{\"pid\": %d, \"base\": %lu, \"size\": %lu, \"marker\": \"DUMPLIB-RESERVE-%d\", \"marker_address\": %lu,"
               " \"untouched\": %lu}\n", pid, (unsigned long)r, 64 * GiB, pid, (unsigned long)marker,
               (unsigned long)(r + 20 * GiB + 12345));
    } else if (!strcmp(mode, "shared")) {
        int mfd = memfd_create("dumplib-sparse", 0);
        if (mfd < 0 || ftruncate(mfd, 8 * GiB)) { perror("memfd"); return 2; }
        char *m = must(mmap(NULL, 8 * GiB, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0), "memfd map");
        char *a = must(mmap(NULL, 8 * GiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0), "shared anon");
        int id = shmget(IPC_PRIVATE, 8 * GiB, IPC_CREAT | 0600);
        char *s = id < 0 ? NULL : shmat(id, NULL, 0);
        if (id < 0 || s == (void *)-1) { perror("shm"); return 2; }
        shmctl(id, IPC_RMID, NULL);           /* freed when the process goes */
        char *areas[3] = {m, a, s};
        for (int i = 0; i < 3; i++) {
            sprintf(areas[i] + 5 * GiB, "DUMPLIB-SHARED-%d-%d", i, pid);
            fill((unsigned char *)areas[i], 256 * 1024, 10 + i);
            for (int k = 0; k < 8; k++)       /* pages 16 KiB apart: holes inside one stored run */
                areas[i][MiB + k * 16384] = 1;
        }
        printf("{\"pid\": %d, \"memfd\": %lu, \"anon\": %lu, \"sysv\": %lu, \"size\": %lu, \"marker_offset\": %lu}\n",
               pid, (unsigned long)m, (unsigned long)a, (unsigned long)s, 8 * GiB, 5 * GiB);
    } else if (!strcmp(mode, "hugetlb")) {
        char *h = must(mmap(NULL, 4 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0),
                       "hugetlb");
        sprintf(h + 100, "DUMPLIB-HUGE-%d", pid);
        printf("{\"pid\": %d, \"base\": %lu, \"marker\": \"DUMPLIB-HUGE-%d\", \"marker_address\": %lu}\n", pid,
               (unsigned long)h, pid, (unsigned long)(h + 100));
    } else if (!strcmp(mode, "threads") && argc > 2) {
        int n = atoi(argv[2]);
        for (long i = 0; i < n; i++) {
            pthread_t t;
            if (pthread_create(&t, NULL, sleeper, (void *)i)) { perror("pthread_create"); return 2; }
        }
        int busy = argc > 3 ? atoi(argv[3]) : 0;
        for (int i = 0; i < busy; i++) {
            pthread_t t;
            if (pthread_create(&t, NULL, spinner, NULL)) { perror("pthread_create"); return 2; }
        }
        usleep(200000);
        printf("{\"pid\": %d, \"threads\": %d}\n", pid, n + busy + 1);
    } else if (!strcmp(mode, "many") && argc > 3) {
        int n = atoi(argv[2]);
        int fd = open(argv[3], O_RDONLY);
        if (fd < 0) { perror("open"); return 2; }
        int pages = argc > 4 ? atoi(argv[4]) : 1;
        for (int i = 0; i < n; i++)  /* page i % PAGES of FILE: neighbours' offsets never follow on */
            must(mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, (off_t)(i % pages) * 4096), "mmap one page");
        printf("{\"pid\": %d, \"mappings\": %d}\n", pid, n);
    } else if (!strcmp(mode, "fragments") && argc > 2) {
        unsigned long n = strtoul(argv[2], NULL, 10), step = 128 * 1024;
        char *f = must(mmap(NULL, n * step, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
                       "fragments");
        for (unsigned long i = 0; i < n; i++) f[i * step] = 1;
        char *marker = f + (n - 1) * step + 8;
        sprintf(marker, "DUMPLIB-FRAGMENT-%d", pid);
        printf("{\"pid\": %d, \"base\": %lu, \"fragments\": %lu, \"marker\": \"DUMPLIB-FRAGMENT-%d\", "
               "\"marker_address\": %lu}\n", pid, (unsigned long)f, n, pid, (unsigned long)marker);
    } else {
        fprintf(stderr, "usage: see the comment at the top of shapes.c\n");
        return 2;
    }
    fflush(stdout);
    serve();
    return 0;
}
