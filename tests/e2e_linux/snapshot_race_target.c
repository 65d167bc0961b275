/* A target for tests/e2e_linux/test_snapshot_guess.py: three mappings whose VmFlags it changes on
 * request, each a whole mapping (between PROT_NONE guards, so the advice splits nothing and
 * /proc/PID/maps does not change: only smaps shows it), two it writes into for the first time on
 * request (its page counts change, and nothing else), and a userfaultfd held on request.
 *
 * Each region has PAGES pages, every page holding "<WHAT>-<page>", but LATE and LATEWIPE (the latter
 * MADV_WIPEONFORK from the start), untouched. Prints one JSON line (pid, pages, the regions'
 * addresses), then obeys stdin, answering each line:
 *   DONTDUMP | DONTFORK | WIPEONFORK   madvise that region with that advice; answers "advised"
 *   DONTFORK-DONTDUMP   MADV_DONTDUMP on the DONTFORK region; answers "advised"
 *   touch         write "<WHAT>-<page>" into every page of LATE and LATEWIPE; answers "touched"
 *   uffd          open a userfaultfd (registers nothing) and keep it; answers "uffd <fd>"
 *   uffd-thread   a thread unshares its descriptor table and opens one there only; answers "uffd-thread"
 * End of input exits. Built by the tests with gcc; never committed as a binary.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGES 16
#define PAGE 4096

static void fill(char *p, const char *what) {
    for (int i = 0; i < PAGES; i++) snprintf(p + i * PAGE, 32, "%s-%d", what, i);
}

static char *region(const char *what, int touched) {
    char *p = mmap(NULL, (PAGES + 2) * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mprotect(p + PAGE, PAGES * PAGE, PROT_READ | PROT_WRITE) != 0) { perror(what); exit(3); }
    p += PAGE;
    if (touched) fill(p, what);
    return p;
}

static int answered;

static void *own_table(void *arg) {
    (void)arg;
    if (unshare(CLONE_FILES) != 0 || syscall(SYS_userfaultfd, O_CLOEXEC) < 0) { perror("uffd-thread"); exit(4); }
    __atomic_store_n(&answered, 1, __ATOMIC_SEQ_CST);
    for (;;) pause();
    return NULL;
}

int main(void) {
    const char *names[3] = {"DONTDUMP", "DONTFORK", "WIPEONFORK"};
    int advice[3] = {MADV_DONTDUMP, MADV_DONTFORK, MADV_WIPEONFORK};
    char *at[3];
    for (int i = 0; i < 3; i++) at[i] = region(names[i], 1);
    char *late = region("LATE", 0), *latewipe = region("LATEWIPE", 0);
    if (madvise(latewipe, PAGES * PAGE, MADV_WIPEONFORK) != 0) { perror("LATEWIPE"); exit(5); }
    printf("{\"pid\": %d, \"pages\": %d, \"DONTDUMP\": %lu, \"DONTFORK\": %lu, \"WIPEONFORK\": %lu, \"LATE\": %lu,"
           " \"LATEWIPE\": %lu}\n", (int)getpid(), PAGES, (unsigned long)at[0], (unsigned long)at[1],
           (unsigned long)at[2], (unsigned long)late, (unsigned long)latewipe);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        for (int i = 0; i < 3; i++)
            if (!strcmp(line, names[i])) {
                if (madvise(at[i], PAGES * PAGE, advice[i]) != 0) { perror(names[i]); exit(5); }
                printf("advised\n");
            }
        if (!strcmp(line, "DONTFORK-DONTDUMP")) {
            if (madvise(at[1], PAGES * PAGE, MADV_DONTDUMP) != 0) { perror(line); exit(5); }
            printf("advised\n");
        }
        if (!strcmp(line, "touch")) {
            fill(late, "LATE");
            fill(latewipe, "LATEWIPE");
            printf("touched\n");
        }
        if (!strcmp(line, "uffd")) {
            long fd = syscall(SYS_userfaultfd, O_CLOEXEC);
            if (fd < 0) { perror("uffd"); exit(4); }
            printf("uffd %ld\n", fd);
        }
        if (!strcmp(line, "uffd-thread")) {
            pthread_t t;
            pthread_create(&t, NULL, own_table, NULL);
            while (!__atomic_load_n(&answered, __ATOMIC_SEQ_CST)) usleep(1000);
            printf("uffd-thread\n");
        }
        fflush(stdout);
    }
    return 0;
}
