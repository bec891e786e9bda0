#!/bin/sh
# Builds and runs the Redis bus unit test (src/redis_bus.c against real
# redis-server processes on free loopback ports).
#   spec/unit/build_redis.sh            # plain build, run
#   spec/unit/build_redis.sh valgrind   # run under valgrind, failing on errors and leaks
#   spec/unit/build_redis.sh asan       # build with ASan + UBSan, run
# Extra arguments go to the test (-v prints every check and log line).
# Needs gcc, libuv1-dev, libhiredis-dev, redis-server (and valgrind for that mode).
set -e
cd "$(dirname "$0")/../.."
mode=${1:-plain}
[ $# -gt 0 ] && shift
out=build/unit
mkdir -p "$out"
CFLAGS="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -g -O1 -Isrc"
bin="$out/test_redis_bus"
if [ "$mode" = asan ]; then
    CFLAGS="$CFLAGS -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
    bin="$out/test_redis_bus_asan"
fi
# The test brings its own log_msg (to check the log lines), so no src/log.c.
${CC:-cc} $CFLAGS spec/unit/test_redis_bus.c src/redis_bus.c src/redis_uv.c -o "$bin" \
    $(pkg-config --cflags --libs libuv hiredis)
case $mode in
valgrind)
    exec valgrind -q --leak-check=full --show-leak-kinds=all \
        --errors-for-leak-kinds=all --error-exitcode=99 "$bin" "$@" ;;
*)
    exec "$bin" "$@" ;;
esac
