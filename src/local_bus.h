/* local_bus.h — a worker's link to the topic broker of the main process
 * (broker.h says why there is one; bus_wire.h is the format).
 *
 * Publishing: local_bus_publish queues the message and returns at once;
 * what a worker publishes during one loop iteration goes out in one write,
 * at the end of that iteration (a check handle, and a prepare handle for
 * what timers publish before the loop polls). The worker does not deliver
 * its own publish: the broker's echo does, in the order every worker sees.
 *
 * Counts: local_bus_count tells the other workers how many of this
 * worker's sockets a topic has now (luaws.subscribers counts the machine).
 *
 * If the main process goes away the link closes (logged) and
 * local_bus_open() turns false: the caller then delivers locally.
 *
 * Create it after fork, use it from its loop's thread only. */
#ifndef LUAWS_LOCAL_BUS_H
#define LUAWS_LOCAL_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct local_bus local_bus;

typedef struct local_bus_cbs {
    /* A publish, from any worker (this one too), in the broker's order.
     * topic and data are valid during the call only. */
    void (*message)(void *ud, const char *topic, size_t tlen, uint8_t opcode, uint64_t except,
                    const uint8_t *data, size_t len);
    /* Worker `worker` has `count` sockets subscribed to topic now. */
    void (*count)(void *ud, unsigned worker, const char *topic, size_t tlen, uint32_t count);
    /* Worker `worker` died: every count of it is 0. */
    void (*gone)(void *ud, unsigned worker);
    /* A worker (re)started: send every count again (local_bus_count). */
    void (*resync)(void *ud);
} local_bus_cbs;

/* Takes ownership of fd (this worker's end of the socketpair); NULL
 * (logged) if libuv cannot use it. */
local_bus *local_bus_new(uv_loop_t *loop, int fd, unsigned worker, const local_bus_cbs *cbs, void *ud);
bool local_bus_open(const local_bus *b);
/* Queues a publish; false (nothing queued) if the link is closed or more
 * than LOCAL_BUS_BACKLOG bytes wait to be written. tlen <= 65535. */
#define LOCAL_BUS_BACKLOG (64u << 20)
#define LOCAL_BUS_TOPIC_MAX 65535
/* except: the id of a socket that must not get it (0: none). */
bool local_bus_publish(local_bus *b, const char *topic, size_t tlen, uint8_t opcode, uint64_t except,
                       const uint8_t *data, size_t len);
void local_bus_count(local_bus *b, const char *topic, size_t tlen, uint32_t count);
/* Closes the link; the bus frees itself once libuv is done with it. The
 * worker calls it when it stops (its handles do not keep the loop alive).
 * NULL, or a bus already closing, is ignored. */
void local_bus_close(local_bus *b);

#endif
