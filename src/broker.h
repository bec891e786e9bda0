/* broker.h — topics across the workers of one machine: the broker in the
 * main process (workers.c) that every worker's local_bus talks to.
 *
 * Why a broker: a publish must reach every subscriber on every worker in
 * one order for all. One process that receives every publish and relays it,
 * in the order it read them, to every worker (the publisher included) gives
 * that order by construction, with no clock or sequence numbers; each worker
 * then builds the frame once for its own subscribers. The main process
 * already outlives every worker and runs no Lua, so relaying costs it one
 * read and one write per worker per batch (workers send what they publish
 * during one loop iteration in one write).
 *
 * The wire format is bus_wire.h. The broker never blocks: each worker's
 * socket is non-blocking, and what a worker has not read yet waits in that
 * worker's queue, up to BROKER_BACKLOG bytes; beyond, further messages for
 * that worker are dropped with a warning (the worker is stuck: its
 * heartbeat will have it replaced).
 *
 * Used only by the main process, from one thread. */
#ifndef LUAWS_BROKER_H
#define LUAWS_BROKER_H

#include <poll.h>
#include <stddef.h>

#define BROKER_BACKLOG (64u << 20)

typedef struct broker broker;

broker *broker_new(int nworkers);
/* A new socketpair for worker i (closing any old one): returns the worker's
 * end, to be kept by the child after fork (the parent closes it), or -1
 * (logged; that worker then has no cross-worker topics). The others are
 * told to send their counts again. */
int broker_attach(broker *b, int i);
/* Worker i died: its socket closes, its queues go, the others hear GONE.
 * Safe to call twice. */
void broker_detach(broker *b, int i);
/* Fills p with one entry per live worker socket (at most nworkers);
 * returns how many. */
int broker_pollfds(const broker *b, struct pollfd *p);
/* After poll(): reads, relays and writes what it can. */
void broker_service(broker *b, const struct pollfd *p, int np);
/* Closes every worker's socket and frees the broker; also what a child
 * does with the copy it inherited. NULL is ignored. */
void broker_free(broker *b);

#endif
