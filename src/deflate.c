/* deflate.c — permessage-deflate (RFC 7692); see deflate.h. */
#include "deflate.h"
#include "xalloc.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- negotiation ---- */

typedef struct offer {
    bool server_nct, client_nct;
    int server_bits;        /* 0 when absent */
    int client_bits;        /* 0 absent, -1 present without a value */
} offer;

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

/* Reads a token or quoted-string into buf; returns the position after it. */
static const char *read_token(const char *p, char *buf, size_t size)
{
    size_t n = 0;
    p = skip_ws(p);
    bool quoted = *p == '"';
    if (quoted) p++;
    while (*p && (quoted ? *p != '"' : (*p != ',' && *p != ';' && *p != '=' && *p != ' ' && *p != '\t'))) {
        if (n + 1 < size) buf[n++] = *p;
        p++;
    }
    if (quoted && *p == '"') p++;
    buf[n] = '\0';
    return skip_ws(p);
}

static int parse_bits(const char *v)
{
    if (!v[0] || !isdigit((unsigned char)v[0]) || (v[1] && (!isdigit((unsigned char)v[1]) || v[2]))) return 0;
    if (v[0] == '0') return 0;
    int n = atoi(v);
    return n >= 8 && n <= 15 ? n : 0;
}

/* Parses one extension's parameters (after its name). Returns the position
 * after it and sets *valid if every parameter is known, once, well-formed. */
static const char *parse_params(const char *p, offer *o, bool *valid)
{
    *valid = true;
    memset(o, 0, sizeof *o);
    bool seen_s = false, seen_c = false, seen_sb = false, seen_cb = false;
    while (*p == ';') {
        char name[64], value[64] = "";
        bool has_value = false;
        p = read_token(p + 1, name, sizeof name);
        if (*p == '=') {
            p = read_token(p + 1, value, sizeof value);
            has_value = true;
        }
        if (strcasecmp(name, "server_no_context_takeover") == 0) {
            if (seen_s || has_value) *valid = false;
            seen_s = o->server_nct = true;
        } else if (strcasecmp(name, "client_no_context_takeover") == 0) {
            if (seen_c || has_value) *valid = false;
            seen_c = o->client_nct = true;
        } else if (strcasecmp(name, "server_max_window_bits") == 0) {
            if (seen_sb || !has_value || !(o->server_bits = parse_bits(value))) *valid = false;
            seen_sb = true;
        } else if (strcasecmp(name, "client_max_window_bits") == 0) {
            if (seen_cb) *valid = false;
            seen_cb = true;
            if (has_value) {
                if (!(o->client_bits = parse_bits(value))) *valid = false;
            } else {
                o->client_bits = -1;
            }
        } else {
            *valid = false;
        }
    }
    return p;
}

bool pmd_negotiate(const char *offers, enum deflate_mode mode, pmd_params *params,
                   char *response, size_t response_size)
{
    if (mode == DEFLATE_OFF || !offers) return false;
    const char *p = offers;
    while (*p) {
        char name[64];
        p = read_token(p, name, sizeof name);
        offer o;
        bool valid;
        p = parse_params(p, &o, &valid);
        /* Anything else before the next comma makes the offer malformed. */
        p = skip_ws(p);
        if (*p && *p != ',') valid = false;
        /* skip to the next extension */
        while (*p && *p != ',') p++;
        if (*p == ',') p++;
        if (!valid || strcasecmp(name, "permessage-deflate") != 0) continue;
        /* zlib cannot deflate raw data with a 256-byte window: decline. */
        if (o.server_bits == 8) continue;

        params->server_no_context_takeover = mode == DEFLATE_SHARED || o.server_nct;
        params->client_no_context_takeover = mode == DEFLATE_SHARED || o.client_nct;
        params->server_max_window_bits = (uint8_t)(o.server_bits ? o.server_bits : 15);
        params->client_max_window_bits = (uint8_t)(o.client_bits > 0 ? o.client_bits : 15);

        int n = snprintf(response, response_size, "permessage-deflate%s%s",
                         params->server_no_context_takeover ? "; server_no_context_takeover" : "",
                         params->client_no_context_takeover ? "; client_no_context_takeover" : "");
        if (o.server_bits && n > 0 && (size_t)n < response_size)
            n += snprintf(response + n, response_size - (size_t)n, "; server_max_window_bits=%d", o.server_bits);
        if (o.client_bits > 0 && n > 0 && (size_t)n < response_size)
            n += snprintf(response + n, response_size - (size_t)n, "; client_max_window_bits=%d", o.client_bits);
        return n > 0 && (size_t)n < response_size;
    }
    return false;
}

bool pmd_client_accept(const char *answer, pmd_params *params)
{
    char name[64];
    const char *p = read_token(answer, name, sizeof name);
    if (strcasecmp(name, "permessage-deflate") != 0) return false;
    offer o;
    bool valid;
    p = parse_params(p, &o, &valid);
    if (!valid || *p) return false;          /* one extension, nothing else */
    if (o.client_bits == -1) return false;   /* the server must give a value */
    /* Roles swap: the server's "client_*" parameters bind our compressor. */
    params->server_no_context_takeover = o.client_nct;
    params->client_no_context_takeover = o.server_nct;
    params->server_max_window_bits = (uint8_t)(o.client_bits > 0 ? o.client_bits : 15);
    params->client_max_window_bits = (uint8_t)(o.server_bits ? o.server_bits : 15);
    /* zlib cannot deflate raw data in a 256-byte window: then we send
     * uncompressed (allowed per message) and only inflate. */
    if (params->server_max_window_bits == 8) params->server_max_window_bits = 0;
    return true;
}

/* ---- streams ---- */

static z_stream *new_deflate(int level, int bits)
{
    z_stream *z = xcalloc(sizeof *z);
    /* memLevel 8 is zlib's default; negative bits: raw deflate, no header. */
    if (deflateInit2(z, level, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(z);
        return NULL;
    }
    return z;
}

static void free_deflate(z_stream *z)
{
    if (!z) return;
    deflateEnd(z);
    free(z);
}

static void free_inflate(z_stream *z)
{
    if (!z) return;
    inflateEnd(z);
    free(z);
}

void pmd_worker_init(pmd_worker *w, enum deflate_mode mode, int level, size_t min_size)
{
    memset(w, 0, sizeof *w);
    w->mode = mode;
    w->level = level;
    w->min_size = min_size;
}

void pmd_worker_free(pmd_worker *w)
{
    for (int i = 0; i < 16; i++) free_deflate(w->shared[i]);
    for (int i = 0; i < w->ninflate; i++) free_inflate(w->inflate_pool[i]);
    free(w->out.data);
    memset(w, 0, sizeof *w);
}

static z_stream *get_inflate(pmd_worker *w)
{
    if (w->ninflate) {
        z_stream *z = w->inflate_pool[--w->ninflate];
        inflateReset(z);
        return z;
    }
    z_stream *z = xcalloc(sizeof *z);
    /* A 15-bit window inflates anything a smaller window produced. */
    if (inflateInit2(z, -15) != Z_OK) {
        free(z);
        return NULL;
    }
    return z;
}

static void put_inflate(pmd_worker *w, z_stream *z)
{
    if (w->ninflate < 16) w->inflate_pool[w->ninflate++] = z;
    else free_inflate(z);
}

void pmd_conn_free(pmd_worker *w, pmd_conn *pc)
{
    free_deflate(pc->deflate);
    pc->deflate = NULL;
    if (pc->inflate) put_inflate(w, pc->inflate);
    pc->inflate = NULL;
}

static bool reserve(bytes *b, size_t extra)
{
    bytes_reserve(b, extra, 4096);
    return true;
}

bool pmd_compress(pmd_worker *w, pmd_conn *pc, const uint8_t *in, size_t len)
{
    int bits = pc->params.server_max_window_bits;
    z_stream *z;
    if (pc->params.server_no_context_takeover && w->mode == DEFLATE_SHARED) {
        if (!w->shared[bits] && !(w->shared[bits] = new_deflate(w->level, bits))) return false;
        z = w->shared[bits];
    } else {
        if (!pc->deflate && !(pc->deflate = new_deflate(w->level, bits))) return false;
        z = pc->deflate;
    }
    w->out.len = 0;
    if (len == 0) {
        /* An empty message is one 0x00 (RFC 7692 7.2.3.6): zlib would
         * emit nothing for a flush with no input after a flush. */
        if (!reserve(&w->out, 1)) return false;
        w->out.data[w->out.len++] = 0x00;
        return true;
    }
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)len;
    do {
        if (!reserve(&w->out, deflateBound(z, z->avail_in) + 16)) return false;
        z->next_out = w->out.data + w->out.len;
        z->avail_out = (uInt)(w->out.cap - w->out.len);
        int r = deflate(z, Z_SYNC_FLUSH);
        w->out.len = w->out.cap - z->avail_out;
        if (r != Z_OK && r != Z_BUF_ERROR) return false;
    } while (z->avail_in || z->avail_out == 0);
    /* RFC 7692 7.2.1: drop the 0x00 0x00 0xff 0xff that ends a sync flush. */
    if (w->out.len >= 4) w->out.len -= 4;
    if (pc->params.server_no_context_takeover) deflateReset(z);
    return true;
}

int pmd_inflate(pmd_worker *w, pmd_conn *pc, const uint8_t *in, size_t len, bool final,
                bytes *out, size_t limit)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    if (len) pc->got_data = true;
    if (final && !pc->got_data && len == 0) return 0;   /* an empty payload is an empty message */
    if (final) pc->got_data = false;
    if (!pc->inflate && !(pc->inflate = get_inflate(w))) return 1011;
    z_stream *z = pc->inflate;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0) {
            z->next_in = (Bytef *)in;
            z->avail_in = (uInt)len;
        } else {
            if (!final) break;
            z->next_in = (Bytef *)tail;
            z->avail_in = 4;
        }
        while (z->avail_in) {
            size_t room = limit - out->len;
            size_t want = 16 * 1024;
            /* One byte more than the limit allows tells a bomb from an exact fit. */
            if (want > room + 1) want = room + 1;
            if (!reserve(out, want)) return 1011;
            z->next_out = out->data + out->len;
            z->avail_out = (uInt)want;
            int r = inflate(z, Z_SYNC_FLUSH);
            out->len += want - z->avail_out;
            if (out->len > limit) return 1009;
            if (r == Z_STREAM_END) {
                /* A final deflate block ends the stream; what follows
                 * starts afresh (RFC 7692 7.2.3.3 allows BFINAL=1). */
                inflateReset(z);
                continue;
            }
            if (r == Z_BUF_ERROR && z->avail_out) break;
            if (r != Z_OK && r != Z_BUF_ERROR) return 1007;
        }
        if (z->avail_in) return 1007;
    }
    return 0;
}

void pmd_message_done(pmd_worker *w, pmd_conn *pc)
{
    if (pc->inflate && pc->params.client_no_context_takeover) {
        put_inflate(w, pc->inflate);
        pc->inflate = NULL;
    }
}
