/* A target for tests/e2e_linux/test_snapshot_layout.py: private anonymous memory touched in part (the
 * pieces a snapshot finds from its clone's pagemap once the target runs), and the same in MADV_DONTFORK
 * and MADV_WIPEONFORK memory (whose pieces the clone cannot tell: read while the target is stopped).
 *
 * Each region has PAGES pages; the even ones hold "<WHAT>-<page>", the odd ones were never touched.
 * Prints one JSON line (pid and the regions' addresses), then obeys stdin:
 *   change   discard every page of the three regions (MADV_DONTNEED) and write "LATER-<page>" in the
 *            odd pages of the first: what the core must not show; answers "changed"
 * End of input exits. Built by the tests with gcc; never committed as a binary.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGES 64
#define PAGE 4096

static char *region(const char *what, int advice) {
    char *p = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || (advice && madvise(p, PAGES * PAGE, advice) != 0)) { perror(what); exit(3); }
    for (int i = 0; i < PAGES; i += 2) snprintf(p + i * PAGE, 32, "%s-%d", what, i);
    return p;
}

int main(void) {
    char *anon = region("ANON", 0);
    char *dontfork = region("DONTFORK", MADV_DONTFORK);
    char *wipe = region("WIPEONFORK", MADV_WIPEONFORK);
    printf("{\"pid\": %d, \"pages\": %d, \"ANON\": %lu, \"DONTFORK\": %lu, \"WIPEONFORK\": %lu}\n", (int)getpid(),
           PAGES, (unsigned long)anon, (unsigned long)dontfork, (unsigned long)wipe);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "change", 6)) {
            madvise(anon, PAGES * PAGE, MADV_DONTNEED);
            madvise(dontfork, PAGES * PAGE, MADV_DONTNEED);
            madvise(wipe, PAGES * PAGE, MADV_DONTNEED);
            for (int i = 1; i < PAGES; i += 2) snprintf(anon + i * PAGE, 32, "LATER-%d", i);
            printf("changed\n");
            fflush(stdout);
        }
    }
    return 0;
}
