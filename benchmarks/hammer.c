/* hammer: call getppid() in a tight loop so that a tracepoint fires as fast as the CPU allows,
 * or at a target rate.
 *
 *   hammer SECONDS RATE      RATE calls per second, 0 for as fast as possible
 *
 * It waits for one byte on stdin before it starts, so that the benchmark can set its pid
 * filter first, then prints the number of calls it made and the seconds it took.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: hammer SECONDS RATE\n");
        return 2;
    }
    double seconds = atof(argv[1]);
    double rate = atof(argv[2]);
    char go;
    if (read(0, &go, 1) != 1)
        return 1;
    /* Pacing checks the clock once per batch: a syscall per call would distort the rate. */
    const long batch = 256;
    long calls = 0;
    double start = now(), end = start + seconds, t = start;
    while (t < end) {
        for (long i = 0; i < batch; i++)
            syscall(SYS_getppid);
        calls += batch;
        t = now();
        if (rate > 0) {
            double due = start + calls / rate;
            if (due > t) {
                struct timespec pause = {0, (long)((due - t) * 1e9)};
                nanosleep(&pause, NULL);
                t = now();
            }
        }
    }
    printf("%ld %.6f\n", calls, now() - start);
    return 0;
}
