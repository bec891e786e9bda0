/* frame.h — RFC 6455 frame parser and encoder, free of I/O.
 *
 * The parser is incremental and pull-style: hand it whatever bytes arrived,
 * it consumes some and reports one event (a frame header, a chunk of
 * unmasked payload, the end of a frame, or a protocol error with the close
 * code to send). Payload is unmasked in place, so callers hand it a writable
 * buffer and receive pointers into it: no copy between socket and message.
 *
 * It enforces every rule that can be judged from frame headers alone:
 * masking, reserved bits and opcodes, control frame limits, fragmentation
 * sequence, and the 63-bit payload length. Message-level rules (UTF-8,
 * message size, close payload) belong to the caller; helpers for the close
 * payload are here because they are pure. */
#ifndef LUAWS_FRAME_H
#define LUAWS_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

enum ws_opcode {
    WS_OP_CONT = 0x0, WS_OP_TEXT = 0x1, WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8, WS_OP_PING = 0x9, WS_OP_PONG = 0xA,
};

/* Close codes (RFC 6455 section 7.4.1). */
enum ws_close_code {
    WS_CLOSE_NORMAL = 1000, WS_CLOSE_GOING_AWAY = 1001, WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003, WS_CLOSE_NO_STATUS = 1005, WS_CLOSE_ABNORMAL = 1006,
    WS_CLOSE_INVALID_DATA = 1007, WS_CLOSE_POLICY = 1008, WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_EXTENSION = 1010, WS_CLOSE_INTERNAL = 1011,
};

#define WS_MAX_HEADER 14
#define WS_MAX_CONTROL_PAYLOAD 125

enum ws_role { WS_ROLE_SERVER, WS_ROLE_CLIENT };

/* 16 bytes: every WebSocket connection holds one (in its parser). */
typedef struct frame_head {
    uint64_t length;
    uint8_t mask[4];
    uint8_t opcode;
    bool fin : 1, rsv1 : 1, rsv2 : 1, rsv3 : 1, masked : 1;
} frame_head;

enum frame_event_type {
    FRAME_EV_NEED_MORE,    /* all input consumed; feed more */
    FRAME_EV_FRAME,        /* a frame header was parsed: see parser->frame */
    FRAME_EV_PAYLOAD,      /* data/len: a chunk of unmasked payload */
    FRAME_EV_FRAME_END,    /* the current frame's payload is complete */
    FRAME_EV_ERROR,        /* protocol violation: close_code and reason */
};

typedef struct frame_event {
    enum frame_event_type type;
    uint8_t *data;
    size_t len;
    bool ascii;              /* PAYLOAD: unmasked to all-ASCII bytes (a hint:
                                false says nothing) */
    uint16_t close_code;
    const char *reason;
} frame_event;

typedef struct frame_parser {
    uint8_t state;
    uint8_t role;            /* enum ws_role: who we are */
    bool allow_rsv1;         /* permessage-deflate negotiated */
    bool in_message;         /* a fragmented data message is open */
    uint8_t hdr_len;         /* header bytes collected so far */
    uint8_t hdr[WS_MAX_HEADER];
    frame_head frame;          /* the frame being read */
    uint64_t done;           /* payload bytes of this frame already returned */
} frame_parser;

void frame_parser_init(frame_parser *p, enum ws_role role);

/* Consumes bytes from buf[0..len) and fills ev. Returns the number of bytes
 * consumed. After FRAME_EV_ERROR the parser must not be used again. */
size_t frame_parse(frame_parser *p, uint8_t *buf, size_t len, frame_event *ev);

/* Payload bytes of the current frame not returned yet while the parser is
 * inside a payload, else 0: lets a caller read them straight to where they
 * belong. */
uint64_t frame_payload_left(const frame_parser *p);

/* XORs data with the masking key, as if it started at payload offset off.
 * Returns true when every resulting byte is ASCII. */
bool frame_mask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t off);

/* Writes a frame header into out (WS_MAX_HEADER bytes) and returns its size.
 * mask may be NULL (server frames are never masked). */
size_t frame_write_header(uint8_t *out, bool fin, bool rsv1, uint8_t opcode,
                       uint64_t length, const uint8_t *mask);

/* True for a close code a peer may send (RFC 6455 7.4.1/7.4.2, IANA registry). */
bool frame_close_code_valid(unsigned code);

/* Validates a close frame payload: empty, or a valid code followed by a
 * UTF-8 reason. Fills code (1005 when empty) and the reason span. Returns
 * 0 if valid, else the close code to fail with. */
uint16_t frame_close_payload_parse(const uint8_t *p, size_t n, uint16_t *code,
                                const char **reason, size_t *reason_len);

#endif
