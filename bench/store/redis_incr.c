/* redis_incr.c — Redis INCR through hiredis: N synchronous round trips (one
 * INCR per op, as a script would call it), then N pipelined in batches of
 * 1000. Prints "sync OPS_PER_S" and "pipelined OPS_PER_S".
 * usage: redis_incr PORT N */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: redis_incr PORT N\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    redisContext *c = redisConnect("127.0.0.1", port);
    if (!c || c->err) {
        fprintf(stderr, "redis_incr: %s\n", c ? c->errstr : "out of memory");
        return 1;
    }
    double t0 = now();
    for (int i = 0; i < n; i++) {
        redisReply *r = redisCommand(c, "INCR bench:counter");
        if (!r) { fprintf(stderr, "redis_incr: %s\n", c->errstr); return 1; }
        freeReplyObject(r);
    }
    double t1 = now();
    printf("sync %.0f\n", n / (t1 - t0));
    t0 = now();
    for (int done = 0; done < n;) {
        int batch = n - done < 1000 ? n - done : 1000;
        for (int i = 0; i < batch; i++) redisAppendCommand(c, "INCR bench:counter");
        for (int i = 0; i < batch; i++) {
            void *r;
            if (redisGetReply(c, &r) != REDIS_OK) { fprintf(stderr, "redis_incr: %s\n", c->errstr); return 1; }
            freeReplyObject(r);
        }
        done += batch;
    }
    t1 = now();
    printf("pipelined %.0f\n", n / (t1 - t0));
    redisFree(c);
    return 0;
}
