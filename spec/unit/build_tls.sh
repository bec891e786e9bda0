#!/bin/sh
# Builds and runs the TLS unit test (src/tls.c against an in-memory client).
#   spec/unit/build_tls.sh            # plain build, run
#   spec/unit/build_tls.sh valgrind   # run under valgrind, failing on errors and leaks
#   spec/unit/build_tls.sh asan       # build with ASan + UBSan, run
# Needs gcc, libssl-dev, the openssl CLI (and valgrind for that mode).
set -e
cd "$(dirname "$0")/../.."
mode=${1:-plain}
out=build/unit
mkdir -p "$out"
CFLAGS="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -g -O1 -Isrc"
bin="$out/test_tls"
if [ "$mode" = asan ]; then
    CFLAGS="$CFLAGS -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
    bin="$out/test_tls_asan"
fi
${CC:-cc} $CFLAGS spec/unit/test_tls.c src/tls.c src/xalloc.c -o "$bin" $(pkg-config --cflags --libs libssl libcrypto)
case $mode in
valgrind)
    # Heap numbers mean nothing under valgrind: skip the measurement there.
    TLS_TEST_NO_MEASURE=1 exec valgrind -q --leak-check=full --show-leak-kinds=all \
        --errors-for-leak-kinds=all --error-exitcode=99 "$bin" ;;
*)
    exec "$bin" ;;
esac
