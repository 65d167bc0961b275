/* attack_heap_target MIB: touches MIB MiB of heap (so clone() has that many page-table entries to
 * copy), prints its pid and waits; exits 0 on EOF of stdin (tests/e2e_linux/test_snapshot_attack_*). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long size = (argc > 1 ? atol(argv[1]) : 64) << 20;
    char *heap = malloc(size);
    if (!heap) return 2;
    for (long i = 0; i < size; i += 4096) heap[i] = 1;
    printf("%d\n", getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
