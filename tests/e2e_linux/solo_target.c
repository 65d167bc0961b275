/* A one-thread target for snapshot dumps (tests/e2e_linux/test_snapshot.py): the snapshot's clone()
 * must be made by this very thread, in the middle of CALL, so the way each call is restarted is tried.
 *
 *   solo_target CALL MS
 *
 * CALL: nanosleep (MS ms; restarted through restart_syscall), futex (a FUTEX_WAIT nobody wakes, MS ms
 * timeout: ETIMEDOUT after its full time), poll (no fds, MS ms: 0 after its full time), read (stdin: the
 * test writes a line), accept (on the port printed: the test connects and writes), pause (the test sends
 * SIGUSR1: -1 EINTR after the handler ran), spin (MS ms, or until SIGUSR1, in user mode holding known
 * values in eleven general registers and xmm8, checked all the time: any register not restored exactly
 * is counted).
 * SIGRTMIN+1 is counted by a handler (real-time signals queue: none may be lost or doubled).
 * Prints one JSON line first (pid, port), then one JSON line with what the call returned, then waits.
 * Built by the tests with gcc; never committed as a binary.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile int sigchld_count, sigusr1_count, rt_count;
static int futex_word;
static const unsigned long xmm_magic[2] __attribute__((aligned(16))) = {0x0123456789abcdefUL, 0xfedcba9876543210UL};

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void on_signal(int sig) {
    if (sig == SIGCHLD) sigchld_count++;
    else if (sig == SIGRTMIN + 1) rt_count++;
    else sigusr1_count++;
}

/* 2^20 turns of a loop that checks eleven general registers and xmm8 hold what it put there. */
__attribute__((noinline)) static long solo_spin_chunk(void) {
    long bad;
    __asm__ volatile(
        "movabs $0x1111111111111111, %%rbx\n"
        "movabs $0x2222222222222222, %%rdx\n"
        "movabs $0x3333333333333333, %%rsi\n"
        "movabs $0x4444444444444444, %%rdi\n"
        "movabs $0x5555555555555555, %%r8\n"
        "movabs $0x6666666666666666, %%r9\n"
        "movabs $0x7777777777777777, %%r10\n"
        "movabs $0x7888888888888888, %%r11\n"
        "movabs $0x7999999999999999, %%r12\n"
        "movabs $0x7aaaaaaaaaaaaaaa, %%r13\n"
        "movabs $0x7bbbbbbbbbbbbbbb, %%r14\n"
        "movdqa %[xm], %%xmm8\n"
        "xor %%r15, %%r15\n"
        "mov $0x100000, %%ecx\n"
        "1:\n"
        "movabs $0x1111111111111111, %%rax\n cmp %%rax, %%rbx\n jne 2f\n"
        "movabs $0x2222222222222222, %%rax\n cmp %%rax, %%rdx\n jne 2f\n"
        "movabs $0x3333333333333333, %%rax\n cmp %%rax, %%rsi\n jne 2f\n"
        "movabs $0x4444444444444444, %%rax\n cmp %%rax, %%rdi\n jne 2f\n"
        "movabs $0x5555555555555555, %%rax\n cmp %%rax, %%r8\n jne 2f\n"
        "movabs $0x6666666666666666, %%rax\n cmp %%rax, %%r9\n jne 2f\n"
        "movabs $0x7777777777777777, %%rax\n cmp %%rax, %%r10\n jne 2f\n"
        "movabs $0x7888888888888888, %%rax\n cmp %%rax, %%r11\n jne 2f\n"
        "movabs $0x7999999999999999, %%rax\n cmp %%rax, %%r12\n jne 2f\n"
        "movabs $0x7aaaaaaaaaaaaaaa, %%rax\n cmp %%rax, %%r13\n jne 2f\n"
        "movabs $0x7bbbbbbbbbbbbbbb, %%rax\n cmp %%rax, %%r14\n jne 2f\n"
        "movdqa %[xm], %%xmm9\n pcmpeqd %%xmm8, %%xmm9\n pmovmskb %%xmm9, %%eax\n cmp $0xffff, %%eax\n jne 2f\n"
        "jmp 3f\n"
        "2: inc %%r15\n"
        /* put the values back so one bad restore counts once, not 2^20 times */
        "movabs $0x1111111111111111, %%rbx\n movabs $0x2222222222222222, %%rdx\n"
        "movabs $0x3333333333333333, %%rsi\n movabs $0x4444444444444444, %%rdi\n"
        "movabs $0x5555555555555555, %%r8\n movabs $0x6666666666666666, %%r9\n"
        "movabs $0x7777777777777777, %%r10\n movabs $0x7888888888888888, %%r11\n"
        "movabs $0x7999999999999999, %%r12\n movabs $0x7aaaaaaaaaaaaaaa, %%r13\n"
        "movabs $0x7bbbbbbbbbbbbbbb, %%r14\n movdqa %[xm], %%xmm8\n"
        "3: dec %%ecx\n jnz 1b\n"
        "mov %%r15, %[bad]\n"
        : [bad] "=m"(bad)
        : [xm] "m"(xmm_magic)
        : "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "xmm8",
          "xmm9", "cc", "memory");
    return bad;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *call = argv[1];
    long ms = atol(argv[2]);
    signal(SIGCHLD, on_signal); /* no SA_RESTART: a stray SIGCHLD would also break the call */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGRTMIN + 1, &sa, NULL); /* queued: every one sent must arrive exactly once */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 4) ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen)) return 5;
    printf("{\"pid\": %d, \"port\": %d, \"listen_fd\": %d}\n", (int)getpid(), ntohs(addr.sin_port), lfd);
    fflush(stdout);

    sigset_t want, now;
    sigemptyset(&want);
    sigaddset(&want, SIGUSR2);
    sigaddset(&want, SIGRTMIN + 5);
    sigprocmask(SIG_SETMASK, &want, NULL);
    char buf[128] = "";
    long rc = 0, bad = 0, spins = 0;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    long t0 = now_ns();
    errno = 4242;
    if (!strcmp(call, "nanosleep")) rc = nanosleep(&ts, NULL);
    else if (!strcmp(call, "futex")) rc = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
    else if (!strcmp(call, "poll")) rc = poll(NULL, 0, (int)ms);
    else if (!strcmp(call, "read")) rc = read(0, buf, sizeof buf - 1);
    else if (!strcmp(call, "pause")) rc = pause();
    else if (!strcmp(call, "accept")) {
        int fd = (int)(rc = accept(lfd, NULL, NULL));
        if (fd >= 0 && read(fd, buf, sizeof buf - 1) < 0) buf[0] = 0;
    } else if (!strcmp(call, "spin")) {
        while (now_ns() - t0 < ms * 1000000L && !sigusr1_count) { bad += solo_spin_chunk(); spins++; }
    } else return 6;
    int err = errno;
    long elapsed = now_ns() - t0;
    sigprocmask(SIG_BLOCK, NULL, &now);
    int mask_ok = 1;
    for (int s = 1; s < 65; s++) if (sigismember(&now, s) != sigismember(&want, s)) mask_ok = 0;
    int status, reaped = waitpid(-1, &status, __WALL | WNOHANG);
    for (char *p = buf; *p; p++) if (*p < 32 || *p > 126 || *p == '"' || *p == '\\') *p = '?';
    printf("{\"rc\": %ld, \"errno\": %d, \"elapsed_ns\": %ld, \"mask_ok\": %d, \"data\": \"%s\", \"bad\": %ld,"
           " \"spins\": %ld, \"sigchld\": %d, \"sigusr1\": %d, \"rt\": %d, \"waitpid\": %d}\n", rc, err, elapsed,
           mask_ok, buf, bad, spins, sigchld_count, sigusr1_count, rt_count, reaped);
    fflush(stdout);
    for (;;) pause();
}
