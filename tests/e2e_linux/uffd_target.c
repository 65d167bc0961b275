/* A target with a userfaultfd that asked for fork events (UFFD_FEATURE_EVENT_FORK), for
 * tests/e2e_linux/test_snapshot.py. With that feature a fork (a snapshot's clone() too) waits in the kernel
 * until the process's own manager thread has read the fork event: while dumplib holds that thread stopped,
 * the clone() cannot finish, and once it runs, the manager sees a fork it never made.
 *
 *   uffd_target
 *
 * Prints one JSON line (pid), then obeys stdin: "ping" answers "pong FORKS FAULTS TICKS" (fork events the
 * manager read, page faults it served, ticks of a worker thread that must keep growing); "touch" makes the
 * main thread read one more page of the registered region (the manager serves it) and answers "touched C"
 * (the byte it read, as a number). Built by the tests with gcc; never committed as a binary.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define REGION (64 * 4096)
static int uffd;
static char *region;
static volatile int forks, faults;
static volatile unsigned long ticks;
static char page[4096] __attribute__((aligned(4096)));

__attribute__((noinline)) void *uffd_manager(void *arg) {
    for (;;) {
        struct pollfd p = {.fd = uffd, .events = POLLIN};
        if (poll(&p, 1, -1) < 1) continue;
        struct uffd_msg msg;
        if (read(uffd, &msg, sizeof msg) != sizeof msg) continue;
        if (msg.event == UFFD_EVENT_FORK) {
            forks++;
            close((int)msg.arg.fork.ufd);
        } else if (msg.event == UFFD_EVENT_PAGEFAULT) {
            struct uffdio_copy copy = {.dst = msg.arg.pagefault.address & ~4095UL, .src = (unsigned long)page,
                                       .len = 4096};
            ioctl(uffd, UFFDIO_COPY, &copy);
            faults++;
        }
    }
    return arg;
}

__attribute__((noinline)) void *uffd_worker_ticks(void *arg) {
    for (;;) { usleep(1000); ticks++; }
    return arg;
}

int main(void) {
    memset(page, 'U', sizeof page);
    uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0) { perror("userfaultfd"); return 3; }
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_FORK};
    if (ioctl(uffd, UFFDIO_API, &api)) { perror("UFFDIO_API"); return 4; }
    region = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct uffdio_register reg = {.range = {.start = (unsigned long)region, .len = REGION},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg)) { perror("UFFDIO_REGISTER"); return 5; }
    pthread_t t;
    pthread_create(&t, NULL, uffd_manager, NULL);
    pthread_create(&t, NULL, uffd_worker_ticks, NULL);
    volatile char first = region[0]; /* one page served before anyone looks */
    (void)first;
    printf("{\"pid\": %d, \"region\": %lu, \"threads\": 3}\n", (int)getpid(), (unsigned long)region);
    fflush(stdout);
    char line[64];
    int next = 1;
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "ping", 4)) printf("pong %d %d %lu\n", forks, faults, ticks);
        else if (!strncmp(line, "touch", 5)) printf("touched %d\n", region[4096 * (next++ % 64)]);
        fflush(stdout);
    }
    return 0;
}
