/* A target for snapshot dumps (tests/e2e_linux/test_snapshot.py): threads blocked in system calls
 * that must complete as if nothing happened, a busy thread whose counter dates the core, and a
 * process that would notice a child (SIGCHLD handler, waitpid(-1) loops).
 *
 *   snapshot_target [--heap MIB] [--shared MIB]
 *
 * Prints one JSON line (pid, file descriptors, port, addresses), then obeys stdin, one line each:
 *   arm N MS   write the "before" markers for round N, reset the counters, let every worker block
 *              again (the sleeper for MS milliseconds); answers "armed"
 *   wake       signal the condition variable the futex waiter waits on; answers "woken"
 *   scribble   write to every page of the --heap (each is copied if a snapshot shares it); answers
 *              "scribbled BYTES"
 *   report     wait (bounded) until every worker has woken, answer one JSON line of what each saw
 * End of input exits. Each worker sets a distinctive errno and signal mask before it blocks and
 * checks both when it wakes. Built by the tests with gcc; never committed as a binary.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 5
#define GAPS 4096
#define GAP_NS 1000000L /* an off-CPU stretch of the busy thread longer than this is recorded */

struct worker_result {
    long rc;         /* what the blocking call returned */
    int err;         /* errno right after it woke (must be the one it set) */
    int mask_ok;     /* its signal mask after waking equals the one it set */
    long elapsed_ns; /* the sleeper: how long it really slept */
    int eintr;       /* epoll_wait: times it failed with EINTR (the kernel's way after any stop) */
    char data[128];  /* bytes it received (pipe, socket), printable only */
};

static sem_t go[WORKERS], done;
static struct worker_result results[WORKERS];
static long sleep_ms = 1000;
static int pipe_fds[2], epoll_pipe[2], epfd, listen_fd;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int cond_flag;

/* The busy thread's counter, located in the core by address. */
static struct { char tag[16]; volatile unsigned long n; } live = {"DUMPLIB-LIVECTR", 0};
static char after_marker[64];                       /* written by the busy thread after each stop */
static volatile unsigned long gap_n[GAPS];          /* counter value when an off-CPU stretch ended */
static volatile long gap_len[GAPS];
static volatile int gap_count;
static volatile int busy_on;
static char before_marker[64];
static unsigned char *heap;                         /* --heap: filled with data; "scribble" rewrites it */
static size_t heap_size;
static char *dontfork, *wipeonfork, *shared;        /* markers at 0, the counter at 64 */

static volatile int sigchld_count, sigchld_pid;
/* [0]: waitpid(-1, __WALL|WNOHANG), which sees clone children too; [1]: waitpid(-1, WNOHANG) */
static volatile int reaped[2][16], reaped_status[2][16], reaped_count[2], saw_child_count[2];
static volatile long max_gap_us, last_tick_us;

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void on_sigchld(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    sigchld_count++;
    sigchld_pid = si->si_pid;
}

static void set_mask(int i, sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGUSR2);
    sigaddset(set, SIGRTMIN + 3 + i);
    pthread_sigmask(SIG_SETMASK, set, NULL);
}

static int mask_unchanged(const sigset_t *want) {
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    for (int s = 1; s < 65; s++)
        if (sigismember(&now, s) != sigismember(want, s)) return 0;
    return 1;
}

static void printable(char *out, const char *in, long n) {
    long j = 0;
    for (long k = 0; k < n && j < 126; k++) out[j++] = (in[k] >= 32 && in[k] < 127 && in[k] != '"' && in[k] != '\\') ? in[k] : '?';
    out[j] = 0;
}

/* Each worker: wait for "arm", set errno and mask, block, record what happened, repeat. */
#define WORKER_PROLOGUE(i)                            \
    sigset_t want; set_mask(i, &want);                \
    sem_wait(&go[i]);                                 \
    struct worker_result *r = &results[i];            \
    memset(r, 0, sizeof *r);                          \
    errno = 7000 + (i);
#define WORKER_EPILOGUE(i)                            \
    r->mask_ok = mask_unchanged(&want);               \
    sem_post(&done);

__attribute__((noinline)) void *snap_sleeper(void *arg) {
    for (;;) {
        WORKER_PROLOGUE(0)
        struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
        long t0 = now_ns();
        r->rc = nanosleep(&ts, NULL);
        r->err = errno;
        r->elapsed_ns = now_ns() - t0;
        WORKER_EPILOGUE(0)
    }
    return arg;
}

__attribute__((noinline)) void *snap_pipe_reader(void *arg) {
    for (;;) {
        WORKER_PROLOGUE(1)
        char buf[256];
        r->rc = read(pipe_fds[0], buf, sizeof buf);
        r->err = errno;
        if (r->rc > 0) printable(r->data, buf, r->rc);
        WORKER_EPILOGUE(1)
    }
    return arg;
}

__attribute__((noinline)) void *snap_cond_waiter(void *arg) {
    for (;;) {
        WORKER_PROLOGUE(2)
        pthread_mutex_lock(&lock);
        while (!cond_flag) r->rc = pthread_cond_wait(&cond, &lock);
        r->err = errno;
        cond_flag = 0;
        pthread_mutex_unlock(&lock);
        WORKER_EPILOGUE(2)
    }
    return arg;
}

__attribute__((noinline)) void *snap_epoll_waiter(void *arg) {
    for (;;) {
        WORKER_PROLOGUE(3)
        struct epoll_event ev[4];
        /* epoll_wait is never restarted: any ptrace stop (gdb's, a normal dump's) makes it fail with
         * EINTR, as signal(7) says; a program loops, and so does this one, counting. */
        while ((r->rc = epoll_wait(epfd, ev, 4, -1)) == -1 && errno == EINTR) {
            r->eintr++;
            errno = 7000 + 3;
        }
        r->err = errno;
        char buf[64];
        long n = r->rc == 1 ? read(epoll_pipe[0], buf, sizeof buf) : 0;
        if (n > 0) printable(r->data, buf, n);
        WORKER_EPILOGUE(3)
    }
    return arg;
}

__attribute__((noinline)) void *snap_acceptor(void *arg) {
    for (;;) {
        WORKER_PROLOGUE(4)
        int fd = accept(listen_fd, NULL, NULL);
        r->rc = fd;
        r->err = errno;
        if (fd >= 0) {
            char buf[64];
            long n = read(fd, buf, sizeof buf);
            if (n > 0) printable(r->data, buf, n);
            close(fd);
        }
        WORKER_EPILOGUE(4)
    }
    return arg;
}

/* Counts as fast as it can while armed; after every off-CPU stretch it records the counter and
 * writes the "after" marker, so a core taken at the instant of a stop holds a counter that ends a
 * recorded stretch and never that stretch's marker. */
__attribute__((noinline)) void *snap_busy(void *arg) {
    long last = now_ns();
    unsigned long n = 0;
    for (;;) {
        if (!busy_on) { usleep(1000); last = now_ns(); continue; }
        long t = now_ns();
        if (t - last > GAP_NS && gap_count < GAPS) {
            gap_n[gap_count] = n;
            gap_len[gap_count] = t - last;
            gap_count++;
            snprintf(after_marker, sizeof after_marker, "DUMPLIB-AFTER-%d-%lu", (int)getpid(), n);
        }
        last = t;
        n++;
        live.n = n;
        *(volatile unsigned long *)(dontfork + 64) = n;
        *(volatile unsigned long *)(wipeonfork + 64) = n;
        *(volatile unsigned long *)(shared + 64) = n;
    }
    return arg;
}

/* Would reap, or at least see, any child the process gets. */
__attribute__((noinline)) void *snap_reaper(void *arg) {
    for (;;) {
        int status;
        int flags[2] = {__WALL | WNOHANG, WNOHANG};
        for (int k = 0; k < 2; k++) {
            pid_t p = waitpid(-1, &status, flags[k]);
            if (p > 0 && reaped_count[k] < 16) { reaped_status[k][reaped_count[k]] = status; reaped[k][reaped_count[k]++] = p; }
            if (p == 0) saw_child_count[k]++;
        }
        usleep(200);
    }
    return arg;
}

__attribute__((noinline)) void *snap_ticker(void *arg) {
    last_tick_us = now_ns() / 1000;
    for (;;) {
        usleep(1000);
        long t = now_ns() / 1000;
        if (t - last_tick_us > max_gap_us) max_gap_us = t - last_tick_us;
        last_tick_us = t;
    }
    return arg;
}

static void report(void) {
    int woke = 0;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    for (int i = 0; i < WORKERS; i++)
        if (sem_timedwait(&done, &deadline) == 0) woke++;
    busy_on = 0;
    long open_gap = now_ns() / 1000 - last_tick_us;
    printf("{\"woke\": %d, \"workers\": [", woke);
    for (int i = 0; i < WORKERS; i++)
        printf("%s{\"rc\": %ld, \"errno\": %d, \"mask_ok\": %d, \"elapsed_ns\": %ld, \"eintr\": %d, \"data\": \"%s\"}",
               i ? ", " : "", results[i].rc, results[i].err, results[i].mask_ok, results[i].elapsed_ns, results[i].eintr,
               results[i].data);
    printf("], \"sigchld\": %d, \"sigchld_pid\": %d, \"saw_child_wall\": %d, \"saw_child\": %d, \"reaped_wall\": [",
           sigchld_count, sigchld_pid, saw_child_count[0], saw_child_count[1]);
    for (int i = 0; i < reaped_count[0]; i++) printf("%s[%d, %d]", i ? ", " : "", reaped[0][i], reaped_status[0][i]);
    printf("], \"reaped\": [");
    for (int i = 0; i < reaped_count[1]; i++) printf("%s[%d, %d]", i ? ", " : "", reaped[1][i], reaped_status[1][i]);
    printf("], \"max_gap_us\": %ld, \"counter\": %lu, \"after_marker\": \"%s\", \"gaps\": [",
           open_gap > max_gap_us ? open_gap : max_gap_us, live.n, after_marker);
    for (int i = 0; i < gap_count; i++) printf("%s[%lu, %ld]", i ? ", " : "", gap_n[i], gap_len[i]);
    printf("]}\n");
    fflush(stdout);
}

static void *map_marked(const char *what, int advice) {
    char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || madvise(p, 8192, advice) != 0) { perror(what); exit(3); }
    return p;
}

int main(int argc, char **argv) {
    long shared_mib = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--shared") && i + 1 < argc) shared_mib = atol(argv[++i]);
        if (!strcmp(argv[i], "--heap") && i + 1 < argc) {
            size_t n = (size_t)atol(argv[++i]) << 20;
            heap = malloc(n);
            heap_size = n;
            for (size_t j = 0; j < n; j += 64) heap[j] = (unsigned char)(j >> 6) | 1;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigchld;
    sa.sa_flags = SA_SIGINFO; /* no SA_RESTART: a stray SIGCHLD would also break a blocked call */
    sigaction(SIGCHLD, &sa, NULL);

    dontfork = map_marked("MADV_DONTFORK", MADV_DONTFORK);
    wipeonfork = map_marked("MADV_WIPEONFORK", MADV_WIPEONFORK);
    /* MAP_SHARED memory: the same pages in a fork child, so it goes on changing after the snapshot. */
    size_t shared_size = shared_mib > 0 ? (size_t)shared_mib << 20 : 8192;
    shared = mmap(NULL, shared_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) return 6;
    for (size_t j = 4096; j < shared_size; j += 64) shared[j] = (char)((j >> 6) | 1);
    if (pipe(pipe_fds) || pipe(epoll_pipe)) return 4;
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(epfd, EPOLL_CTL_ADD, epoll_pipe[0], &ev);
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof addr;
    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) || listen(listen_fd, 4) ||
        getsockname(listen_fd, (struct sockaddr *)&addr, &alen)) return 5;

    sem_init(&done, 0, 0);
    void *(*fns[])(void *) = {snap_sleeper, snap_pipe_reader, snap_cond_waiter, snap_epoll_waiter, snap_acceptor,
                              snap_busy, snap_reaper, snap_ticker};
    const char *names[] = {"s-sleeper", "s-pipe", "s-cond", "s-epoll", "s-accept", "s-busy", "s-reaper", "s-ticker"};
    for (int i = 0; i < 8; i++) {
        if (i < WORKERS) sem_init(&go[i], 0, 0);
        pthread_t t;
        pthread_create(&t, NULL, fns[i], NULL);
        pthread_setname_np(t, names[i]);
    }
    printf("{\"pid\": %d, \"pipe_read\": %d, \"pipe_write\": %d, \"epoll_write\": %d, \"epfd\": %d, \"listen_fd\": %d,"
           " \"port\": %d, \"cond_address\": %lu, \"live_address\": %lu, \"after_address\": %lu,"
           " \"before_address\": %lu, \"dontfork_address\": %lu, \"wipeonfork_address\": %lu, \"shared_address\": %lu, \"heap_address\": %lu, \"threads\": 9}\n",
           (int)getpid(), pipe_fds[0], pipe_fds[1], epoll_pipe[1], epfd, listen_fd, ntohs(addr.sin_port), (unsigned long)&cond,
           (unsigned long)&live.n, (unsigned long)after_marker, (unsigned long)before_marker,
           (unsigned long)dontfork, (unsigned long)wipeonfork, (unsigned long)shared, (unsigned long)heap);
    fflush(stdout);

    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        int round;
        long ms;
        if (sscanf(line, "arm %d %ld", &round, &ms) == 2) {
            sleep_ms = ms;
            sigchld_count = sigchld_pid = 0;
            reaped_count[0] = reaped_count[1] = saw_child_count[0] = saw_child_count[1] = 0;
            gap_count = 0;
            snprintf(before_marker, sizeof before_marker, "DUMPLIB-BEFORE-%d-%d", (int)getpid(), round);
            snprintf(dontfork, 64, "DUMPLIB-DONTFORK-%d-%d", (int)getpid(), round);
            snprintf(wipeonfork, 64, "DUMPLIB-WIPEONFORK-%d-%d", (int)getpid(), round);
            snprintf(shared, 64, "DUMPLIB-SHARED-%d-%d", (int)getpid(), round);
            max_gap_us = 0;
            busy_on = 1;
            for (int i = 0; i < WORKERS; i++) sem_post(&go[i]);
            printf("armed\n");
        } else if (!strncmp(line, "wake", 4)) {
            pthread_mutex_lock(&lock);
            cond_flag = 1;
            pthread_cond_signal(&cond);
            pthread_mutex_unlock(&lock);
            printf("woken\n");
        } else if (!strncmp(line, "scribble", 8)) {
            for (size_t j = 0; j < heap_size; j += 4096) heap[j] ^= 0x80; /* every page: a copy-on-write fault */
            printf("scribbled %lu\n", (unsigned long)heap_size);
        } else if (!strncmp(line, "report", 6)) {
            report();
            continue;
        }
        fflush(stdout);
    }
    return 0;
}
