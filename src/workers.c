/* workers.c — the parent of several workers: forks them, waits until each
 * serves, restarts the ones that die, and passes signals on.
 *
 * The parent never runs a libuv loop: it only waits for signals. It holds
 * the port (bound, never listening) so that --port 0 resolves once and
 * every worker binds the same number with SO_REUSEPORT, and the kernel
 * spreads connections over them.
 *
 * It also watches each worker's heartbeat (server.h: worker_beat, in shared
 * memory): a worker that has been in one Lua entry for longer than twice
 * --script-timeout plus a second is stuck in a C call the timeout cannot
 * interrupt (a pathological string pattern, say). It is killed and
 * replaced; the other workers go on serving. */
#include "workers.h"
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

static worker_beat *beats;   /* one per worker, shared with them */

static pid_t spawn(const config *cfg, const host_ops *host, int index, int n, bool watch, int ready_fd)
{
    if (beats) __atomic_store_n(&beats[index].busy_since_ms, 0, __ATOMIC_RELEASE);
    pid_t pid = fork();
    if (pid != 0) return pid;
    /* child */
    server_worker_beat = beats ? &beats[index] : NULL;
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
        uint64_t since = __atomic_load_n(&beats[i].busy_since_ms, __ATOMIC_ACQUIRE);
        if (!since || w[i].pid <= 0 || now < since || now - since < stuck_ms) continue;
        char what[sizeof beats[i].what];
        memcpy(what, beats[i].what, sizeof what);
        what[sizeof what - 1] = '\0';
        log_error("worker %d (pid %d) stuck for %llu ms in %s of %s: a C call --script-timeout cannot "
                  "interrupt (a pathological string pattern?); killing it",
                  i + 1, (int)w[i].pid, (unsigned long long)(now - since), what, cfg->script);
        __atomic_store_n(&beats[i].busy_since_ms, 0, __ATOMIC_RELEASE);
        kill(w[i].pid, SIGKILL);
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
    if (cfg->script_timeout_ms) {
        beats = mmap(NULL, (size_t)n * sizeof *beats, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (beats == MAP_FAILED) beats = NULL;
    }
    uint64_t stuck_ms = 2 * (uint64_t)cfg->script_timeout_ms + 1000;
    worker *w = calloc((size_t)n, sizeof *w);
    if (!w) abort();
    int ready[2];
    if (pipe(ready) < 0) abort();
    for (int i = 0; i < n; i++) {
        w[i].pid = spawn(cfg, host, i, n, watch, ready[1]);
        w[i].started = time(NULL);
    }
    close(ready[1]);
    /* Each worker writes one byte once it serves; EOF early means one failed. */
    int up = 0;
    char byte;
    while (up < n && read(ready[0], &byte, 1) == 1) up++;
    close(ready[0]);
    int code = 0;
    bool stopping = up < n;
    if (stopping) {
        log_error("a worker failed to start; stopping");
        code = 1;
        for (int i = 0; i < n; i++) kill(w[i].pid, SIGTERM);
    } else {
        log_startup(cfg, n);
    }

    int alive = n;
    while (alive > 0) {
        siginfo_t info;
        struct timespec tick = {0, 250 * 1000 * 1000};
        int sig = sigtimedwait(&set, &info, &tick);
        if (sig < 0) {
            if (beats && !stopping) check_beats(cfg, w, n, stuck_ms);
            for (int i = 0; i < n && !stopping; i++) {
                if (w[i].pid || !w[i].retry_at || time(NULL) < w[i].retry_at) continue;
                log_info("starting worker %d again", i + 1);
                w[i].retry_at = 0;
                w[i].pid = spawn(cfg, host, i, n, watch, -1);
                w[i].started = time(NULL);
                alive++;
            }
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
            if (sig != SIGHUP) {
                if (!stopping) log_info("signal %d: stopping %d workers", sig, alive);
                stopping = true;
            }
            for (int i = 0; i < n; i++)
                if (w[i].pid > 0) kill(w[i].pid, sig);
            continue;
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (int i = 0; i < n; i++) {
                if (w[i].pid != pid) continue;
                w[i].pid = 0;
                char how[96];
                describe_exit(status, how, sizeof how);
                if (stopping) {
                    alive--;
                    break;
                }
                log_error("worker %d (pid %d) %s; restarting it", i + 1, (int)pid, how);
                if (time(NULL) - w[i].started < 2) {
                    /* Dying at once, again and again: do not spin. */
                    if (++w[i].quick_deaths >= 5) {
                        bool others = false;
                        for (int j = 0; j < n; j++) others |= w[j].pid > 0;
                        if (others) {
                            /* Never stop healthy workers for one that cannot start. */
                            log_error("worker %d keeps dying at start; the others go on serving; "
                                      "trying it again in 30 s", i + 1);
                            w[i].quick_deaths = 0;
                            w[i].retry_at = time(NULL) + 30;
                            alive--;   /* until it is started again */
                            break;
                        }
                        log_error("worker %d keeps dying at start; giving up", i + 1);
                        stopping = true;
                        code = 1;
                        alive--;
                        break;
                    }
                    sleep(1);
                } else {
                    w[i].quick_deaths = 0;
                }
                w[i].pid = spawn(cfg, host, i, n, watch, -1);
                w[i].started = time(NULL);
                break;
            }
        }
    }
    for (int i = 0; i < cfg->nlistens; i++) close(hold[i]);
    free(w);
    if (beats) munmap(beats, (size_t)n * sizeof *beats);
    beats = NULL;
    log_info("luaws stopped");
    return code;
}
