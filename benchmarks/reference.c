/* The reference limit: a C loop of blocking read()/write() on a TUN fd.
 *
 *   reference FD MODE SECONDS PACKET_HEX
 * MODE is bounce (keep 64 packets in flight: each packet read back is
 * answered with a fresh write), read (count packets read) or write (write
 * as fast as possible).  Prints "packets seconds cpu_seconds", all three
 * measured inside the window only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/resource.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    unsigned char pkt[65536], buf[65536];
    size_t len = 0, i;
    long long count = 0;
    double start, deadline, cpu0, end;
    int fd, bounce, rd, wr;

    if (argc != 5) {
        fprintf(stderr, "usage: reference FD MODE SECONDS PACKET_HEX\n");
        return 2;
    }
    fd = atoi(argv[1]);
    bounce = !strcmp(argv[2], "bounce");
    rd = bounce || !strcmp(argv[2], "read");
    wr = bounce || !strcmp(argv[2], "write");
    for (i = 0; argv[4][2 * i] && argv[4][2 * i + 1]; i++)
        sscanf(argv[4] + 2 * i, "%2hhx", &pkt[i]);
    len = i;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    /* Set-up (the 64 primed writes of a bounce) comes before the window; the
     * window opens on the first packet read back (bounce, read) or just
     * before the first write (write), and CPU time is taken at its edges. */
    if (bounce)
        for (i = 0; i < 64; i++)
            if (write(fd, pkt, len) < 0) { perror("write"); return 1; }
    if (rd) {
        if (read(fd, buf, sizeof(buf)) < 0) { perror("read"); return 1; }
        if (bounce && write(fd, pkt, len) < 0) { perror("write"); return 1; }
    }
    start = now();
    cpu0 = cpu();
    deadline = start + atof(argv[3]);
    for (;;) {
        if (rd && read(fd, buf, sizeof(buf)) < 0) { perror("read"); return 1; }
        if (wr && write(fd, pkt, len) < 0) { perror("write"); return 1; }
        count++;
        if ((count & 1023) == 0 && now() >= deadline)
            break;
    }
    end = now();
    printf("%lld %.6f %.6f\n", count, end - start, cpu() - cpu0);
    return 0;
}
