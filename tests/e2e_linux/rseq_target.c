/* A main thread that spins inside a restartable sequence (rseq) critical section, for the snapshot
 * test that no thread inside one is ever made to run an injected call. Every pass of the loop checks
 * that its rseq_cs is still armed: the kernel clears it only when it finds the thread *outside* the
 * section (an injected call would move it out), and when it preempts the thread inside, it sends it
 * to the abort handler, which re-arms it. A second thread sleeps in nanosleep (a thread that may
 * take the injection). Prints its pid; on any stdin line prints "cleared N aborts M". */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/rseq.h>
#include <unistd.h>

static volatile long cleared, aborts;
static volatile int stop;

static void *reporter(void *arg) {
    char line[64];
    (void)arg;
    while (fgets(line, sizeof line, stdin)) {
        printf("cleared %ld aborts %ld\n", cleared, aborts);
        fflush(stdout);
    }
    stop = 1;
    return NULL;
}

int main(void) {
    if (__rseq_size == 0) {
        printf("no-rseq\n");
        return 3;
    }
    struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    pthread_t t;
    pthread_create(&t, NULL, reporter, NULL);
    printf("%d\n", getpid());
    fflush(stdout);
    while (!stop) {
        __asm__ volatile(
            ".pushsection __rseq_cs, \"aw\"\n\t"
            ".balign 32\n\t"
            "3: .long 0, 0\n\t"
            ".quad 1f, 2f - 1f, 4f\n\t"
            ".popsection\n\t"
            "leaq 3b(%%rip), %%rax\n\t"
            "movq %%rax, %[cs]\n\t"
            "movq $200000, %%rcx\n\t"
            "1:\n\t"
            "cmpq $0, %[cs]\n\t"
            "je 5f\n\t"
            "decq %%rcx\n\t"
            "jnz 1b\n\t"
            "2:\n\t"
            "jmp 6f\n\t"
            ".long 0x53053053\n\t"
            "4:\n\t"
            "incq %[aborts]\n\t"
            "jmp 6f\n\t"
            "5:\n\t"
            "incq %[cleared]\n\t"
            "6:\n\t"
            "movq $0, %[cs]\n\t"
            : [cs] "+m"(rs->rseq_cs), [aborts] "+m"(aborts), [cleared] "+m"(cleared)
            :
            : "rax", "rcx", "memory", "cc");
    }
    return 0;
}
