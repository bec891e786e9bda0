/* frame.c — RFC 6455 frame parser and encoder; see frame.h. */
#include "frame.h"
#include "utf8.h"
#include <string.h>

enum { ST_HEADER, ST_PAYLOAD, ST_END, ST_FAILED };

void frame_parser_init(frame_parser *p, enum ws_role role)
{
    memset(p, 0, sizeof *p);
    p->role = (uint8_t)role;
}

static size_t fail(frame_parser *p, frame_event *ev, const char *reason)
{
    p->state = ST_FAILED;
    ev->type = FRAME_EV_ERROR;
    ev->close_code = WS_CLOSE_PROTOCOL;
    ev->reason = reason;
    return 0;
}

/* Size of the whole header once its first two bytes are known. */
static uint8_t header_size(const uint8_t *hdr)
{
    uint8_t n = 2, len7 = hdr[1] & 0x7F;
    if (len7 == 126) n += 2;
    else if (len7 == 127) n += 8;
    if (hdr[1] & 0x80) n += 4;
    return n;
}

/* Checks the completed header against every frame-level rule. */
static const char *check_header(frame_parser *p)
{
    const uint8_t *h = p->hdr;
    frame_head *f = &p->frame;
    uint8_t len7 = h[1] & 0x7F, i = 2;

    f->fin = h[0] & 0x80;
    f->rsv1 = h[0] & 0x40;
    f->rsv2 = h[0] & 0x20;
    f->rsv3 = h[0] & 0x10;
    f->opcode = h[0] & 0x0F;
    f->masked = h[1] & 0x80;

    if (len7 == 126) {
        f->length = (uint64_t)h[2] << 8 | h[3];
        i = 4;
        if (f->length < 126) return "non-minimal payload length";
    } else if (len7 == 127) {
        f->length = 0;
        for (int k = 0; k < 8; k++) f->length = f->length << 8 | h[2 + k];
        i = 10;
        if (f->length >> 63) return "payload length with the most significant bit set";
        if (f->length <= 0xFFFF) return "non-minimal payload length";
    } else {
        f->length = len7;
    }
    if (f->masked) memcpy(f->mask, h + i, 4);

    if (p->role == WS_ROLE_SERVER && !f->masked) return "unmasked client frame";
    if (p->role == WS_ROLE_CLIENT && f->masked) return "masked server frame";
    if (f->rsv2 || f->rsv3) return "reserved bit set";

    bool control = f->opcode & 0x8;
    if (control) {
        if (f->opcode > WS_OP_PONG) return "reserved control opcode";
        if (!f->fin) return "fragmented control frame";
        if (f->length > WS_MAX_CONTROL_PAYLOAD) return "control frame payload over 125 bytes";
        if (f->rsv1) return "reserved bit set on a control frame";
        return NULL;
    }
    if (f->opcode > WS_OP_BINARY) return "reserved data opcode";
    if (f->opcode == WS_OP_CONT) {
        if (!p->in_message) return "continuation frame without a message to continue";
        /* RSV1 marks a compressed message on its first frame only. */
        if (f->rsv1) return "reserved bit set on a continuation frame";
    } else {
        if (p->in_message) return "new data frame inside a fragmented message";
        if (f->rsv1 && !p->allow_rsv1) return "reserved bit set";
    }
    p->in_message = !f->fin;
    return NULL;
}

size_t frame_parse(frame_parser *p, uint8_t *buf, size_t len, frame_event *ev)
{
    ev->data = NULL;
    ev->len = 0;
    ev->ascii = false;

    switch (p->state) {
    case ST_HEADER: {
        size_t used = 0;
        while (used < len) {
            p->hdr[p->hdr_len++] = buf[used++];
            if (p->hdr_len >= 2 && p->hdr_len == header_size(p->hdr)) {
                const char *err = check_header(p);
                if (err) return fail(p, ev, err);
                p->done = 0;
                p->hdr_len = 0;
                p->state = p->frame.length ? ST_PAYLOAD : ST_END;
                ev->type = FRAME_EV_FRAME;
                return used;
            }
        }
        ev->type = FRAME_EV_NEED_MORE;
        return used;
    }
    case ST_PAYLOAD: {
        uint64_t left = p->frame.length - p->done;
        size_t n = len < left ? len : (size_t)left;
        if (n == 0) {
            ev->type = FRAME_EV_NEED_MORE;
            return 0;
        }
        ev->ascii = p->frame.masked && frame_mask(buf, n, p->frame.mask, p->done);
        p->done += n;
        if (p->done == p->frame.length) p->state = ST_END;
        ev->type = FRAME_EV_PAYLOAD;
        ev->data = buf;
        ev->len = n;
        return n;
    }
    case ST_END:
        p->state = ST_HEADER;
        ev->type = FRAME_EV_FRAME_END;
        return 0;
    default:
        ev->type = FRAME_EV_ERROR;
        ev->close_code = WS_CLOSE_PROTOCOL;
        ev->reason = "parser used after an error";
        return 0;
    }
}

uint64_t frame_payload_left(const frame_parser *p)
{
    return p->state == ST_PAYLOAD ? p->frame.length - p->done : 0;
}

bool frame_mask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t off)
{
    uint8_t m[8];
    for (int i = 0; i < 8; i++) m[i] = mask[(off + (unsigned)i) & 3];
    /* Word-wise: the key repeats every 4 bytes, so an 8-byte rotated key
     * applies to every aligned 8-byte step of the payload.  The OR of what
     * comes out tells whether it is all ASCII, in the same pass. */
    uint64_t m64, acc = 0;
    memcpy(&m64, m, 8);
    size_t i = 0;
    for (; i + 32 <= len; i += 32) {
        uint64_t w[4];
        memcpy(w, data + i, 32);
        w[0] ^= m64;
        w[1] ^= m64;
        w[2] ^= m64;
        w[3] ^= m64;
        memcpy(data + i, w, 32);
        acc |= w[0] | w[1] | w[2] | w[3];
    }
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, data + i, 8);
        w ^= m64;
        memcpy(data + i, &w, 8);
        acc |= w;
    }
    uint8_t tail = 0;
    for (; i < len; i++) {
        data[i] ^= m[i & 7];
        tail |= data[i];
    }
    return !(acc & 0x8080808080808080ULL) && !(tail & 0x80);
}

size_t frame_write_header(uint8_t *out, bool fin, bool rsv1, uint8_t opcode,
                       uint64_t length, const uint8_t *mask)
{
    size_t n = 2;
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0F));
    uint8_t maskbit = mask ? 0x80 : 0;
    if (length < 126) {
        out[1] = maskbit | (uint8_t)length;
    } else if (length <= 0xFFFF) {
        out[1] = maskbit | 126;
        out[2] = (uint8_t)(length >> 8);
        out[3] = (uint8_t)length;
        n = 4;
    } else {
        out[1] = maskbit | 127;
        for (int k = 0; k < 8; k++) out[2 + k] = (uint8_t)(length >> (56 - 8 * k));
        n = 10;
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

bool frame_close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999) return true;   /* libraries, applications */
    if (code < 1000 || code > 1014) return false;
    /* 1004 reserved; 1005 and 1006 must never be sent; 1015 is TLS (excluded above). */
    return code != 1004 && code != 1005 && code != 1006;
}

uint16_t frame_close_payload_parse(const uint8_t *p, size_t n, uint16_t *code,
                                const char **reason, size_t *reason_len)
{
    *code = WS_CLOSE_NO_STATUS;
    *reason = "";
    *reason_len = 0;
    if (n == 0) return 0;
    if (n == 1) return WS_CLOSE_PROTOCOL;
    *code = (uint16_t)(p[0] << 8 | p[1]);
    if (!frame_close_code_valid(*code)) return WS_CLOSE_PROTOCOL;
    if (!utf8_valid(p + 2, n - 2)) return WS_CLOSE_INVALID_DATA;
    *reason = (const char *)p + 2;
    *reason_len = n - 2;
    return 0;
}
