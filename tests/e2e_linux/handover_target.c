/* A target for the interrupted hand-over tests: SIDEFILE MIB
 *
 * Fills MIB MiB with bytes that compress slowly (pseudo-random, 16 values), so a full compressed dump
 * of it takes a while; a SIGUSR1 handler (SA_SIGINFO) appends "signo=N code=C pid=P" to SIDEFILE.
 * Prints one JSON line (pid) once the memory is filled. Built by the tests with gcc; never committed.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *sidefile;

static void on_signal(int signo, siginfo_t *info, void *ctx) {
    (void)ctx;
    FILE *f = fopen(sidefile, "a");
    if (f) {
        fprintf(f, "signo=%d code=%d pid=%d\n", info->si_signo, info->si_code, (int)info->si_pid);
        fclose(f);
    }
    (void)signo;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    sidefile = argv[1];
    size_t size = (size_t)atol(argv[2]) << 20;
    unsigned char *block = malloc(size);
    if (!block) return 3;
    unsigned long x = 88172645463325252UL;
    for (size_t i = 0; i < size; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;  /* xorshift64 */
        block[i] = (unsigned char)(x & 0x0f);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
    printf("{\"pid\": %d}\n", (int)getpid());
    fflush(stdout);
    for (;;) pause();
}
