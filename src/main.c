/* main.c — command line, startup and exit codes. */
#include "server.h"
#include "lua_api.h"
#include "log.h"
#include "reload.h"
#include "workers.h"
#include "rundir.h"
#include "forwarded.h"
#include "version.h"
#include "xalloc.h"
#include <lua.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stddef.h>
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
        "  --max-connections N    for the machine (all workers): refuse more with 503\n"
        "                         (default: open-file limit - 64)\n"
        "  --max-conns-per-ip N   connections from one client address (all workers); more\n"
        "                         get 503 with Retry-After (default 0: no limit)\n"
        "  --rate MSGS[:BURST]    messages per second one socket may send (token bucket,\n"
        "                         BURST default MSGS); socket:set_rate changes it (default: none)\n"
        "  --rate-action ACTION   at the rate limit: pause (stop reading until allowed) or\n"
        "                         close (1008) (default pause)\n"
        "  --max-backpressure BYTES  bytes queued for one slow reader; beyond, the socket is\n"
        "                         closed with 1008 (default 67108864)\n"
        "  --max-buffered-total BYTES  per worker: memory held in incomplete messages (being\n"
        "                         assembled or inflated); beyond, the socket holding the most is\n"
        "                         closed with 1009 (default 268435456)\n"
        "  --origin ORIGIN        allow WebSocket upgrades only from this Origin (repeatable;\n"
        "                         others get 403; requests without Origin pass)\n"
        "  --script-timeout MS    an event or handler running longer is stopped (1011) (default 2000;\n"
        "                         0: no limit)\n"
        "  --script-memory BYTES  memory the Lua state may use (default 536870912; 0: no limit)\n"
        "  --shutdown-timeout MS  on SIGTERM, wait this long for sockets to close (default 10000)\n"
        "  --health PATH          GET/HEAD PATH answers 200 while serving, 503 while draining\n"
        "                         or over --max-connections (for load balancers; default off)\n"
        "  --drain-delay MS       on SIGTERM keep serving this long, /health answering 503,\n"
        "                         before closing (default 5000 with --health, else 0)\n"
        "  --proxy-protocol VER   every listener expects a PROXY protocol header (v1, v2 or\n"
        "                         any) first; per listener: --listen ws://H:P?proxy=v2\n"
        "  --trust-proxy CIDR     honour X-Forwarded-For / Forwarded from these peers only\n"
        "                         (repeatable); the client is the right-most untrusted address\n"
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
        "  --strict               unknown keys in listener and response tables (typos such\n"
        "                         as on_mesage) are errors, not warnings\n"
        "  --metrics              GET /metrics answers Prometheus text (the machine's)\n"
        "  --metrics-token TOKEN  /metrics answers only requests with the header\n"
        "                         Authorization: Bearer TOKEN (others get 401); implies --metrics\n"
        "  --static DIR           plain GET/HEAD requests are served from files in DIR first\n"
        "                         (not hidden files nor links out of DIR, unless:)\n"
        "  --static-dotfiles      --static also serves hidden files (.git, .env, ...)\n"
        "  --static-symlinks      --static also follows links that lead out of DIR\n"
        "  --redis URL            redis://HOST:PORT[/DB]: topics reach every worker and node\n"
        "  --store PATH           keep luaws.store's data in this file across restarts (default:\n"
        "                         a file in the private run directory, removed at exit)\n"
        "  --store redis://HOST:PORT[/DB]  luaws.store in Redis, shared across machines\n"
        "  --store-size BYTES     the store's size limit (LMDB map size) (default 67108864)\n"
        "  --store-timeout MS     with --store redis://: each command's timeout (default 1000)\n"
        "\n"
        "  luaws client URL       interactive client: lines typed go as text messages,\n"
        "                         received messages are printed; /ping [data],\n"
        "                         /close [code [reason]], /binary HEX; works in a pipe\n"
        "  luaws test [PATH...]   run busted specs (spec/ by default) in-process with the\n"
        "                         luaws.test module: no network, a clock the spec drives;\n"
        "                         busted's options (--filter, --pattern, -o) pass through\n"
        "  -h, --help             show this help\n"
        "  -v, --version          show the version\n");
}

/* ws://HOST:PORT or wss://HOST:PORT; an IPv6 host in brackets. */
/* "v1", "v2" or "any" (either): PROXY protocol version bits; 0 if none. */
static unsigned parse_proxy_versions(const char *s)
{
    if (!strcmp(s, "v1")) return PROXY_V1;
    if (!strcmp(s, "v2")) return PROXY_V2;
    if (!strcmp(s, "any")) return PROXY_V1 | PROXY_V2;
    return 0;
}

/* ws[s]://HOST:PORT[?proxy=v1|v2|any] */
static bool parse_listen(const char *url, listen_spec *out)
{
    const char *p;
    char buf[256];
    const char *q = strchr(url, '?');
    if (q) {
        if (strncmp(q, "?proxy=", 7) != 0 || !(out->proxy = parse_proxy_versions(q + 7)))
            return false;
        if ((size_t)(q - url) >= sizeof buf) return false;
        memcpy(buf, url, (size_t)(q - url));
        buf[q - url] = '\0';
        url = buf;
    }
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

/* ---- options: one table ---- */

/* What luaws was asked to do, beside the config proper. */
typedef struct cli {
    config cfg;
    bool watch, check, client;
    int workers;
    const char *origins[MAX_ORIGINS];   /* point into argv */
} cli;

enum opt_kind {
    OPT_STRING,      /* a const char * field */
    OPT_POSITIVE,    /* a size_t or unsigned field, > 0 */
    OPT_OFF_ZERO,    /* a size_t or unsigned field, 0 turns it off */
    OPT_SET,         /* a bool field set to true */
    OPT_CUSTOM,      /* parsed by fn */
};

typedef struct optdef {
    const char *name;
    enum opt_kind kind;
    size_t offset, size;                 /* the field in config */
    bool (*fn)(cli *c, const char *arg); /* OPT_CUSTOM; false: usage error (message printed) */
} optdef;

#define FIELD(f) offsetof(config, f), sizeof(((config *)0)->f)

static bool usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "luaws: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return false;
}

static bool opt_port(cli *c, const char *arg)
{
    size_t n;
    if (!parse_size(arg, &n) || n > 65535) return usage_error("--port must be 0-65535, not '%s'", arg);
    c->cfg.port = (int)n;
    return true;
}

static bool opt_log_level(cli *c, const char *arg)
{
    c->cfg.log_level = log_level_parse(arg);
    return c->cfg.log_level >= 0 || usage_error("--log-level must be debug, info, warn or error%s", "");
}

static bool opt_deflate(cli *c, const char *arg)
{
    if (strcmp(arg, "shared") == 0) c->cfg.deflate = DEFLATE_SHARED;
    else if (strcmp(arg, "dedicated") == 0) c->cfg.deflate = DEFLATE_DEDICATED;
    else if (strcmp(arg, "off") == 0) c->cfg.deflate = DEFLATE_OFF;
    else return usage_error("--deflate must be shared, dedicated or off%s", "");
    return true;
}

static bool opt_deflate_level(cli *c, const char *arg)
{
    size_t n;
    if (!parse_size(arg, &n) || n < 1 || n > 9) return usage_error("--deflate-level must be 1-9%s", "");
    c->cfg.deflate_level = (int)n;
    return true;
}

static bool opt_deflate_min(cli *c, const char *arg)
{
    if (!parse_size(arg, &c->cfg.deflate_min)) return usage_error("--deflate-min needs a number of bytes%s", "");
    return true;
}

static bool opt_origin(cli *c, const char *arg)
{
    if (c->cfg.norigins == MAX_ORIGINS) {
        fprintf(stderr, "luaws: at most %d --origin values\n", MAX_ORIGINS);
        return false;
    }
    c->origins[c->cfg.norigins++] = arg;
    c->cfg.origins = c->origins;
    return true;
}

static bool opt_listen(cli *c, const char *arg)
{
    if (c->cfg.nlistens == MAX_LISTENERS) {
        fprintf(stderr, "luaws: at most %d --listen\n", MAX_LISTENERS);
        return false;
    }
    if (!parse_listen(arg, &c->cfg.listens[c->cfg.nlistens]))
        return usage_error("--listen wants ws://HOST:PORT or wss://HOST:PORT (optionally ?proxy=v1|v2|any), not '%s'", arg);
    c->cfg.nlistens++;
    return true;
}

static bool opt_proxy_protocol(cli *c, const char *arg)
{
    if (!(c->cfg.proxy_protocol = parse_proxy_versions(arg)))
        return usage_error("--proxy-protocol must be v1, v2 or any, not '%s'", arg);
    return true;
}

/* --rate MSGS/S[:BURST]: a token bucket per socket; BURST defaults to MSGS/S. */
static bool opt_rate(cli *c, const char *arg)
{
    char *end;
    double r = strtod(arg, &end), burst = r;
    if (*end == ':') burst = strtod(end + 1, &end);
    if (*end || !(r > 0) || !(burst >= 1) || r > 1e9 || burst > 1e9)
        return usage_error("--rate wants MSGS_PER_SECOND[:BURST] (> 0, burst >= 1), not '%s'", arg);
    c->cfg.rate = r;
    c->cfg.rate_burst = burst;
    return true;
}

static bool opt_rate_action(cli *c, const char *arg)
{
    if (strcmp(arg, "pause") && strcmp(arg, "close"))
        return usage_error("--rate-action must be pause or close, not '%s'", arg);
    c->cfg.rate_close = strcmp(arg, "close") == 0;
    return true;
}

static bool opt_trust_proxy(cli *c, const char *arg)
{
    if (!c->cfg.trusted_proxies) c->cfg.trusted_proxies = cidr_list_new();
    const char *why = "bad address";
    if (!cidr_list_add(c->cfg.trusted_proxies, arg, &why)) {
        fprintf(stderr, "luaws: --trust-proxy %s: %s (want an address or a CIDR range: 10.0.0.0/8, ::1)\n", arg, why);
        return false;
    }
    return true;
}

static bool opt_health(cli *c, const char *arg)
{
    if (arg[0] != '/') return usage_error("--health wants a path starting with /, not '%s'", arg);
    c->cfg.health_path = arg;
    return true;
}

static bool opt_log_format(cli *c, const char *arg)
{
    if (strcmp(arg, "json") != 0 && strcmp(arg, "text") != 0)
        return usage_error("--log-format must be text or json%s", "");
    log_set_json(strcmp(arg, "json") == 0);
    return true;
}

static bool opt_workers(cli *c, const char *arg)
{
    size_t n;
    if (!parse_size(arg, &n) || n < 1 || n > 256) return usage_error("--workers must be 1-256%s", "");
    c->workers = (int)n;
    return true;
}

static bool opt_no_watch(cli *c, const char *arg)
{
    c->watch = false;
    return true;
}

static bool opt_check(cli *c, const char *arg)
{
    c->check = true;
    return true;
}

/* Every option: its name, how its argument is read, where it goes. The
 * help text is usage()'s. */
static const optdef options[] = {
    {"host", OPT_STRING, FIELD(host), NULL},
    {"port", OPT_CUSTOM, 0, 0, opt_port},
    {"listen", OPT_CUSTOM, 0, 0, opt_listen},
    {"tls-cert", OPT_STRING, FIELD(tls_cert), NULL},
    {"tls-key", OPT_STRING, FIELD(tls_key), NULL},
    {"tls-ciphers", OPT_STRING, FIELD(tls_ciphers), NULL},
    {"max-message", OPT_POSITIVE, FIELD(max_message), NULL},
    {"max-header", OPT_POSITIVE, FIELD(max_header), NULL},
    {"max-body", OPT_POSITIVE, FIELD(max_body), NULL},
    {"high-water", OPT_POSITIVE, FIELD(write_high_water), NULL},
    {"close-timeout", OPT_POSITIVE, FIELD(close_timeout_ms), NULL},
    {"handshake-timeout", OPT_POSITIVE, FIELD(handshake_timeout_ms), NULL},
    {"ping-interval", OPT_OFF_ZERO, FIELD(ping_interval_ms), NULL},
    {"max-connections", OPT_POSITIVE, FIELD(max_connections), NULL},
    {"max-backpressure", OPT_POSITIVE, FIELD(max_backpressure), NULL},
    {"max-buffered-total", OPT_POSITIVE, FIELD(max_buffered_total), NULL},
    {"origin", OPT_CUSTOM, 0, 0, opt_origin},
    {"script-timeout", OPT_OFF_ZERO, FIELD(script_timeout_ms), NULL},
    {"script-memory", OPT_OFF_ZERO, FIELD(script_memory), NULL},
    {"shutdown-timeout", OPT_POSITIVE, FIELD(shutdown_timeout_ms), NULL},
    {"deflate", OPT_CUSTOM, 0, 0, opt_deflate},
    {"deflate-level", OPT_CUSTOM, 0, 0, opt_deflate_level},
    {"deflate-min", OPT_CUSTOM, 0, 0, opt_deflate_min},
    {"workers", OPT_CUSTOM, 0, 0, opt_workers},
    {"no-watch", OPT_CUSTOM, 0, 0, opt_no_watch},
    {"check", OPT_CUSTOM, 0, 0, opt_check},
    {"log-level", OPT_CUSTOM, 0, 0, opt_log_level},
    {"log-format", OPT_CUSTOM, 0, 0, opt_log_format},
    {"console", OPT_SET, FIELD(console), NULL},
    {"strict", OPT_SET, FIELD(strict), NULL},
    {"static-dotfiles", OPT_SET, FIELD(static_dotfiles), NULL},
    {"metrics-token", OPT_STRING, FIELD(metrics_token), NULL},
    {"static-symlinks", OPT_SET, FIELD(static_symlinks), NULL},
    {"metrics", OPT_SET, FIELD(metrics), NULL},
    {"static", OPT_STRING, FIELD(static_dir), NULL},
    {"redis", OPT_STRING, FIELD(redis_url), NULL},
    {"proxy-protocol", OPT_CUSTOM, 0, 0, opt_proxy_protocol},
    {"trust-proxy", OPT_CUSTOM, 0, 0, opt_trust_proxy},
    {"health", OPT_CUSTOM, 0, 0, opt_health},
    {"drain-delay", OPT_OFF_ZERO, FIELD(drain_delay_ms), NULL},
    {"max-conns-per-ip", OPT_OFF_ZERO, FIELD(max_conns_per_ip), NULL},
    {"rate", OPT_CUSTOM, 0, 0, opt_rate},
    {"rate-action", OPT_CUSTOM, 0, 0, opt_rate_action},
    {"store", OPT_STRING, FIELD(store_path), NULL},
    {"store-size", OPT_POSITIVE, FIELD(store_size), NULL},
    {"store-timeout", OPT_POSITIVE, FIELD(store_timeout_ms), NULL},
};
#define NOPTIONS (sizeof options / sizeof *options)

static bool takes_argument(const optdef *d)
{
    return d->kind != OPT_SET && d->fn != opt_no_watch && d->fn != opt_check;
}

/* Stores a number in a size_t or unsigned field. */
static void set_number(config *cfg, const optdef *d, size_t n)
{
    char *field = (char *)cfg + d->offset;
    if (d->size == sizeof(size_t)) *(size_t *)field = n;
    else *(unsigned *)field = (unsigned)n;
}

static bool apply_option(cli *c, const optdef *d, const char *arg)
{
    char *field = (char *)&c->cfg + d->offset;
    size_t n;
    switch (d->kind) {
    case OPT_STRING: *(const char **)field = arg; return true;
    case OPT_SET: *(bool *)field = true; return true;
    case OPT_POSITIVE:
        if (!parse_size(arg, &n) || n == 0) {
            fprintf(stderr, "luaws: --%s needs a positive number, not '%s'\n", d->name, arg);
            return false;
        }
        set_number(&c->cfg, d, n);
        return true;
    case OPT_OFF_ZERO:
        if (!parse_size(arg, &n)) {
            fprintf(stderr, "luaws: --%s needs a number (0 turns it off), not '%s'\n", d->name, arg);
            return false;
        }
        set_number(&c->cfg, d, n);
        return true;
    case OPT_CUSTOM: return d->fn(c, arg);
    }
    return false;
}

enum parse_result { PARSE_OK, PARSE_EXIT_OK, PARSE_USAGE };

/* Step 1: the command line into c; the script path in c->cfg.script. */
static enum parse_result parse_options(cli *c, int argc, char **argv)
{
    struct option longopts[NOPTIONS + 3];
    for (size_t i = 0; i < NOPTIONS; i++)
        longopts[i] = (struct option){options[i].name, takes_argument(&options[i]) ? required_argument : no_argument,
                                      NULL, 256 + (int)i};
    longopts[NOPTIONS] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[NOPTIONS + 1] = (struct option){"version", no_argument, NULL, 'v'};
    longopts[NOPTIONS + 2] = (struct option){NULL, 0, NULL, 0};
    int opt;
    while ((opt = getopt_long(argc, argv, "hv", longopts, NULL)) != -1) {
        if (opt >= 256 && opt < 256 + (int)NOPTIONS) {
            if (!apply_option(c, &options[opt - 256], optarg)) return PARSE_USAGE;
        } else if (opt == 'h') {
            usage(stdout);
            return PARSE_EXIT_OK;
        } else if (opt == 'v') {
            printf("luaws %s (%s, libuv %s)\n", LUAWS_VERSION, LUA_RELEASE, uv_version_string());
            return PARSE_EXIT_OK;
        } else {
            usage(stderr);
            return PARSE_USAGE;
        }
    }
    if (optind != argc - 1) {
        if (c->client) fprintf(stderr, "usage: luaws client [options] ws://HOST:PORT/PATH (luaws client --help)\n");
        else fprintf(stderr, optind == argc ? "luaws: no script given\n" : "luaws: one script only\n");
        if (!c->client) usage(stderr);
        return PARSE_USAGE;
    }
    c->cfg.script = argv[optind];
    return PARSE_OK;
}

/* Step 2: `luaws client URL` runs lua/luaws/client.lua; otherwise --host and
 * --port make the one listener when no --listen was given. */
static int resolve_target(cli *c)
{
    static char client_script[PATH_MAX];
    config *cfg = &c->cfg;
    if (c->client) {
        if (!find_client_script(client_script, sizeof client_script)) {
            fprintf(stderr, "luaws: cannot find luaws/client.lua beside the binary\n");
            return EXIT_RUNTIME;
        }
        setenv("LUAWS_CLIENT_URL", cfg->script, 1);
        cfg->script = client_script;
        c->workers = 1;
        c->watch = false;
    } else if (cfg->nlistens == 0) {
        listen_spec *l = &cfg->listens[cfg->nlistens++];
        snprintf(l->host, sizeof l->host, "%s", cfg->host);
        l->port = cfg->port;
        l->tls = cfg->tls_cert != NULL;
    }
    return EXIT_OK;
}

/* Step 3: one TLS context, made before forking, so that every worker shares
 * its session ticket keys and a ticket resumes on any worker. */
static int make_tls(cli *c, tls_server **tls)
{
    config *cfg = &c->cfg;
    bool any_tls = false;
    for (int i = 0; i < cfg->nlistens; i++) any_tls |= cfg->listens[i].tls;
    if (any_tls && (!cfg->tls_cert || !cfg->tls_key)) {
        fprintf(stderr, "luaws: wss:// needs --tls-cert FILE and --tls-key FILE\n");
        return EXIT_USAGE;
    }
    if (!any_tls || c->check) return EXIT_OK;
    char terr[512];
    *tls = tls_server_new(cfg->tls_cert, cfg->tls_key, cfg->tls_ciphers, terr, sizeof terr);
    if (!*tls) {
        fprintf(stderr, "luaws: TLS: %s\n", terr);
        return EXIT_RUNTIME;
    }
    for (int i = 0; i < cfg->nlistens; i++)
        if (cfg->listens[i].tls) cfg->listens[i].tls_ctx = *tls;
    return EXIT_OK;
}

/* Step 4: defaults that depend on the machine or on other options. */
static void settle_limits(config *cfg)
{
    if (!cfg->max_connections) {
        struct rlimit rl;
        cfg->max_connections = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 128 ? rl.rlim_cur - 64 : 64;
    }
    if (cfg->max_backpressure < cfg->write_high_water) cfg->max_backpressure = cfg->write_high_water;
    if (cfg->metrics_token) cfg->metrics = true;
    /* With a health check, give the balancer time to see 503 first. */
    if (cfg->drain_delay_ms == DRAIN_DELAY_UNSET) cfg->drain_delay_ms = cfg->health_path ? 5000 : 0;
    for (int i = 0; i < cfg->nlistens; i++)
        if (!cfg->listens[i].proxy) cfg->listens[i].proxy = cfg->proxy_protocol;
    log_set_level((enum log_level)cfg->log_level);
}

/* Step 5: a broken script fails before anything forks or binds, with
 * file:line. To serve, the script is only compiled here: its top level
 * (a load-time luaws.connect, say) runs once per worker and never in this
 * process, and a worker that cannot load it stops the start (workers.c).
 * --check loads it whole, as it asks. */
static int check_script(const config *cfg, bool full)
{
    if (access(cfg->script, R_OK) != 0) {
        fprintf(stderr, "luaws: cannot read script %s: %s\n", cfg->script, strerror(errno));
        return EXIT_RUNTIME;
    }
    char *err = NULL;
    if (!full) {
        if (lua_compile_check(cfg->script, &err)) return EXIT_OK;
        fprintf(stderr, "luaws: cannot load %s: %s\n", cfg->script, err);
        free(err);
        return EXIT_RUNTIME;
    }
    static server probe;
    probe.cfg = cfg;
    void *lua = lua_host_ops.create(&probe, cfg->script, &err);
    if (!lua) {
        fprintf(stderr, "luaws: cannot load %s: %s\n", cfg->script, err);
        free(err);
        return EXIT_RUNTIME;
    }
    lua_host_ops.destroy(lua);
    return EXIT_OK;
}

static int serve_here(cli *c);

/* Step 6: serve, in this process or in workers. */
static int serve(cli *c)
{
    config *cfg = &c->cfg;
    /* Where workers keep the last code that loaded (for a replacement to
     * start with) and the default luaws.store: see rundir.h. */
    rundir_create();
    int code = c->workers > 1 ? workers_run(cfg, &lua_host_ops, c->workers, c->watch) : serve_here(c);
    rundir_remove();
    return code;
}

/* One worker: this process serves. */
static int serve_here(cli *c)
{
    config *cfg = &c->cfg;
    char msg[256];
    int fds[MAX_LISTENERS];
    for (int i = 0; i < cfg->nlistens; i++) {
        listen_spec *l = &cfg->listens[i];
        fds[i] = listen_socket(l->host, l->port, false, true, &l->port, msg, sizeof msg);
        if (fds[i] < 0) {
            fprintf(stderr, "luaws: %s\n", msg);
            while (i > 0) close(fds[--i]);
            return EXIT_RUNTIME;
        }
    }
    int code = server_run(cfg, &lua_host_ops, fds, 0, 1, c->watch, -1);
    if (code == 0) log_info("luaws stopped");
    return code;
}

static void client_usage(FILE *out)
{
    fprintf(out,
        "usage: luaws client [options] ws://HOST[:PORT]/PATH (or wss://)\n"
        "\n"
        "An interactive WebSocket client: each line read is sent as a text message,\n"
        "each message received is printed on a line (binary ones as hex). Lines\n"
        "starting with / are commands: /ping [data], /close [code [reason]],\n"
        "/binary HEX; //text sends /text.\n"
        "\n"
        "options:\n"
        "  -s, --subprotocol NAME  offer this subprotocol (repeatable)\n"
        "  -H, --header 'N: V'     send this header with the upgrade request (repeatable)\n"
        "  -x, --execute MESSAGE   send MESSAGE once connected (repeatable), then close\n"
        "                          after --wait seconds, or after --count messages\n"
        "  -w, --wait SECONDS      after -x, or at the end of input: wait this long for\n"
        "                          messages before closing (default 2 with -x, else 0)\n"
        "  -n, --count N           close once N messages have been received\n"
        "  -b, --binary            lines read are hex digits, sent as binary messages\n"
        "  -P, --show-ping-pong    show pings and pongs received\n"
        "      --no-color          no colors in the notes on standard error\n"
        "  -h, --help              show this help\n"
        "  server options such as --max-message, --deflate off and --log-level apply too\n"
        "\n"
        "exit status: 0 after a normal close (1000 or 1001), 1 after any other close code\n"
        "(the server's 1011, say), 2 for a usage error, a refused handshake or a\n"
        "connection that could not be made.\n");
}

/* `luaws client`: its own options go to lua/luaws/client.lua, one per line
 * ("s\tchat.v2") in LUAWS_CLIENT_OPTS; the rest are the server's options.
 * Returns the new argc, or -1 (usage printed; *code set). */
static int take_client_options(int argc, char **argv, int *code)
{
    static const struct {
        const char *s, *l;
        bool arg;
    } opts[] = {
        {"-s", "--subprotocol", true}, {"-H", "--header", true}, {"-x", "--execute", true},
        {"-w", "--wait", true}, {"-n", "--count", true}, {"-b", "--binary", false},
        {"-P", "--show-ping-pong", false}, {NULL, "--no-color", false},
    };
    size_t cap = 1, len = 0;
    for (int i = 1; i < argc; i++) cap += strlen(argv[i]) + 4;
    char *buf = xmalloc(cap);
    buf[0] = '\0';
    int out = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            client_usage(stdout);
            free(buf);
            *code = EXIT_OK;
            return -1;
        }
        size_t k, n = sizeof opts / sizeof opts[0];
        const char *value = NULL;
        for (k = 0; k < n; k++) {
            size_t ll = strlen(opts[k].l);
            if ((opts[k].s && strcmp(a, opts[k].s) == 0) || strcmp(a, opts[k].l) == 0) break;
            if (opts[k].arg && strncmp(a, opts[k].l, ll) == 0 && a[ll] == '=') {
                value = a + ll + 1;
                break;
            }
        }
        if (k == n) {
            argv[out++] = argv[i];
            continue;
        }
        if (opts[k].arg && !value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "luaws client: %s needs a value (see luaws client --help)\n", a);
                free(buf);
                *code = EXIT_USAGE;
                return -1;
            }
            value = argv[++i];
        }
        len += (size_t)sprintf(buf + len, "%s\t%s\n", opts[k].l + 2, value ? value : "");
    }
    setenv("LUAWS_CLIENT_OPTS", buf, 1);
    free(buf);
    argv[out] = NULL;
    return out;
}

/* luaws test: busted in the binary's own Lua state, on a server with no
 * listening socket and the spec's clock (lua/luaws/test.lua). Every
 * argument is busted's. LUAWS_TEST_LOG sets the log level (default error). */
static int run_tests(config *cfg, int argc, char **argv)
{
    const char *level = getenv("LUAWS_TEST_LOG");
    cfg->log_level = level && log_level_parse(level) >= 0 ? log_level_parse(level) : LOG_ERROR;
    cfg->script = "luaws test";
    settle_limits(cfg);
    signal(SIGPIPE, SIG_IGN);
    return server_test(cfg, &lua_host_ops, lua_test_main, argc, argv);
}

int main(int argc, char **argv)
{
    static cli c = {
        .cfg = {
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
            .max_buffered_total = 256u << 20,
            .log_level = LOG_INFO,
            .deflate = DEFLATE_SHARED,
            .deflate_level = 1,
            .deflate_min = 64,
            .store_size = 64u << 20,
            .drain_delay_ms = DRAIN_DELAY_UNSET,
        },
        .watch = true,
    };
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c.workers = ncpu > 0 ? (int)ncpu : 1;
    /* `luaws test [busted options] [PATH...]`: specs of a script, in process. */
    if (argc >= 2 && strcmp(argv[1], "test") == 0) return run_tests(&c.cfg, argc - 2, argv + 2);
    /* `luaws client URL`: the same binary as a command-line client. */
    if (argc >= 2 && strcmp(argv[1], "client") == 0) {
        c.client = true;
        argv++;
        argc--;
        c.cfg.log_level = LOG_ERROR;   /* the client says what went wrong itself */
        int code;
        if ((argc = take_client_options(argc, argv, &code)) < 0) return code;
    }
    switch (parse_options(&c, argc, argv)) {
    case PARSE_EXIT_OK: return EXIT_OK;
    case PARSE_USAGE: return EXIT_USAGE;
    case PARSE_OK: break;
    }
    tls_server *tls = NULL;
    int code = resolve_target(&c);
    if (code == EXIT_OK) code = make_tls(&c, &tls);
    if (code != EXIT_OK) return code;
    settle_limits(&c.cfg);
    /* A peer that vanishes must not kill us on write. */
    signal(SIGPIPE, SIG_IGN);
    code = check_script(&c.cfg, c.check);
    if (code == EXIT_OK && c.check) printf("luaws: %s OK\n", c.cfg.script);
    else if (code == EXIT_OK) code = serve(&c);
    tls_server_free(tls);
    return code;
}
