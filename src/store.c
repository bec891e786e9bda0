/* store.c — luaws.store over LMDB (see store.h). Pure C: libc and LMDB.
 *
 * On disk a value is: 1 byte type tag, 8 bytes expiry (uint64_t ms, native
 * order: the file never leaves the machine), then the payload (the bytes of
 * a string or JSON text, an int64_t, a double, or one byte for a boolean). */
#include "store.h"
#include <lmdb.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HDR 9   /* tag + expiry */

/* This process's environment. Owned by the process that opened it (pid):
 * a forked child inherits the pointer but must not use nor close it. */
static MDB_env *env;
static pid_t env_pid;
static bool env_keep;               /* --store PATH: sync at close */
static size_t env_map_size;
static char private_dir[64];        /* made by store_open when path was NULL; "" otherwise */
static unsigned dbis[STORE_MAX_DBS];/* every store opened, for store_clear_all */
static size_t ndbis;
/* Where store_get, store_keys and encoding copy values: owned here, grown
 * as needed, freed by store_close. */
static uint8_t *scratch;
static size_t scratch_cap;

static int fail(char *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, STORE_ERR_MAX, fmt, ap);
    va_end(ap);
    return code;
}

/* An LMDB error as a store code and message. */
static int mdb_fail(char *err, int rc, const char *what)
{
    if (rc == MDB_MAP_FULL)
        return fail(err, STORE_EFULL, "the store is full (%zu bytes, --store-size)", env_map_size);
    if (rc == MDB_DBS_FULL) return fail(err, STORE_EDBS, "too many stores (at most %d)", STORE_MAX_DBS);
    return fail(err, STORE_EFAIL, "%s: %s", what, mdb_strerror(rc));
}

static bool scratch_reserve(size_t n)
{
    if (n <= scratch_cap) return true;
    size_t cap = scratch_cap ? scratch_cap : 256;
    while (cap < n) cap *= 2;
    uint8_t *p = realloc(scratch, cap);
    if (!p) return false;
    scratch = p;
    scratch_cap = cap;
    return true;
}

bool store_is_open(void) { return env && env_pid == getpid(); }
size_t store_map_size(void) { return env_map_size; }
size_t store_max_key(void) { return store_is_open() ? (size_t)mdb_env_get_maxkeysize(env) : 511; }

static void remove_private_dir(void)
{
    if (!private_dir[0]) return;
    char p[sizeof private_dir + 32];
    snprintf(p, sizeof p, "%s/store.mdb", private_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/store.mdb-lock", private_dir);
    unlink(p);
    rmdir(private_dir);
    private_dir[0] = '\0';
}

int store_open(const char *path, bool keep, size_t map_size, char *err)
{
    if (store_is_open()) return STORE_OK;
    if (env) {
        /* Inherited across fork: forget it (using or closing it here would
         * corrupt the parent's locks). Its memory stays with the child. */
        env = NULL;
        private_dir[0] = '\0';
        ndbis = 0;
    }
    char file[4096];
    if (!path) {
        snprintf(private_dir, sizeof private_dir, "/tmp/luaws-store-XXXXXX");
        if (!mkdtemp(private_dir)) {
            private_dir[0] = '\0';
            return fail(err, STORE_EFAIL, "cannot make a directory for the store: %s", strerror(errno));
        }
        snprintf(file, sizeof file, "%s/store.mdb", private_dir);
        path = file;
        keep = false;
    }
    MDB_env *e;
    int rc = mdb_env_create(&e);
    if (rc) {
        remove_private_dir();
        return mdb_fail(err, rc, "mdb_env_create");
    }
    if ((rc = mdb_env_set_maxdbs(e, STORE_MAX_DBS)) || (rc = mdb_env_set_mapsize(e, map_size)) ||
        (rc = mdb_env_open(e, path, MDB_NOSUBDIR | MDB_NOSYNC, 0600))) {
        mdb_env_close(e);
        remove_private_dir();
        return fail(err, STORE_EFAIL, "cannot open the store file %s: %s", path, mdb_strerror(rc));
    }
    /* Reader slots of processes that died in a read (SIGKILL) would pin
     * old pages forever: clear them. */
    int dead = 0;
    mdb_reader_check(e, &dead);
    MDB_envinfo info;
    env_map_size = mdb_env_info(e, &info) == 0 ? info.me_mapsize : map_size;
    env = e;
    env_pid = getpid();
    env_keep = keep;
    ndbis = 0;
    return STORE_OK;
}

void store_close(void)
{
    if (env && env_pid == getpid()) {
        if (env_keep) mdb_env_sync(env, 1);
        mdb_env_close(env);
        remove_private_dir();
    }
    env = NULL;
    ndbis = 0;
    free(scratch);
    scratch = NULL;
    scratch_cap = 0;
}

/* Begins a transaction; adopts a map grown by another process. */
static int begin(unsigned flags, MDB_txn **txn, char *err)
{
    if (!store_is_open()) return fail(err, STORE_EFAIL, "the store is not open");
    int rc = mdb_txn_begin(env, NULL, flags, txn);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(env, 0);
        rc = mdb_txn_begin(env, NULL, flags, txn);
    }
    return rc ? mdb_fail(err, rc, "mdb_txn_begin") : STORE_OK;
}

static int commit(MDB_txn *txn, char *err)
{
    int rc = mdb_txn_commit(txn);
    return rc ? mdb_fail(err, rc, "mdb_txn_commit") : STORE_OK;
}

int store_db(const char *name, unsigned *dbi, char *err)
{
    MDB_txn *txn;
    int rc = begin(0, &txn, err);
    if (rc) return rc;
    MDB_dbi d;
    if ((rc = mdb_dbi_open(txn, name, MDB_CREATE, &d))) {
        mdb_txn_abort(txn);
        return mdb_fail(err, rc, "mdb_dbi_open");
    }
    if ((rc = commit(txn, err))) return rc;
    *dbi = d;
    for (size_t i = 0; i < ndbis; i++)
        if (dbis[i] == d) return STORE_OK;
    if (ndbis < STORE_MAX_DBS) dbis[ndbis++] = d;
    return STORE_OK;
}

int store_clear_all(char *err)
{
    if (!store_is_open() || ndbis == 0) return STORE_OK;
    MDB_txn *txn;
    int rc = begin(0, &txn, err);
    if (rc) return rc;
    for (size_t i = 0; i < ndbis; i++) {
        if ((rc = mdb_drop(txn, dbis[i], 0))) {
            mdb_txn_abort(txn);
            return mdb_fail(err, rc, "mdb_drop");
        }
    }
    return commit(txn, err);
}

/* ---- values ---- */

/* Decodes a stored value; false if it is not one of ours. */
static bool decode(const MDB_val *v, store_value *out)
{
    if (v->mv_size < HDR) return false;
    const uint8_t *p = v->mv_data;
    memset(out, 0, sizeof *out);
    out->type = p[0];
    memcpy(&out->expires, p + 1, 8);
    out->data = p + HDR;
    out->len = v->mv_size - HDR;
    switch (out->type) {
    case ST_STRING:
    case ST_JSON: return true;
    case ST_INT: if (out->len != 8) return false; memcpy(&out->i, out->data, 8); return true;
    case ST_FLOAT: if (out->len != 8) return false; memcpy(&out->f, out->data, 8); return true;
    case ST_BOOL: if (out->len != 1) return false; out->b = p[HDR] != 0; return true;
    }
    return false;
}

static bool live(const store_value *v, uint64_t now) { return v->expires == 0 || v->expires > now; }

static size_t encoded_len(const store_value *v)
{
    switch (v->type) {
    case ST_INT: case ST_FLOAT: return HDR + 8;
    case ST_BOOL: return HDR + 1;
    default: return HDR + v->len;
    }
}

static void encode(const store_value *v, uint8_t *p)
{
    p[0] = (uint8_t)v->type;
    memcpy(p + 1, &v->expires, 8);
    switch (v->type) {
    case ST_INT: memcpy(p + HDR, &v->i, 8); break;
    case ST_FLOAT: memcpy(p + HDR, &v->f, 8); break;
    case ST_BOOL: p[HDR] = v->b; break;
    default: if (v->len) memcpy(p + HDR, v->data, v->len); break;
    }
}

static MDB_val key_val(const void *key, size_t klen)
{
    MDB_val k = { klen, (void *)key };
    return k;
}

/* ---- transactions (update) ---- */

int store_txn_begin(store_txn **txn, char *err)
{
    MDB_txn *t;
    int rc = begin(0, &t, err);
    if (rc == STORE_OK) *txn = (store_txn *)t;
    return rc;
}

int store_txn_get(store_txn *txn, unsigned dbi, const void *key, size_t klen, uint64_t now, store_value *out,
                  char *err)
{
    MDB_val k = key_val(key, klen), v;
    int rc = mdb_get((MDB_txn *)txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return mdb_fail(err, rc, "mdb_get");
    if (!decode(&v, out)) return fail(err, STORE_EFAIL, "a value in the store is damaged (unknown type)");
    return live(out, now) ? 1 : 0;
}

int store_txn_put(store_txn *txn, unsigned dbi, const void *key, size_t klen, const store_value *v, char *err)
{
    MDB_val k = key_val(key, klen);
    int rc;
    if (!v) {
        rc = mdb_del((MDB_txn *)txn, dbi, &k, NULL);
        return rc && rc != MDB_NOTFOUND ? mdb_fail(err, rc, "mdb_del") : STORE_OK;
    }
    MDB_val data = { encoded_len(v), NULL };
    /* MDB_RESERVE: LMDB gives the space, we encode into it (no copy). */
    if ((rc = mdb_put((MDB_txn *)txn, dbi, &k, &data, MDB_RESERVE))) return mdb_fail(err, rc, "mdb_put");
    encode(v, data.mv_data);
    return STORE_OK;
}

int store_txn_commit(store_txn *txn, char *err) { return commit((MDB_txn *)txn, err); }
void store_txn_abort(store_txn *txn) { mdb_txn_abort((MDB_txn *)txn); }

/* ---- one-shot operations ---- */

/* Deletes every expired entry of every store this process opened: done once
 * when a write finds the map full, before giving up. Returns how many. */
static size_t sweep_expired(uint64_t now)
{
    char err[STORE_ERR_MAX];
    MDB_txn *txn;
    if (begin(0, &txn, err)) return 0;
    size_t n = 0;
    for (size_t i = 0; i < ndbis; i++) {
        MDB_cursor *cur;
        if (mdb_cursor_open(txn, dbis[i], &cur)) continue;
        MDB_val k, v;
        int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        while (rc == 0) {
            store_value sv;
            if (decode(&v, &sv) && !live(&sv, now) && mdb_cursor_del(cur, 0) == 0) n++;
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
    }
    if (n == 0 || mdb_txn_commit(txn)) {
        if (n == 0) mdb_txn_abort(txn);
        return 0;
    }
    return n;
}

int store_get(unsigned dbi, const void *key, size_t klen, uint64_t now, store_value *out, char *err)
{
    MDB_txn *txn;
    int rc = begin(MDB_RDONLY, &txn, err);
    if (rc) return rc;
    rc = store_txn_get((store_txn *)txn, dbi, key, klen, now, out, err);
    if (rc == 1 && (out->type == ST_STRING || out->type == ST_JSON)) {
        /* Copy out of the map: the read transaction ends here. */
        if (!scratch_reserve(out->len + 1)) rc = fail(err, STORE_EFAIL, "out of memory");
        else {
            if (out->len) memcpy(scratch, out->data, out->len);
            out->data = scratch;
        }
    }
    mdb_txn_abort(txn);
    return rc;
}

static int put_once(unsigned dbi, const void *key, size_t klen, const store_value *v, enum store_put_mode mode,
                    uint64_t now, char *err)
{
    MDB_txn *txn;
    int rc = begin(0, &txn, err);
    if (rc) return rc;
    if (mode == STORE_ADD) {
        store_value old;
        rc = store_txn_get((store_txn *)txn, dbi, key, klen, now, &old, err);
        if (rc != 0) {
            mdb_txn_abort(txn);
            return rc < 0 ? rc : 0;   /* present: nothing written */
        }
    }
    if ((rc = store_txn_put((store_txn *)txn, dbi, key, klen, v, err))) {
        mdb_txn_abort(txn);
        return rc;
    }
    return (rc = commit(txn, err)) ? rc : 1;
}

int store_put(unsigned dbi, const void *key, size_t klen, const store_value *v, enum store_put_mode mode,
              uint64_t now, char *err)
{
    int rc = put_once(dbi, key, klen, v, mode, now, err);
    if (rc == STORE_EFULL && sweep_expired(now)) rc = put_once(dbi, key, klen, v, mode, now, err);
    return rc;
}

static int incr_once(unsigned dbi, const void *key, size_t klen, const store_value *delta, const store_value *init,
                     uint64_t now, store_value *out, char *err)
{
    MDB_txn *txn;
    int rc = begin(0, &txn, err);
    if (rc) return rc;
    store_value cur;
    rc = store_txn_get((store_txn *)txn, dbi, key, klen, now, &cur, err);
    if (rc < 0) goto abort;
    if (rc == 0) cur = *init, cur.expires = 0;
    if (cur.type != ST_INT && cur.type != ST_FLOAT) {
        rc = fail(err, STORE_ENOTNUM, "the value is not a number");
        goto abort;
    }
    store_value n = { .expires = cur.expires };
    if (cur.type == ST_INT && delta->type == ST_INT) {
        n.type = ST_INT;   /* wraps around, as Lua's integers do */
        n.i = (int64_t)((uint64_t)cur.i + (uint64_t)delta->i);
    } else {
        n.type = ST_FLOAT;
        n.f = (cur.type == ST_INT ? (double)cur.i : cur.f) + (delta->type == ST_INT ? (double)delta->i : delta->f);
    }
    if ((rc = store_txn_put((store_txn *)txn, dbi, key, klen, &n, err))) goto abort;
    if ((rc = commit(txn, err))) return rc;
    *out = n;
    return STORE_OK;
abort:
    mdb_txn_abort(txn);
    return rc;
}

int store_incr(unsigned dbi, const void *key, size_t klen, const store_value *delta, const store_value *init,
               uint64_t now, store_value *out, char *err)
{
    int rc = incr_once(dbi, key, klen, delta, init, now, out, err);
    if (rc == STORE_EFULL && sweep_expired(now)) rc = incr_once(dbi, key, klen, delta, init, now, out, err);
    return rc;
}

int store_keys(unsigned dbi, const void *prefix, size_t plen, uint64_t now, const uint8_t **keys, size_t *n,
               char *err)
{
    MDB_txn *txn;
    int rc = begin(MDB_RDONLY, &txn, err);
    if (rc) return rc;
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, dbi, &cur))) {
        mdb_txn_abort(txn);
        return mdb_fail(err, rc, "mdb_cursor_open");
    }
    size_t used = 0, count = 0;
    MDB_val k = key_val(prefix, plen), v;
    /* Keys are sorted: start at the first >= prefix, stop at the first
     * that does not start with it. */
    rc = plen ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0) break;
        store_value sv;
        if (decode(&v, &sv) && live(&sv, now)) {
            if (!scratch_reserve(used + 4 + k.mv_size)) {
                rc = fail(err, STORE_EFAIL, "out of memory");
                break;
            }
            uint32_t len = (uint32_t)k.mv_size;
            memcpy(scratch + used, &len, 4);
            memcpy(scratch + used + 4, k.mv_data, k.mv_size);
            used += 4 + k.mv_size;
            count++;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc != 0 && rc != MDB_NOTFOUND) return rc < 0 && rc >= STORE_EDBS ? rc : mdb_fail(err, rc, "mdb_cursor_get");
    *keys = scratch;
    *n = count;
    return STORE_OK;
}
