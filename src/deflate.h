/* deflate.h — permessage-deflate (RFC 7692) with zlib: negotiation (pure)
 * and compressing/inflating messages.
 *
 * Modes: "shared" answers every offer with server_no_context_takeover and
 * client_no_context_takeover, so one deflate stream per worker serves every
 * socket and an inflate stream exists only while a compressed message is
 * being received: an idle connection holds no zlib memory. "dedicated"
 * honours context takeover, with streams per connection, for the best ratio.
 * "off" never accepts the extension. */
#ifndef LUAWS_DEFLATE_H
#define LUAWS_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zlib.h>
#include "bytes.h"

enum deflate_mode { DEFLATE_OFF, DEFLATE_SHARED, DEFLATE_DEDICATED };

typedef struct pmd_params {
    bool server_no_context_takeover;
    bool client_no_context_takeover;
    uint8_t server_max_window_bits;   /* our deflate window, 9..15; 0: never compress */
    uint8_t client_max_window_bits;   /* the peer's deflate window, 8..15 */
} pmd_params;

/* Picks the first acceptable permessage-deflate offer in a
 * Sec-WebSocket-Extensions value. On success fills params and the
 * response header value and returns true; false declines them all. */
bool pmd_negotiate(const char *offers, enum deflate_mode mode, pmd_params *params,
                   char *response, size_t response_size);

/* Client side: reads the server's answer to our offer
 * ("permessage-deflate; client_max_window_bits"). Fills params from OUR
 * point of view, as pmd_conn expects: server_* describe our compressor.
 * Returns false if the answer is not one our offer allows. */
bool pmd_client_accept(const char *answer, pmd_params *params);
/* The offer luaws.connect makes. */
#define PMD_CLIENT_OFFER "permessage-deflate; client_max_window_bits"

/* Per worker: the shared deflate streams (one per window size) and a pool
 * of inflate streams, plus the scratch buffer compressed output goes to. */
typedef struct pmd_worker {
    enum deflate_mode mode;
    int level;
    size_t min_size;
    z_stream *shared[16];
    z_stream *inflate_pool[16];
    int ninflate;
    bytes out;
} pmd_worker;

/* Per connection, when the extension was negotiated. */
typedef struct pmd_conn {
    pmd_params params;
    z_stream *deflate;   /* dedicated mode only */
    z_stream *inflate;   /* while a compressed message is read, or kept for context takeover */
    bool got_data;       /* the message being inflated had payload bytes */
} pmd_conn;

void pmd_worker_init(pmd_worker *w, enum deflate_mode mode, int level, size_t min_size);
void pmd_worker_free(pmd_worker *w);
void pmd_conn_free(pmd_worker *w, pmd_conn *pc);

/* Compresses one message into w->out. Returns false on a zlib failure. */
bool pmd_compress(pmd_worker *w, pmd_conn *pc, const uint8_t *in, size_t len);

/* Inflates a chunk of a compressed message, appending to out. final adds
 * the 0x00 0x00 0xff 0xff tail. out never holds more than limit bytes on
 * success; on 1009 it holds limit + 1 (the byte that proved the excess).
 * Returns 0, or a close code: 1009 (too big), 1007 (corrupt data). */
int pmd_inflate(pmd_worker *w, pmd_conn *pc, const uint8_t *in, size_t len, bool final,
                bytes *out, size_t limit);
/* The message ended (or the connection did): release per-message state. */
void pmd_message_done(pmd_worker *w, pmd_conn *pc);

#endif
