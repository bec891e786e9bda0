/* bytes.h — a growable byte buffer, owned by whoever embeds it. */
#ifndef LUAWS_BYTES_H
#define LUAWS_BYTES_H

#include <stddef.h>
#include <stdint.h>

typedef struct bytes {
    uint8_t *data;
    size_t len, cap;
} bytes;

#endif
