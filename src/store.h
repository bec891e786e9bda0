/* store.h — luaws.store's storage: named key/value stores shared by every
 * worker of one machine, in one LMDB file (pure C: no libuv, no Lua).
 *
 * One LMDB environment per process, opened lazily (store_open) by the
 * process that uses it, i.e. AFTER fork: an MDB_env must never cross a
 * fork. A store is an LMDB named database. Every value carries a type tag
 * (so incr can add in C, atomically) and an expiry (wall clock ms, 0: none);
 * "now" is always given by the caller, so a test clock can drive expiry.
 *
 * Durability: the env is opened with MDB_NOSYNC. A committed write is in the
 * page cache, so it survives the crash or SIGKILL of any process; a
 * persistent store (--store PATH) is synced at store_close. A machine crash
 * (power loss, kernel panic) may lose the latest writes, never the file's
 * consistency.
 *
 * Errors never abort: functions return a negative STORE_E* code and write a
 * message into err (STORE_ERR_MAX bytes). The process is single-threaded. */
#ifndef LUAWS_STORE_H
#define LUAWS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_ERR_MAX 256
#define STORE_MAX_DBS 256
#define STORE_DEFAULT_SIZE ((size_t)64 << 20)

enum store_code {
    STORE_OK = 0,
    STORE_EFAIL = -1,     /* LMDB or the file system failed: see err */
    STORE_EFULL = -2,     /* MDB_MAP_FULL: the map (--store-size) is full */
    STORE_ENOTNUM = -3,   /* incr on a value that is not a number */
    STORE_EDBS = -4,      /* more than STORE_MAX_DBS stores */
};

enum store_type { ST_STRING = 1, ST_INT = 2, ST_FLOAT = 3, ST_BOOL = 4, ST_JSON = 5 };

/* A value as stored. data points into LMDB's map (valid until the
 * transaction ends) or, from store_get, into the store's scratch buffer
 * (valid until the next store_* call). */
typedef struct store_value {
    enum store_type type;
    uint64_t expires;         /* wall clock ms; 0: never */
    const void *data;         /* ST_STRING / ST_JSON bytes */
    size_t len;
    int64_t i;                /* ST_INT */
    double f;                 /* ST_FLOAT */
    bool b;                   /* ST_BOOL */
} store_value;

typedef struct store_txn store_txn;

/* Opens this process's environment unless it is open. path: the file
 * (created if missing; a "-lock" file beside it); NULL: a fresh private
 * directory (mkdtemp) removed by store_close. keep: sync at close (a
 * persistent --store). Clears reader slots left by killed processes. */
int store_open(const char *path, bool keep, size_t map_size, char *err);
bool store_is_open(void);
/* Closes the environment (synced first if keep), frees the scratch buffer,
 * and removes the private directory if store_open made one. Only the process
 * that opened it closes it; a forked child just forgets it. */
void store_close(void);
size_t store_map_size(void);
size_t store_max_key(void);

/* The named store's handle (created if missing). */
int store_db(const char *name, unsigned *dbi, char *err);
/* Empties every store this process opened (luaws test, between tests). */
int store_clear_all(char *err);

/* One-shot operations, each in its own transaction. now: wall clock ms. */
/* 1 found (copied to the scratch buffer), 0 absent or expired. */
int store_get(unsigned dbi, const void *key, size_t klen, uint64_t now, store_value *out, char *err);
enum store_put_mode { STORE_SET, STORE_ADD };
/* v NULL deletes. STORE_ADD: 0 if a live value is present (nothing written). */
int store_put(unsigned dbi, const void *key, size_t klen, const store_value *v, enum store_put_mode mode,
              uint64_t now, char *err);
/* Adds delta (an ST_INT or ST_FLOAT value) to the number at key, or to init
 * if absent or expired; out gets the new number. An existing expiry is kept. */
int store_incr(unsigned dbi, const void *key, size_t klen, const store_value *delta, const store_value *init,
               uint64_t now, store_value *out, char *err);
/* The live keys starting with prefix, into the scratch buffer: *n keys,
 * each a uint32_t length then its bytes; *keys points at the first. */
int store_keys(unsigned dbi, const void *prefix, size_t plen, uint64_t now, const uint8_t **keys, size_t *n,
               char *err);

/* A write transaction for a read-modify-write (luaws.store update): holds
 * the writer lock of every process until store_txn_commit/abort. */
int store_txn_begin(store_txn **txn, char *err);
/* Like store_get, but data points into the map (valid until the txn ends). */
int store_txn_get(store_txn *txn, unsigned dbi, const void *key, size_t klen, uint64_t now, store_value *out,
                  char *err);
int store_txn_put(store_txn *txn, unsigned dbi, const void *key, size_t klen, const store_value *v, char *err);
int store_txn_commit(store_txn *txn, char *err);
void store_txn_abort(store_txn *txn);

#endif
