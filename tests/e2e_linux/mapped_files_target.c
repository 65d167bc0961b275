/* A process that maps files that are not loaded objects: the locale (setlocale), the gconv cache
   (iconv_open, which also dlopens a converter: a loaded object), and the data file named by argv[1].
   Prints one JSON line, then waits until its stdin closes. */
#include <fcntl.h>
#include <iconv.h>
#include <locale.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    setlocale(LC_ALL, "C.UTF-8");
    iconv_t cd = iconv_open("UTF-16", "ISO-8859-15");
    int fd = argc > 1 ? open(argv[1], O_RDONLY) : -1;
    void *data = fd >= 0 ? mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    printf("{\"pid\": %d, \"iconv\": %d, \"data\": %d}\n", getpid(), cd != (iconv_t)-1, data != MAP_FAILED);
    fflush(stdout);
    char buf[16];
    while (read(0, buf, sizeof buf) > 0) {}
    return 0;
}
