/* Threads that each hold a known errno (thread-local): 7100 in the main thread, 7101.. in the others;
   and tls_pad[0] and tls_pad[10000]: 50 in the main thread, 51.. in the others.
   Prints one JSON line, then sleeps until its stdin closes. */
#define _GNU_SOURCE
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define WORKERS 3
static pthread_barrier_t ready;
/* Five pages of the executable's static TLS: its bytes lie pages below the thread pointer. */
__thread char tls_pad[20480];

/* Where libc's image ends (past its .bss), found from its program headers. */
static int libc_end(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    if (!strstr(info->dlpi_name, "libc.so")) return 0;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_LOAD) {
            uintptr_t end = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr + info->dlpi_phdr[i].p_memsz;
            if (end > *(uintptr_t *)data) *(uintptr_t *)data = end;
        }
    return 1;
}

static void *worker(void *arg) {
    errno = 7101 + (int)(long)arg;
    tls_pad[0] = tls_pad[10000] = (char)(51 + (int)(long)arg);
    pthread_barrier_wait(&ready);
    for (;;) pause();
    return NULL;
}

int main(void) {
    pthread_t t[WORKERS];
    pthread_barrier_init(&ready, NULL, WORKERS + 1);
    for (long i = 0; i < WORKERS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    pthread_barrier_wait(&ready);
    /* Anonymous memory right after libc's .bss (0x5a bytes), which the kernel merges into one mapping with it:
       not libc's data, so not mini's to take. */
    uintptr_t end = 0;
    dl_iterate_phdr(libc_end, &end);
    end = (end + 4095) & ~(uintptr_t)4095;
    char *next = MAP_FAILED;
    for (size_t size = 4 << 20; size >= 4096 && next == MAP_FAILED; size /= 2) {  /* as much as is free there */
        next = mmap((void *)end, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                    -1, 0);
        if (next != MAP_FAILED) memset(next, 0x5a, size);
    }
    printf("{\"pid\": %d, \"threads\": %d, \"after_libc\": %lu, \"merged\": %d}\n", getpid(), WORKERS + 1,
           (unsigned long)end, next == (char *)end);
    fflush(stdout);
    errno = 7100;
    tls_pad[0] = tls_pad[10000] = 50;
    char buf[16];
    while (read(0, buf, sizeof buf) > 0) errno = 7100;
    return 0;
}
