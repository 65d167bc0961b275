/* Maps one file N times (N mappings: 4 KiB, read-only, not merged), then crashes: the postmortem handler
   reads smaps of such a process. many_maps N FILE */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    int fd = open(argv[2], O_RDONLY);
    for (int i = 0; i < n; i++)
        if (mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED) return 3;
    *(volatile int *)8 = 1;
    return 0;
}
