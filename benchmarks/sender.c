/* Fill a TUN for the read benchmark: send UDP datagrams to DST as fast as possible.
 *   sender DST PAYLOAD_BYTES SECONDS */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

int main(int argc, char **argv)
{
    struct sockaddr_in to;
    char payload[65536];
    struct timespec ts;
    double deadline;
    long long n = 0;
    int s;

    if (argc != 4) {
        fprintf(stderr, "usage: sender DST PAYLOAD_BYTES SECONDS\n");
        return 2;
    }
    s = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&to, 0, sizeof(to));
    to.sin_family = AF_INET;
    to.sin_port = htons(2000);
    inet_pton(AF_INET, argv[1], &to.sin_addr);
    memset(payload, 0xab, sizeof(payload));
    clock_gettime(CLOCK_MONOTONIC, &ts);
    deadline = ts.tv_sec + ts.tv_nsec / 1e9 + atof(argv[3]);
    for (;;) {
        sendto(s, payload, atoi(argv[2]), 0, (struct sockaddr *)&to, sizeof(to));
        if ((++n & 1023) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &ts);
            if (ts.tv_sec + ts.tv_nsec / 1e9 > deadline)
                break;
        }
    }
    return 0;
}
