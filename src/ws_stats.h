/* ws_stats.h — counters WebSocket sessions add to (one set per worker). */
#ifndef LUAWS_WS_STATS_H
#define LUAWS_WS_STATS_H

#include <stdint.h>

typedef struct wss_stats {
    uint64_t messages_in, bytes_in;     /* complete messages received, payload bytes */
    uint64_t messages_out, bytes_out;   /* messages sent, payload bytes (before compression) */
    uint64_t protocol_errors;           /* sessions failed for a protocol violation */
} wss_stats;

#endif
