/* main.c — command line, startup and exit codes. */
#include "server.h"
#include "lua_api.h"
#include "log.h"
#include "reload.h"
#include "workers.h"
#include "version.h"
#include <lua.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#define MAX_ORIGINS 64

enum exit_code { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static void usage(FILE *out)
{
    fprintf(out,
        "usage: luaws [options] SCRIPT\n"
        "\n"
        "Serves WebSockets with a Lua script: SCRIPT returns a handler function\n"
        "(request -> response) or a listener table. See README.md.\n"
        "\n"
        "options:\n"
        "  --host HOST            address to listen on (default 127.0.0.1; 0.0.0.0 or :: for all)\n"
        "  --port PORT            TCP port (default 8080; 0 picks a free one, shown at startup)\n"
        "  --listen URL           ws://HOST:PORT or wss://HOST:PORT; repeatable, replaces\n"
        "                         --host/--port (e.g. --listen ws://127.0.0.1:8080\n"
        "                         --listen wss://0.0.0.0:8443)\n"
        "  --tls-cert FILE        PEM certificate (chain) for wss:// listeners\n"
        "  --tls-key FILE         PEM private key for it; both reread on SIGHUP\n"
        "  --tls-ciphers LIST     OpenSSL cipher list for TLS 1.2 (default: ECDHE with AES-GCM\n"
        "                         or ChaCha20; TLS 1.3 uses OpenSSL's suites)\n"
        "  --max-message BYTES    largest message accepted; bigger ones close with 1009 (default 16777216)\n"
        "  --max-header BYTES     largest request line + headers; 431 beyond (default 16384)\n"
        "  --max-body BYTES       largest plain HTTP request body; 413 beyond (default 1048576)\n"
        "  --high-water BYTES     queued bytes above which a synchronous send waits (default 262144)\n"
        "  --close-timeout MS     wait for the peer's close frame / FIN this long (default 5000)\n"
        "  --handshake-timeout MS a whole HTTP request must arrive within this; 408 (default 10000)\n"
        "  --ping-interval MS     ping sockets idle this long, close them if still silent after\n"
        "                         as long again; 0 turns it off (default 30000)\n"
        "  --max-connections N    per worker: refuse more with 503 (default: open-file limit - 64)\n"
        "  --max-backpressure BYTES  bytes queued for one slow reader; beyond, the socket is\n"
        "                         closed with 1008 (default 67108864)\n"
        "  --origin ORIGIN        allow WebSocket upgrades only from this Origin (repeatable;\n"
        "                         others get 403; requests without Origin pass)\n"
        "  --script-timeout MS    an event or handler running longer is stopped (1011) (default 2000;\n"
        "                         0: no limit)\n"
        "  --script-memory BYTES  memory the Lua state may use (default 536870912; 0: no limit)\n"
        "  --shutdown-timeout MS  on SIGTERM, wait this long for sockets to close (default 10000)\n"
        "  --deflate MODE         permessage-deflate: shared, dedicated or off (default shared)\n"
        "                         shared: no context takeover, one compressor per worker, no\n"
        "                         zlib memory on idle connections; dedicated: context takeover\n"
        "                         per connection (best ratio, ~300 KiB per connection)\n"
        "  --deflate-level N      zlib level 1-9 (default 1: fastest)\n"
        "  --deflate-min BYTES    send messages shorter than this uncompressed (default 64)\n"
        "  --workers N            worker processes sharing the port (default: number of cores)\n"
        "  --no-watch             do not reload when the script or its modules change\n"
        "                         (SIGHUP still reloads)\n"
        "  --check                load the script, report errors, and exit without serving\n"
        "  --log-level LEVEL      debug, info, warn or error (default info)\n"
        "  --log-format FORMAT    text or json (one object per line) (default text)\n"
        "  --console              GET / shows the browser console (any script)\n"
        "  --metrics              GET /metrics answers Prometheus text (per worker)\n"
        "  --static DIR           plain GET/HEAD requests are served from files in DIR first\n"
        "  --redis URL            redis://HOST:PORT[/DB]: topics reach every worker and node\n"
        "\n"
        "  luaws client URL       interactive client: lines typed go as text messages,\n"
        "                         received messages are printed; /ping [data],\n"
        "                         /close [code [reason]], /binary HEX; works in a pipe\n"
        "  -h, --help             show this help\n"
        "  -v, --version          show the version\n");
}

/* ws://HOST:PORT or wss://HOST:PORT; an IPv6 host in brackets. */
static bool parse_listen(const char *url, listen_spec *out)
{
    const char *p;
    if (strncmp(url, "ws://", 5) == 0) {
        out->tls = false;
        p = url + 5;
    } else if (strncmp(url, "wss://", 6) == 0) {
        out->tls = true;
        p = url + 6;
    } else {
        return false;
    }
    const char *colon;
    size_t hlen;
    if (*p == '[') {
        const char *end = strchr(p, ']');
        if (!end || end[1] != ':') return false;
        hlen = (size_t)(end - p - 1);
        p++;
        colon = end + 1;
    } else {
        colon = strrchr(p, ':');
        if (!colon) return false;
        hlen = (size_t)(colon - p);
    }
    if (hlen == 0 || hlen >= sizeof out->host) return false;
    memcpy(out->host, p, hlen);
    out->host[hlen] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535) return false;
    out->port = (int)port;
    return true;
}

/* lua/luaws/client.lua in a source tree, share/luaws/lua/... installed. */
static bool find_client_script(char *out, size_t size)
{
    char exe[PATH_MAX - 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return false;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    static const char *const places[] = {"/lua/luaws/client.lua", "/../share/luaws/lua/luaws/client.lua"};
    for (size_t i = 0; i < 2; i++) {
        if (strlen(exe) + strlen(places[i]) + 1 > size) return false;
        strcpy(out, exe);
        strcat(out, places[i]);
        if (access(out, R_OK) == 0) return true;
    }
    return false;
}

static bool parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') return false;
    *out = (size_t)v;
    return true;
}

int main(int argc, char **argv)
{
    config cfg = {
        .host = "127.0.0.1",
        .port = 8080,
        .max_message = 16u << 20,
        .max_header = 16 * 1024,
        .max_body = 1u << 20,
        .write_high_water = 256 * 1024,
        .close_timeout_ms = 5000,
        .handshake_timeout_ms = 10000,
        .ping_interval_ms = 30000,
        .shutdown_timeout_ms = 10000,
        .script_timeout_ms = 2000,
        .script_memory = 512u << 20,
        .max_backpressure = 64u << 20,
        .log_level = LOG_INFO,
        .deflate = DEFLATE_SHARED,
        .deflate_level = 1,
        .deflate_min = 64,
    };
    enum { OPT_HOST = 256, OPT_PORT, OPT_MAX_MESSAGE, OPT_MAX_HEADER, OPT_MAX_BODY, OPT_HIGH_WATER,
           OPT_CLOSE_TIMEOUT, OPT_LOG_LEVEL, OPT_DEFLATE, OPT_DEFLATE_LEVEL, OPT_DEFLATE_MIN, OPT_NO_WATCH, OPT_CHECK, OPT_WORKERS, OPT_HANDSHAKE_TIMEOUT, OPT_PING_INTERVAL,
           OPT_MAX_CONNECTIONS, OPT_MAX_BACKPRESSURE, OPT_ORIGIN, OPT_SCRIPT_TIMEOUT, OPT_SCRIPT_MEMORY,
           OPT_SHUTDOWN_TIMEOUT, OPT_LISTEN, OPT_TLS_CERT, OPT_TLS_KEY, OPT_TLS_CIPHERS,
           OPT_LOG_FORMAT, OPT_CONSOLE, OPT_METRICS, OPT_STATIC, OPT_REDIS };
    static const struct option opts[] = {
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"max-message", required_argument, NULL, OPT_MAX_MESSAGE},
        {"max-header", required_argument, NULL, OPT_MAX_HEADER},
        {"max-body", required_argument, NULL, OPT_MAX_BODY},
        {"high-water", required_argument, NULL, OPT_HIGH_WATER},
        {"close-timeout", required_argument, NULL, OPT_CLOSE_TIMEOUT},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"deflate", required_argument, NULL, OPT_DEFLATE},
        {"deflate-level", required_argument, NULL, OPT_DEFLATE_LEVEL},
        {"deflate-min", required_argument, NULL, OPT_DEFLATE_MIN},
        {"no-watch", no_argument, NULL, OPT_NO_WATCH},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT},
        {"ping-interval", required_argument, NULL, OPT_PING_INTERVAL},
        {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
        {"max-backpressure", required_argument, NULL, OPT_MAX_BACKPRESSURE},
        {"origin", required_argument, NULL, OPT_ORIGIN},
        {"script-timeout", required_argument, NULL, OPT_SCRIPT_TIMEOUT},
        {"script-memory", required_argument, NULL, OPT_SCRIPT_MEMORY},
        {"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT},
        {"check", no_argument, NULL, OPT_CHECK},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"tls-ciphers", required_argument, NULL, OPT_TLS_CIPHERS},
        {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
        {"console", no_argument, NULL, OPT_CONSOLE},
        {"metrics", no_argument, NULL, OPT_METRICS},
        {"static", required_argument, NULL, OPT_STATIC},
        {"redis", required_argument, NULL, OPT_REDIS},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'v'},
        {NULL, 0, NULL, 0},
    };
    /* `luaws client URL`: the same binary as a command-line client. */
    bool client = argc >= 2 && strcmp(argv[1], "client") == 0;
    if (client) {
        argv++;
        argc--;
        cfg.log_level = LOG_WARN;
    }
    int opt;
    size_t n;
    bool watch = true, check = false;
    static const char *origins[MAX_ORIGINS];   /* point into argv */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int workers = ncpu > 0 ? (int)ncpu : 1;
    while ((opt = getopt_long(argc, argv, "hv", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_HOST: cfg.host = optarg; break;
        case OPT_PORT:
            if (!parse_size(optarg, &n) || n > 65535) {
                fprintf(stderr, "luaws: --port must be 0-65535, not '%s'\n", optarg);
                return EXIT_USAGE;
            }
            cfg.port = (int)n;
            break;
        case OPT_MAX_MESSAGE:
        case OPT_MAX_HEADER:
        case OPT_MAX_BODY:
        case OPT_HIGH_WATER:
        case OPT_CLOSE_TIMEOUT:
        case OPT_HANDSHAKE_TIMEOUT:
        case OPT_MAX_CONNECTIONS:
        case OPT_MAX_BACKPRESSURE:
        case OPT_SHUTDOWN_TIMEOUT:
            if (!parse_size(optarg, &n) || n == 0) {
                fprintf(stderr, "luaws: %s needs a positive number, not '%s'\n", argv[optind - 2], optarg);
                return EXIT_USAGE;
            }
            if (opt == OPT_MAX_MESSAGE) cfg.max_message = n;
            else if (opt == OPT_MAX_HEADER) cfg.max_header = n;
            else if (opt == OPT_MAX_BODY) cfg.max_body = n;
            else if (opt == OPT_HIGH_WATER) cfg.write_high_water = n;
            else if (opt == OPT_CLOSE_TIMEOUT) cfg.close_timeout_ms = (unsigned)n;
            else if (opt == OPT_HANDSHAKE_TIMEOUT) cfg.handshake_timeout_ms = (unsigned)n;
            else if (opt == OPT_MAX_CONNECTIONS) cfg.max_connections = n;
            else if (opt == OPT_MAX_BACKPRESSURE) cfg.max_backpressure = n;
            else cfg.shutdown_timeout_ms = (unsigned)n;
            break;
        case OPT_LOG_LEVEL:
            cfg.log_level = log_level_parse(optarg);
            if (cfg.log_level < 0) {
                fprintf(stderr, "luaws: --log-level must be debug, info, warn or error\n");
                return EXIT_USAGE;
            }
            break;
        case OPT_DEFLATE:
            if (strcmp(optarg, "shared") == 0) cfg.deflate = DEFLATE_SHARED;
            else if (strcmp(optarg, "dedicated") == 0) cfg.deflate = DEFLATE_DEDICATED;
            else if (strcmp(optarg, "off") == 0) cfg.deflate = DEFLATE_OFF;
            else {
                fprintf(stderr, "luaws: --deflate must be shared, dedicated or off\n");
                return EXIT_USAGE;
            }
            break;
        case OPT_DEFLATE_LEVEL:
            if (!parse_size(optarg, &n) || n < 1 || n > 9) {
                fprintf(stderr, "luaws: --deflate-level must be 1-9\n");
                return EXIT_USAGE;
            }
            cfg.deflate_level = (int)n;
            break;
        case OPT_DEFLATE_MIN:
            if (!parse_size(optarg, &n)) {
                fprintf(stderr, "luaws: --deflate-min needs a number of bytes\n");
                return EXIT_USAGE;
            }
            cfg.deflate_min = n;
            break;
        case OPT_PING_INTERVAL:
        case OPT_SCRIPT_TIMEOUT:
        case OPT_SCRIPT_MEMORY:
            if (!parse_size(optarg, &n)) {
                fprintf(stderr, "luaws: %s needs a number (0 turns it off), not '%s'\n", argv[optind - 2], optarg);
                return EXIT_USAGE;
            }
            if (opt == OPT_PING_INTERVAL) cfg.ping_interval_ms = (unsigned)n;
            else if (opt == OPT_SCRIPT_TIMEOUT) cfg.script_timeout_ms = (unsigned)n;
            else cfg.script_memory = n;
            break;
        case OPT_ORIGIN:
            if (cfg.norigins == MAX_ORIGINS) {
                fprintf(stderr, "luaws: at most %d --origin values\n", MAX_ORIGINS);
                return EXIT_USAGE;
            }
            origins[cfg.norigins++] = optarg;
            cfg.origins = origins;
            break;
        case OPT_LISTEN:
            if (cfg.nlistens == MAX_LISTENERS) {
                fprintf(stderr, "luaws: at most %d --listen\n", MAX_LISTENERS);
                return EXIT_USAGE;
            }
            if (!parse_listen(optarg, &cfg.listens[cfg.nlistens])) {
                fprintf(stderr, "luaws: --listen wants ws://HOST:PORT or wss://HOST:PORT, not '%s'\n", optarg);
                return EXIT_USAGE;
            }
            cfg.nlistens++;
            break;
        case OPT_LOG_FORMAT:
            if (strcmp(optarg, "json") != 0 && strcmp(optarg, "text") != 0) {
                fprintf(stderr, "luaws: --log-format must be text or json\n");
                return EXIT_USAGE;
            }
            log_set_json(strcmp(optarg, "json") == 0);
            break;
        case OPT_CONSOLE: cfg.console = true; break;
        case OPT_METRICS: cfg.metrics = true; break;
        case OPT_STATIC: cfg.static_dir = optarg; break;
        case OPT_REDIS: cfg.redis_url = optarg; break;
        case OPT_TLS_CERT: cfg.tls_cert = optarg; break;
        case OPT_TLS_KEY: cfg.tls_key = optarg; break;
        case OPT_TLS_CIPHERS: cfg.tls_ciphers = optarg; break;
        case OPT_NO_WATCH: watch = false; break;
        case OPT_WORKERS:
            if (!parse_size(optarg, &n) || n < 1 || n > 256) {
                fprintf(stderr, "luaws: --workers must be 1-256\n");
                return EXIT_USAGE;
            }
            workers = (int)n;
            break;
        case OPT_CHECK: check = true; break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'v': printf("luaws %s (%s, libuv %s)\n", LUAWS_VERSION, LUA_RELEASE, uv_version_string()); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        if (client) fprintf(stderr, "usage: luaws client [options] ws://HOST:PORT/PATH\n");
        else fprintf(stderr, optind == argc ? "luaws: no script given\n" : "luaws: one script only\n");
        if (!client) usage(stderr);
        return EXIT_USAGE;
    }
    cfg.script = argv[optind];
    static char client_script[PATH_MAX];
    if (client) {
        if (!find_client_script(client_script, sizeof client_script)) {
            fprintf(stderr, "luaws: cannot find luaws/client.lua beside the binary\n");
            return EXIT_RUNTIME;
        }
        setenv("LUAWS_CLIENT_URL", cfg.script, 1);
        cfg.script = client_script;
        workers = 1;
        watch = false;
    } else if (cfg.nlistens == 0) {
        listen_spec *l = &cfg.listens[cfg.nlistens++];
        snprintf(l->host, sizeof l->host, "%s", cfg.host);
        l->port = cfg.port;
        l->tls = cfg.tls_cert != NULL;
    }
    bool any_tls = false;
    for (int i = 0; i < cfg.nlistens; i++) any_tls |= cfg.listens[i].tls;
    if (any_tls && (!cfg.tls_cert || !cfg.tls_key)) {
        fprintf(stderr, "luaws: wss:// needs --tls-cert FILE and --tls-key FILE\n");
        return EXIT_USAGE;
    }
    /* One TLS context, made before forking: every worker then shares its
     * session ticket keys, so a ticket resumes on any worker. */
    tls_server *tls = NULL;
    if (any_tls && !check) {
        char terr[512];
        tls = tls_server_new(cfg.tls_cert, cfg.tls_key, cfg.tls_ciphers, terr, sizeof terr);
        if (!tls) {
            fprintf(stderr, "luaws: TLS: %s\n", terr);
            return EXIT_RUNTIME;
        }
        for (int i = 0; i < cfg.nlistens; i++)
            if (cfg.listens[i].tls) cfg.listens[i].tls_ctx = tls;
    }
    if (!cfg.max_connections) {
        struct rlimit rl;
        cfg.max_connections = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 128 ? rl.rlim_cur - 64 : 64;
    }
    if (cfg.max_backpressure < cfg.write_high_water) cfg.max_backpressure = cfg.write_high_water;
    log_set_level((enum log_level)cfg.log_level);
    if (access(cfg.script, R_OK) != 0) {
        fprintf(stderr, "luaws: cannot read script %s: %s\n", cfg.script, strerror(errno));
        return EXIT_RUNTIME;
    }
    /* A peer that vanishes must not kill us on write. */
    signal(SIGPIPE, SIG_IGN);

    /* Load once here, so that a broken script fails before anything forks
     * or binds, with file:line. */
    char *err = NULL;
    static server probe;
    probe.cfg = &cfg;
    void *lua = lua_host_ops.create(&probe, cfg.script, &err);
    if (!lua) {
        fprintf(stderr, "luaws: cannot load %s: %s\n", cfg.script, err);
        free(err);
        return EXIT_RUNTIME;
    }
    lua_host_ops.destroy(lua);
    if (check) {
        printf("luaws: %s OK\n", cfg.script);
        return EXIT_OK;
    }
    if (workers > 1) {
        int code = workers_run(&cfg, &lua_host_ops, workers, watch);
        tls_server_free(tls);
        return code;
    }
    char msg[256];
    int fds[MAX_LISTENERS];
    for (int i = 0; i < cfg.nlistens; i++) {
        listen_spec *l = &cfg.listens[i];
        fds[i] = listen_socket(l->host, l->port, false, true, &l->port, msg, sizeof msg);
        if (fds[i] < 0) {
            fprintf(stderr, "luaws: %s\n", msg);
            while (i > 0) close(fds[--i]);
            return EXIT_RUNTIME;
        }
    }
    int code = server_run(&cfg, &lua_host_ops, fds, 0, 1, watch, -1);
    tls_server_free(tls);
    if (code == 0) log_info("luaws stopped");
    return code;
}
