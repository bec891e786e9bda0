/* bench/loadtool.h — what the load generators share (bench/topics/subload.c,
 * bench/broadcast/bcastload.c): the clock, dying with a message, a guard
 * alarm, and CPU time from /proc: a process tree's (the server under test
 * and its workers), the whole machine's, our own. Header-only: each tool is
 * one .c file built by its run script; define LOADTOOL_NAME (a string
 * literal) before including it. */
#ifndef BENCH_LOADTOOL_H
#define BENCH_LOADTOOL_H

#ifndef LOADTOOL_NAME
#error "define LOADTOOL_NAME before including loadtool.h"
#endif

#include <ctype.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, LOADTOOL_NAME ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* SIGALRM: the run's guard timeout (async-signal-safe). */
static void on_alarm(int sig)
{
    (void)sig;
    static const char m[] = LOADTOOL_NAME ": guard timeout, giving up\n";
    ssize_t r = write(2, m, sizeof m - 1);
    (void)r;
    _exit(3);
}

/* pid's parent and CPU seconds (utime + stime); false if it is gone. */
static bool read_stat(int pid, int *ppid, double *cpu_s)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) return false;
    char st;
    unsigned long ut, stt;
    if (sscanf(p + 2, "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &st, ppid, &ut, &stt) != 4)
        return false;
    *cpu_s = (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
    return true;
}

/* CPU seconds of root and its descendants (luaws's or nginx's workers).
 * Not thread-safe (static tables): call it from one thread. */
static double tree_cpu(int root)
{
    enum { MAXP = 8192 };
    static int pids[MAXP], ppids[MAXP];
    static double cpu[MAXP];
    static bool in[MAXP];
    int np = 0;
    DIR *d = opendir("/proc");
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) && np < MAXP) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        int pid = atoi(e->d_name);
        if (read_stat(pid, &ppids[np], &cpu[np])) pids[np++] = pid;
    }
    closedir(d);
    /* descendants: repeat until no change (process trees are shallow) */
    for (int i = 0; i < np; i++) in[i] = pids[i] == root;
    for (bool changed = true; changed;) {
        changed = false;
        for (int i = 0; i < np; i++) {
            if (in[i]) continue;
            for (int j = 0; j < np; j++)
                if (in[j] && ppids[i] == pids[j]) { in[i] = changed = true; break; }
        }
    }
    double sum = 0;
    for (int i = 0; i < np; i++) if (in[i]) sum += cpu[i];
    return sum;
}

/* Busy CPU seconds of the whole machine (all cores), from /proc/stat. */
static double machine_busy(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long v[8] = { 0 };
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                   &v[6], &v[7]);
    fclose(f);
    if (n < 4) return 0;
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];   /* not idle, not iowait */
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

/* --cpu NAME=PID: the process trees whose CPU time is reported. */
#define MAX_CPU 8
struct watched_cpu { char name[32]; int pid; };

/* Adds NAME=PID to cpu[*ncpu]; false if it is malformed or there is no room. */
static bool add_cpu_opt(const char *arg, struct watched_cpu *cpu, int *ncpu)
{
    const char *eq = strchr(arg, '=');
    if (!eq || *ncpu == MAX_CPU) return false;
    snprintf(cpu[*ncpu].name, sizeof cpu[0].name, "%.*s", (int)(eq - arg), arg);
    cpu[(*ncpu)++].pid = atoi(eq + 1);
    return true;
}

/* qsort on doubles (latency percentiles). */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A client frame's header: FIN, opcode, the masked length and the masking
 * key; returns its length (at most 14). */
static size_t client_frame_head(uint8_t h[14], uint8_t opcode, size_t len, const uint8_t key[4])
{
    size_t hl = 0;
    h[hl++] = 0x80 | opcode;
    if (len < 126) h[hl++] = 0x80 | (uint8_t)len;
    else if (len < 65536) { h[hl++] = 0x80 | 126; h[hl++] = (uint8_t)(len >> 8); h[hl++] = (uint8_t)len; }
    else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) h[hl++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(h + hl, key, 4);
    return hl + 4;
}

/* Masks (or unmasks) len bytes in place with key. */
static void mask_bytes(uint8_t *p, size_t len, const uint8_t key[4])
{
    for (size_t i = 0; i < len; i++) p[i] ^= key[i & 3];
}

/* Our own CPU seconds. */
static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

#endif
