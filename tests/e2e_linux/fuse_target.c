/* A target that maps a file (on the stalling FUSE file system of tests/e2e_linux/fusestall.py) and
 * touches only its first page, so one page of the mapping is resident and the rest would have to be
 * read from a file system that never answers; and maps a second file COLD without touching it.
 *
 *   fuse_target PATH shared|private [COLD]
 *
 * Prints one JSON line (pid, address, size, cold), then serves lines on stdin:
 *   mmap   maps and unmaps one anonymous page, then prints "mapped" (proves its mmap lock is free)
 *   churn  starts a thread that maps and unmaps a page every millisecond, for good
 * Built by the tests with gcc; never committed as a binary.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile char sink;

static void *churn(void *arg) {
    (void)arg;
    for (;;) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED)
            munmap(p, 4096);
        usleep(1000);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0)
        return 1;
    int flags = strcmp(argv[2], "shared") == 0 ? MAP_SHARED : MAP_PRIVATE;
    char *map = mmap(NULL, st.st_size, PROT_READ, flags, fd, 0);
    if (map == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    sink = map[0]; /* the first page only: the file system answers it */
    char *cold = NULL;
    if (argc > 3) {
        int cfd = open(argv[3], O_RDONLY);
        struct stat cst;
        if (cfd < 0 || fstat(cfd, &cst) != 0)
            return 1;
        cold = mmap(NULL, cst.st_size, PROT_READ, flags, cfd, 0); /* never touched: nothing resident */
        if (cold == MAP_FAILED)
            return 1;
    }
    printf("{\"pid\": %d, \"address\": %lu, \"size\": %ld, \"cold\": %lu}\n", getpid(), (unsigned long)map,
           (long)st.st_size, (unsigned long)cold);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "mmap", 4) == 0) {
            void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p != MAP_FAILED)
                munmap(p, 4096);
            printf("mapped\n");
        } else if (strncmp(line, "churn", 5) == 0) {
            pthread_t t;
            pthread_create(&t, NULL, churn, NULL);
            printf("churning\n");
        }
        fflush(stdout);
    }
    return 0;
}
