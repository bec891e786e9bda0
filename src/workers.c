/* workers.c — the parent of several workers: forks them, waits until each
 * serves, restarts the ones that die, and passes signals on.
 *
 * The parent never runs a libuv loop: it only waits for signals. It holds
 * the port (bound, never listening) so that --port 0 resolves once and
 * every worker binds the same number with SO_REUSEPORT, and the kernel
 * spreads connections over them.
 *
 * It is also the machine's topic broker (broker.h): every worker has a
 * socketpair to it, and it relays each publish to every worker in one
 * order. So it waits with poll() on those sockets and on a signalfd.
 *
 * Each worker has a slot in memory shared with all (server.h: worker_slot):
 * its counters and open connections, read by whichever worker answers
 * /metrics or checks --max-connections, and its heartbeat: a worker that has been in one Lua entry for longer than twice
 * --script-timeout plus a second is stuck in a C call the timeout cannot
 * interrupt (a pathological string pattern, say). It is killed and
 * replaced; the other workers go on serving. */
#include "workers.h"
#include "broker.h"
#include "log.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/prctl.h>
#include <poll.h>
#include <uv.h>

typedef struct worker {
    pid_t pid;
    time_t started;
    int quick_deaths;     /* deaths soon after start, in a row */
    time_t retry_at;      /* kept dying at start while others serve: try again then */
} worker;

static sigset_t handled_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    return set;
}

static worker_slot *slots;   /* one per worker, shared with them */
static uint32_t *ip_counts;  /* --max-conns-per-ip: a column per worker, shared */
static broker *topics;       /* the machine's topic broker */
static int sigfd = -1;

static pid_t spawn(const config *cfg, const host_ops *host, int index, int n, bool watch, int ready_fd)
{
    worker_slot *me = &slots[index];
    __atomic_store_n(&me->beat.busy_since_ms, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&me->connections, 0, __ATOMIC_RELAXED);
    /* A replaced worker's connections are gone: so are its counts. */
    if (ip_counts) memset(ip_counts + (size_t)index * IP_BUCKETS, 0, IP_BUCKETS * sizeof *ip_counts);
    int link = broker_attach(topics, index);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) {
        if (link >= 0) close(link);   /* the child's end */
        return pid;
    }
    /* child */
    /* Orphaned (the main process killed outright): drain and stop, as on
     * SIGTERM, rather than serve on alone. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);   /* it died before prctl */
    broker_free(topics);   /* the parent's ends: not ours */
    topics = NULL;
    close(sigfd);
    server_slots = slots;
    server_ip_counts = ip_counts;
    server_nslots = n;
    server_broker_fd = link;
    sigset_t set = handled_signals();
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    char tag[16];
    snprintf(tag, sizeof tag, "w%d", index + 1);
    log_set_tag(tag);
    char err[256];
    int bound, fds[MAX_LISTENERS];
    for (int i = 0; i < cfg->nlistens; i++) {
        fds[i] = listen_socket(cfg->listens[i].host, cfg->listens[i].port, true, true, &bound, err, sizeof err);
        if (fds[i] < 0) {
            log_error("%s", err);
            _exit(1);
        }
    }
    _exit(server_run(cfg, host, fds, index, n, watch, ready_fd));
}

static void describe_exit(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status)) snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
}

/* Kills the workers stuck in one Lua entry past stuck_ms (the SIGCHLD that
 * follows replaces them). */
static void check_beats(const config *cfg, worker *w, int n, uint64_t stuck_ms)
{
    uint64_t now = uv_hrtime() / 1000000u;
    for (int i = 0; i < n; i++) {
        worker_beat *beat = &slots[i].beat;
        uint64_t since = __atomic_load_n(&beat->busy_since_ms, __ATOMIC_ACQUIRE);
        if (!since || w[i].pid <= 0 || now < since || now - since < stuck_ms) continue;
        char what[sizeof beat->what];
        memcpy(what, beat->what, sizeof what);
        what[sizeof what - 1] = '\0';
        log_error("worker %d (pid %d) stuck for %llu ms in %s of %s: a C call --script-timeout cannot "
                  "interrupt (a pathological string pattern?); killing it",
                  i + 1, (int)w[i].pid, (unsigned long long)(now - since), what, cfg->script);
        __atomic_store_n(&beat->busy_since_ms, 0, __ATOMIC_RELEASE);
        kill(w[i].pid, SIGKILL);
    }
}

/* The main process's state while workers run. */
typedef struct herd {
    config *cfg;
    const host_ops *host;
    worker *w;
    int n;
    bool watch;
    int alive;            /* workers running, or due to be started again */
    bool stopping;
    int code;
} herd;

static void start_worker(herd *f, int i)
{
    f->w[i].pid = spawn(f->cfg, f->host, i, f->n, f->watch, -1);
    f->w[i].started = time(NULL);
}

/* Every 250 ms: stuck workers, and workers due to be started again. */
static void tick(herd *f, uint64_t stuck_ms)
{
    if (f->stopping) return;
    if (f->cfg->script_timeout_ms) check_beats(f->cfg, f->w, f->n, stuck_ms);
    for (int i = 0; i < f->n; i++) {
        worker *w = &f->w[i];
        if (w->pid || !w->retry_at || time(NULL) < w->retry_at) continue;
        log_info("starting worker %d again", i + 1);
        w->retry_at = 0;
        start_worker(f, i);
        f->alive++;
    }
}

/* Worker i exited: replaced, or given up on. */
static void reap(herd *f, int i, int status)
{
    worker *w = &f->w[i];
    pid_t pid = w->pid;
    w->pid = 0;
    broker_detach(topics, i);
    if (f->stopping) {
        f->alive--;
        return;
    }
    char how[96];
    describe_exit(status, how, sizeof how);
    log_error("worker %d (pid %d) %s; restarting it", i + 1, (int)pid, how);
    if (time(NULL) - w->started >= 2) {
        w->quick_deaths = 0;
        start_worker(f, i);
        return;
    }
    /* Dying at once, again and again: do not spin (the tick starts it
     * again; the loop goes on relaying topics meanwhile). */
    f->alive--;
    if (++w->quick_deaths < 5) {
        w->retry_at = time(NULL) + 1;
        return;
    }
    bool others = false;
    for (int j = 0; j < f->n; j++) others |= f->w[j].pid > 0;
    if (others) {
        /* Never stop healthy workers for one that cannot start. */
        log_error("worker %d keeps dying at start; the others go on serving; trying it again in 30 s", i + 1);
        w->quick_deaths = 0;
        w->retry_at = time(NULL) + 30;
        return;
    }
    log_error("worker %d keeps dying at start; giving up", i + 1);
    f->stopping = true;
    f->code = 1;
}

static void on_signal(herd *f, int sig)
{
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
        if (sig != SIGHUP) {
            if (!f->stopping) log_info("signal %d: stopping %d workers", sig, f->alive);
            f->stopping = true;
        }
        for (int i = 0; i < f->n; i++)
            if (f->w[i].pid > 0) kill(f->w[i].pid, sig);
        return;
    }
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        for (int i = 0; i < f->n; i++)
            if (f->w[i].pid == pid) {
                reap(f, i, status);
                break;
            }
}

int workers_run(config *cfg, const host_ops *host, int n, bool watch)
{
    char err[256];
    int hold[MAX_LISTENERS];
    for (int i = 0; i < cfg->nlistens; i++) {
        listen_spec *l = &cfg->listens[i];
        /* Without SO_REUSEPORT first: fails if anyone else holds the port. */
        int probe = listen_socket(l->host, l->port, false, false, &l->port, err, sizeof err);
        if (probe >= 0) {
            close(probe);
            hold[i] = listen_socket(l->host, l->port, true, false, &l->port, err, sizeof err);
        }
        if (probe < 0 || hold[i] < 0) {
            fprintf(stderr, "luaws: %s\n", err);
            while (i > 0) close(hold[--i]);
            return 1;
        }
    }

    sigset_t set = handled_signals();
    sigprocmask(SIG_BLOCK, &set, NULL);
    sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    slots = mmap(NULL, (size_t)n * sizeof *slots, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sigfd < 0 || slots == MAP_FAILED) {
        fprintf(stderr, "luaws: cannot set up workers: %s\n", strerror(errno));
        abort();
    }
    topics = broker_new(n);
    if (cfg->max_conns_per_ip) {
        ip_counts = mmap(NULL, (size_t)n * IP_BUCKETS * sizeof *ip_counts, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (ip_counts == MAP_FAILED) abort();
    }
    uint64_t stuck_ms = 2 * (uint64_t)cfg->script_timeout_ms + 1000;
    herd f = {.cfg = cfg, .host = host, .n = n, .watch = watch, .alive = n};
    f.w = calloc((size_t)n, sizeof *f.w);
    struct pollfd *pfds = calloc((size_t)n + 1, sizeof *pfds);
    if (!f.w || !pfds) abort();
    int ready[2];
    if (pipe(ready) < 0) abort();
    for (int i = 0; i < n; i++) {
        f.w[i].pid = spawn(cfg, host, i, n, watch, ready[1]);
        f.w[i].started = time(NULL);
    }
    close(ready[1]);
    /* Each worker writes one byte once it serves; EOF early means one
     * failed. Meanwhile what workers publish waits in their sockets. */
    int up = 0;
    char byte;
    while (up < n && read(ready[0], &byte, 1) == 1) up++;
    close(ready[0]);
    f.stopping = up < n;
    if (f.stopping) {
        log_error("a worker failed to start; stopping");
        f.code = 1;
        for (int i = 0; i < n; i++) kill(f.w[i].pid, SIGTERM);
    } else {
        log_startup(cfg, n);
    }

    uint64_t next_tick = uv_hrtime() / 1000000u + 250;
    while (f.alive > 0) {
        pfds[0] = (struct pollfd){.fd = sigfd, .events = POLLIN};
        int np = 1 + broker_pollfds(topics, pfds + 1);
        uint64_t now = uv_hrtime() / 1000000u;
        int r = poll(pfds, (nfds_t)np, now >= next_tick ? 0 : (int)(next_tick - now));
        if (r > 0) broker_service(topics, pfds + 1, np - 1);
        now = uv_hrtime() / 1000000u;
        if (now >= next_tick) {
            tick(&f, stuck_ms);
            next_tick = now + 250;
        }
        struct signalfd_siginfo si;
        while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) on_signal(&f, (int)si.ssi_signo);
    }
    for (int i = 0; i < cfg->nlistens; i++) close(hold[i]);
    free(f.w);
    free(pfds);
    broker_free(topics);
    topics = NULL;
    close(sigfd);
    sigfd = -1;
    munmap(slots, (size_t)n * sizeof *slots);
    slots = NULL;
    if (ip_counts) munmap(ip_counts, (size_t)n * IP_BUCKETS * sizeof *ip_counts);
    ip_counts = NULL;
    log_info("luaws stopped");
    return f.code;
}
