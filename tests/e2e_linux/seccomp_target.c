/* A target whose seccomp filter forbids making a process (fork, vfork, clone without CLONE_THREAD;
 * clone3 says ENOSYS so glibc's threads fall back to clone), for tests/e2e_linux/test_snapshot.py.
 *
 *   seccomp_target eperm|kill|other
 *
 * eperm: a forbidden call fails with EPERM; kill: it kills the whole process (SECCOMP_RET_KILL_PROCESS),
 * so a snapshot attempted carelessly kills the target; other: clone is allowed (fork and vfork are not,
 * mount(2) without CLONE_THREAD in its first argument is refused), a filter that allows a snapshot. The filter is installed with prctl before the
 * threads start, so every thread has it. Prints one JSON line, then obeys stdin: "ping" answers
 * "pong N" (N: ticks of a worker thread, which must keep growing). Built by the tests; never committed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile unsigned long ticks;
static volatile int sleeper_started;

__attribute__((noinline)) void *seccomp_worker_ticks(void *arg) {
    for (;;) { usleep(1000); ticks++; }
    return arg;
}

__attribute__((noinline)) void *seccomp_worker_sleeps(void *arg) {
    sleeper_started = 1;
    for (;;) sleep(100);
    return arg;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    unsigned deny = !strcmp(argv[1], "kill") ? SECCOMP_RET_KILL_PROCESS : (SECCOMP_RET_ERRNO | EPERM);
    /* "other": the same filter shape, but what it forbids is mount(2), as container runtimes do; clone is free */
    unsigned watched = !strcmp(argv[1], "other") ? __NR_mount : __NR_clone;
    struct sock_filter filter[] = {
        /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        /* 2 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* 3 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
        /* 5 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        /* 6 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fork, 4, 0),
        /* 7 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_vfork, 3, 0),
        /* 8 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, watched, 0, 3),
        /* 9 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        /* 10 */ BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 1, 0),
        /* 11 */ BPF_STMT(BPF_RET | BPF_K, deny),
        /* 12 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp");
        return 3;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, seccomp_worker_ticks, NULL) || pthread_create(&t, NULL, seccomp_worker_sleeps, NULL))
        return 4;
    /* Proof the filter bites: a fork fails here (eperm) before anyone dumps us. */
    if (!strcmp(argv[1], "eperm") && (syscall(__NR_fork) != -1 || errno != EPERM)) return 5;
    /* Both workers running before anyone is told to dump us: a thread still in clone() has no frames to show. */
    while (!ticks || !sleeper_started) usleep(1000);
    printf("{\"pid\": %d, \"threads\": 3}\n", (int)getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "ping", 4)) {
            printf("pong %lu\n", ticks);
            fflush(stdout);
        }
    }
    return 0;
}
