/* A hostile target for mini dumps. Prints one JSON line, then waits until its stdin closes.
   "bss": a 1 GiB .bss, one byte touched (0x42 at big[1 << 29]): a mini core's cost must follow the pages present.
   "tls": the main thread's thread pointer (fs_base) set into 1 GiB of untouched memory, with a forged control
   block whose DTV claims 2^60 slots: 4096 dynamic TLS blocks a page apart and a static block 1 MiB long.
   "linkmap FILE": FILE (a sparse file) mapped private and writable, claimed a loaded object by a forged
   link_map node appended to the dynamic linker's chain (its dynamic section said to lie in the mapping). */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <fcntl.h>
#include <link.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static char big[1UL << 30];

static long raw_syscall3(long n, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "tls") == 0) {
        size_t size = 1UL << 30;
        char *area = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (area == MAP_FAILED) return 1;
        uint64_t *tp = (uint64_t *)(area + (size / 2));
        uint64_t *dtv = (uint64_t *)((char *)tp + (64 << 10));
        tp[0] = (uint64_t)tp;  /* the control block points at itself */
        tp[1] = (uint64_t)dtv;
        dtv[-2] = 1ULL << 60;  /* dtv[-1].counter */
        dtv[2] = (uint64_t)tp - (1 << 20);  /* slot 1: a static block 1 MiB below the thread pointer */
        for (uint64_t k = 2; k <= 4096; k++) dtv[2 * k] = (uint64_t)area + k * 4096 * 2;
        printf("{\"pid\": %d, \"tp\": %lu}\n", getpid(), (unsigned long)tp);
        fflush(stdout);
        raw_syscall3(SYS_arch_prctl, ARCH_SET_FS, (long)tp, 0);
        char buf[16];  /* no libc from here: it reads its own thread pointer */
        while (raw_syscall3(SYS_read, 0, (long)buf, sizeof buf) > 0) {}
        raw_syscall3(SYS_exit_group, 0, 0, 0);
    }
    if (argc > 2 && strcmp(argv[1], "linkmap") == 0) {
        int fd = open(argv[2], O_RDWR);
        struct stat_size { off_t size; } st = { lseek(fd, 0, SEEK_END) };
        char *file = mmap(NULL, st.size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (fd < 0 || file == MAP_FAILED) return 1;
        file[0] = 1;  /* one page of it made private */
        struct link_map *last = _r_debug.r_map;
        while (last->l_next) last = last->l_next;
        struct link_map *forged = calloc(1, 4096);
        forged->l_name = "";
        forged->l_ld = (ElfW(Dyn) *)(file + 4096);
        forged->l_prev = last;
        last->l_next = forged;
        printf("{\"pid\": %d, \"file\": %lu}\n", getpid(), (unsigned long)file);
        fflush(stdout);
        char buf[16];
        while (read(0, buf, sizeof buf) > 0) {}
        return 0;
    }
    big[1UL << 29] = 0x42;
    printf("{\"pid\": %d, \"touched\": %lu, \"untouched\": %lu}\n", getpid(), (unsigned long)&big[1UL << 29],
           (unsigned long)&big[(1UL << 29) + 8192]);
    fflush(stdout);
    char buf[16];
    while (read(0, buf, sizeof buf) > 0) {}
    return 0;
}
