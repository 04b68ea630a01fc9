/* C for the loops that must not cost a Python call per SQE or CQE.
 * Every helper returns >= 0 or -errno; policy stays in Python. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <signal.h>
#include <liburing.h>

struct ut_sqe {
    uint8_t opcode;
    uint8_t flags;
    uint16_t buf_index;
    int32_t fd;
    uint32_t len;
    uint32_t op_flags;
    uint64_t addr;
    uint64_t off;
    uint64_t addr2;
    uint32_t file_index;
    int32_t splice_fd_in;
    uint64_t user_data;
};

static int ut_ring_fd(struct io_uring *ring) { return ring->ring_fd; }
static unsigned ut_ring_flags(struct io_uring *ring) { return ring->flags; }
static unsigned ut_sq_space(struct io_uring *ring) { return io_uring_sq_space_left(ring); }

/* The filesystem type (statfs f_type, e.g. TMPFS_MAGIC) holding path. */
static long long ut_fs_type(const char *path)
{
    struct statfs s;
    if (statfs(path, &s) < 0)
        return -errno;
    return (long long)s.f_type;
}

/* The filesystem type (fstatfs f_type) holding open file fd. */
static long long ut_fd_fs_type(int fd)
{
    struct statfs s;
    if (fstatfs(fd, &s) < 0)
        return -errno;
    return (long long)s.f_type;
}

/* Die of signal sig, as GNU tools do after cleaning up: its default
 * action, unblocked, sent to ourselves. In C because Python, asked to
 * restore SIG_DFL while another signal it has ignored since is pending,
 * raises "Signal N ignored due to race condition" (a traceback) instead.
 * Returns only if the signal does not kill (a stopped-only signal). */
static void ut_die_of_signal(int sig)
{
    struct sigaction sa;
    sigset_t set;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    kill(getpid(), sig);
}

/* Queue n SQEs described by `sqes`; count each opcode in op_counts.
 * Returns how many were queued (fewer than n when the SQ ring is full). */
static int ut_queue(struct io_uring *ring, const struct ut_sqe *sqes, unsigned n,
                    uint64_t *op_counts)
{
    unsigned i;
    for (i = 0; i < n; i++) {
        const struct ut_sqe *d = &sqes[i];
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        if (!sqe)
            break;
        io_uring_prep_rw(d->opcode, sqe, d->fd, (const void *)(uintptr_t)d->addr,
                         d->len, d->off);
        sqe->rw_flags = d->op_flags;
        sqe->buf_index = d->buf_index;
        sqe->flags = d->flags;
        sqe->user_data = d->user_data;
        if (d->opcode == IORING_OP_STATX)
            sqe->addr2 = d->addr2;
        if (d->opcode == IORING_OP_SPLICE)
            sqe->splice_fd_in = d->splice_fd_in;
        if (d->file_index)
            sqe->file_index = d->file_index;
        if (op_counts && d->opcode < IORING_OP_LAST)
            op_counts[d->opcode]++;
    }
    return (int)i;
}

/* Publish queued SQEs and make one io_uring_enter call.
 * Every call is one syscall, so the caller can count them exactly.  SQEs
 * the kernel did not take (EINTR, EAGAIN, EBUSY) stay in the ring and go
 * with the next call. *submitted receives what the kernel consumed. */
static int ut_enter(struct io_uring *ring, unsigned wait_nr, unsigned *submitted)
{
    struct io_uring_sq *sq = &ring->sq;
    unsigned tail = sq->sqe_tail;
    unsigned pending;
    int ret;

    if (sq->sqe_head != tail) {
        sq->sqe_head = tail;
        io_uring_smp_store_release(sq->ktail, tail);
    }
    pending = tail - io_uring_smp_load_acquire(sq->khead);
    ret = (int)syscall(__NR_io_uring_enter, ring->ring_fd, pending, wait_nr,
                       IORING_ENTER_GETEVENTS, NULL, 0);
    if (ret < 0)
        ret = -errno;
    if (submitted)
        *submitted = ret > 0 ? (unsigned)ret : 0;
    return ret;
}

/* Copy up to max ready CQEs into arrays, mark them seen and take them off
 * *in_flight: in one C call, so a Python signal handler (which runs between
 * calls) never sees CQEs consumed but still counted in flight. */
static int ut_reap(struct io_uring *ring, unsigned max, uint64_t *user_data,
                   int32_t *res, int64_t *in_flight)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;

    io_uring_for_each_cqe(ring, head, cqe) {
        if (n == max)
            break;
        user_data[n] = cqe->user_data;
        res[n] = cqe->res;
        n++;
    }
    io_uring_cq_advance(ring, n);
    *in_flight -= n;
    return (int)n;
}

/* ---- cp -r into a directory this run made: the per-file loop in C ---- */

#include <fcntl.h>
#include <stdlib.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <linux/fs.h>

#define UT_STEP_OPEN_SRC 0
#define UT_STEP_OPEN_DST 1
#define UT_STEP_READ 2
#define UT_STEP_WRITE 3
#define UT_STEP_RENAME 4
#define UT_STEP_CLOSE 5
#define UT_STEP_BITS 3

#define UT_STOP_END 0    /* every entry from pos on was chained */
#define UT_STOP_OTHER 1  /* the entry at the new pos is not a small file */
#define UT_STOP_FULL 2   /* the batch has no room for the entry at pos */
#define UT_STOP_FAILED 3 /* the entry at the new pos could not be copied */

struct ut_sync_calls {
    uint64_t openat, read, write, close, unlink, ioctl;
};

struct ut_dirent {
    uint64_t ino;
    int64_t size;
    int64_t blocks;
    uint32_t mode;
    uint32_t name;
    uint32_t name_len;
    uint32_t link;
};

struct ut_dir {
    struct ut_dirent *ents;
    char *names;
    unsigned count;
    unsigned cap;
    size_t names_len;
    size_t names_cap;
};

struct ut_fresh {
    int32_t src_dirfd;
    int32_t dst_dirfd;
    uint32_t open_src;
    uint32_t open_dst;
    uint32_t umask;
    int64_t small_max;
    int32_t keep_holes;
    uint64_t buf;
    uint64_t buf_end;
    uint32_t slot;
    uint32_t room;
    uint64_t user_data;
    int32_t *want_res;
    uint8_t *want_step;
    uint64_t bytes;
    int32_t stop;
    int32_t check_dst;
    uint64_t dst_checks;
    int32_t clone;
    int32_t err;
};

struct ut_linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

void ut_dir_free(struct ut_dir *d)
{
    if (!d)
        return;
    free(d->ents);
    free(d->names);
    free(d);
}

static int ut_dir_add(struct ut_dir *d, uint64_t ino, const char *name,
                      int link)
{
    size_t len = strlen(name);
    if (d->count == d->cap) {
        unsigned cap = d->cap ? 2 * d->cap : 64;
        struct ut_dirent *e = realloc(d->ents, cap * sizeof *e);
        if (!e)
            return -ENOMEM;
        d->ents = e;
        d->cap = cap;
    }
    if (d->names_len + len + 1 > d->names_cap) {
        size_t cap = d->names_cap ? 2 * d->names_cap : 4096;
        while (cap < d->names_len + len + 1)
            cap *= 2;
        char *n = realloc(d->names, cap);
        if (!n)
            return -ENOMEM;
        d->names = n;
        d->names_cap = cap;
    }
    if (d->names_len + len + 1 > UINT32_MAX)
        return -ENOMEM;
    struct ut_dirent *e = &d->ents[d->count++];
    memset(e, 0, sizeof *e);
    e->ino = ino;
    e->link = (uint32_t)link;
    e->name = (uint32_t)d->names_len;
    e->name_len = (uint32_t)len;
    memcpy(d->names + d->names_len, name, len + 1);
    d->names_len += len + 1;
    return 0;
}

static int ut_by_inode(const void *a, const void *b)
{
    const struct ut_dirent *x = a, *y = b;
    if (x->ino != y->ino)
        return x->ino < y->ino ? -1 : 1;
    return x->name < y->name ? -1 : x->name > y->name;  /* order read */
}

/* Read every entry of dirfd (but . and ..), sort them by inode number as
 * GNU cp does, and fstatat each (stat_flags: AT_SYMLINK_NOFOLLOW or 0).
 * A failed fstatat leaves mode 0. Returns 0 or -errno (the directory could
 * not be read); *out is then NULL. Free with ut_dir_free. */
int ut_dir_read(int dirfd, int stat_flags, struct ut_dir **out)
{
    char buf[32768];
    struct ut_dir *d = calloc(1, sizeof *d);
    int ret = 0;

    *out = NULL;
    if (!d)
        return -ENOMEM;
    for (;;) {
        long n = syscall(SYS_getdents64, dirfd, buf, sizeof buf);
        if (n < 0) {
            ret = -errno;
            goto fail;
        }
        if (n == 0)
            break;
        for (long off = 0; off < n;) {
            struct ut_linux_dirent64 *de = (void *)(buf + off);
            off += de->d_reclen;
            const char *name = de->d_name;
            if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0)))
                continue;
            /* followed (-L), a symlink is marked: it may lead to a file
             * this run is writing, which the tree walk waits for; where
             * the type is not given, lstat tells */
            int link = 0;
            if (!(stat_flags & AT_SYMLINK_NOFOLLOW)) {
                struct stat lst;
                link = de->d_type == DT_LNK
                    || (de->d_type == DT_UNKNOWN
                        && fstatat(dirfd, name, &lst, AT_SYMLINK_NOFOLLOW) == 0
                        && S_ISLNK(lst.st_mode));
            }
            ret = ut_dir_add(d, de->d_ino, name, link);
            if (ret)
                goto fail;
        }
    }
    qsort(d->ents, d->count, sizeof *d->ents, ut_by_inode);
    for (unsigned i = 0; i < d->count; i++) {
        struct ut_dirent *e = &d->ents[i];
        struct stat st;
        if (fstatat(dirfd, d->names + e->name, &st, stat_flags) == 0) {
            e->mode = st.st_mode;
            e->size = st.st_size;
            e->blocks = st.st_blocks;
            e->ino = st.st_ino;
        }
    }
    *out = d;
    return 0;
fail:
    ut_dir_free(d);
    return ret;
}

static void ut_sqe_fill(struct ut_sqe *s, uint8_t op, uint8_t flags, int32_t fd,
                        uint32_t len, uint32_t op_flags, uint64_t addr,
                        uint32_t file_index, uint64_t user_data)
{
    memset(s, 0, sizeof *s);
    s->opcode = op;
    s->flags = flags;
    s->fd = fd;
    s->len = len;
    s->op_flags = op_flags;
    s->addr = addr;
    s->file_index = file_index;
    s->user_data = user_data;
}

/* Whether entry e is a small regular file a chain (or ut_copy_fresh) takes:
 * in a directory that existed before the run (f->check_dst), only if
 * nothing has its name there yet (the tree walk looks at the others). */
static int ut_small_file(const struct ut_dir *d, const struct ut_dirent *e,
                         struct ut_fresh *f)
{
    struct stat st;

    /* size 0 is not: it may be a /proc-like file. A clone takes any size,
     * holes and all (small_max and keep_holes say so) */
    if (e->link || !S_ISREG(e->mode) || e->size <= 0 || e->size > f->small_max
        || (e->blocks * 512 < e->size && !f->keep_holes))
        return 0;
    if (!f->check_dst)
        return 1;
    f->dst_checks++;
    return fstatat(f->dst_dirfd, d->names + e->name, &st,
                   AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT;
}

/* How many entries of d from pos on are small regular files, in a row (at
 * most max). For a directory this run made only (no fstatat of the
 * destination): ut_copy_fresh then copies them, in another thread. */
int ut_small_run(const struct ut_dir *d, unsigned pos, struct ut_fresh *f,
                 unsigned max)
{
    unsigned n = 0;

    if (f->check_dst)
        return 0;
    for (; pos < d->count && n < max; pos++, n++)
        if (!ut_small_file(d, &d->ents[pos], f))
            break;
    return (int)n;
}

/* Describe chains openat(dst, O_CREAT) -> openat(src) -> read -> write for
 * the small regular files of d from pos on, into out (4 SQEs a chain), until
 * an entry that is not one, or the batch is full (f->room chains, buffer up
 * to f->buf_end). Advances f and records what success looks like for each
 * chain. Returns the number of chains: entries pos .. pos + n - 1. */
int ut_chain_fresh(const struct ut_dir *d, unsigned pos, struct ut_fresh *f,
                   struct ut_sqe *out)
{
    const uint8_t link = IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
    unsigned n = 0;

    f->stop = UT_STOP_END;
    for (; pos < d->count; pos++, n++) {
        const struct ut_dirent *e = &d->ents[pos];
        if (!ut_small_file(d, e, f)) {
            f->stop = UT_STOP_OTHER;
            break;
        }
        uint64_t need = ((uint64_t)e->size + 4095) & ~(uint64_t)4095;
        if (!f->room || f->buf + need > f->buf_end) {
            f->stop = UT_STOP_FULL;
            break;
        }
        uint64_t name = (uint64_t)(uintptr_t)(d->names + e->name);
        uint32_t size = (uint32_t)e->size;
        uint64_t ud = f->user_data;
        struct ut_sqe *s = out + 4 * n;
        /* The create first, flagged async: it would block anyway, and an
         * io-wq worker then carries the whole chain, so this thread does
         * not come back (task work) to issue the rest. */
        ut_sqe_fill(s, IORING_OP_OPENAT, link | IOSQE_ASYNC, f->dst_dirfd,
                    e->mode & 0777 & ~f->umask, f->open_dst, name,
                    f->slot + 2, ud | UT_STEP_OPEN_DST);
        ut_sqe_fill(s + 1, IORING_OP_OPENAT, link, f->src_dirfd, 0, f->open_src,
                    name, f->slot + 1, ud | UT_STEP_OPEN_SRC);
        ut_sqe_fill(s + 2, IORING_OP_READ, link | IOSQE_FIXED_FILE, (int32_t)f->slot,
                    size, 0, f->buf, 0, ud | UT_STEP_READ);
        ut_sqe_fill(s + 3, IORING_OP_WRITE, IOSQE_FIXED_FILE, (int32_t)f->slot + 1,
                    size, 0, f->buf, 0, ud | UT_STEP_WRITE);
        *f->want_res++ = (int32_t)size;
        *f->want_step++ = UT_STEP_WRITE;
        f->buf += need;
        f->slot += 2;
        f->room--;
        f->user_data += 1 << UT_STEP_BITS;
        f->bytes += size;
    }
    return (int)n;
}

/* Copy the small regular files of d from pos on with plain syscalls, in
 * this thread, while the ring's workers carry the chains in flight: at most
 * max files, through buf (f->small_max bytes); or, with f->clone, make each
 * share its source's extents (FICLONE: no bytes move, any size). Each file
 * is whole or not there: the copy stops before an entry that is not a small
 * file (UT_STOP_OTHER) or whose copy fails (UT_STOP_FAILED, its errno in
 * f->err; what it created is removed, and a chain then copies it and
 * reports why, as for any other). Returns the number copied; their sizes
 * are added to f->bytes and the syscalls made to calls. */
int ut_copy_fresh(const struct ut_dir *d, unsigned pos, struct ut_fresh *f,
                  unsigned max, char *buf, struct ut_sync_calls *calls)
{
    unsigned n = 0;

    f->stop = UT_STOP_END;
    for (; pos < d->count && n < max; pos++, n++) {
        const struct ut_dirent *e = &d->ents[pos];
        const char *name = d->names + e->name;
        size_t size = (size_t)e->size;
        int in, out, ok;

        if (!ut_small_file(d, e, f)) {
            f->stop = UT_STOP_OTHER;
            break;
        }
        calls->openat++;
        in = openat(f->src_dirfd, name, (int)f->open_src | O_CLOEXEC);
        if (in < 0) {
            f->err = errno;
            goto failed;
        }
        calls->openat++;
        out = openat(f->dst_dirfd, name, (int)f->open_dst | O_CLOEXEC,
                     e->mode & 0777 & ~f->umask);
        if (out < 0) {
            f->err = errno;
            calls->close++;
            close(in);
            goto failed;
        }
        if (f->clone) {
            calls->ioctl++;
            ok = ioctl(out, FICLONE, in) == 0;
        } else {
            calls->read++;
            ok = pread(in, buf, size, 0) == (ssize_t)size;
            if (ok) {
                calls->write++;
                ok = pwrite(out, buf, size, 0) == (ssize_t)size;
            }
        }
        f->err = ok ? 0 : errno;
        calls->close += 2;
        close(in);
        if (close(out) != 0 && ok) {
            ok = 0;
            f->err = errno;
        }
        if (!ok) {
            /* ours (O_EXCL): nothing half-written stays */
            calls->unlink++;
            unlinkat(f->dst_dirfd, name, 0);
            goto failed;
        }
        f->bytes += size;
    }
    return (int)n;
failed:
    f->stop = UT_STOP_FAILED;
    return (int)n;
}

/* Route chain completions: user_data is (chain << 3) | step, chain =
 * region * per_region + index. Stores each chain's result and step and
 * counts down its region's left. Returns how many were CLOSE completions. */
int ut_route_chains(const uint64_t *user_data, const int32_t *res, unsigned n,
                    unsigned per_region, int32_t *res_tab, uint8_t *step_tab,
                    unsigned *left)
{
    int closes = 0;
    for (unsigned k = 0; k < n; k++) {
        uint64_t ud = user_data[k];
        unsigned step = ud & ((1u << UT_STEP_BITS) - 1);
        if (step == UT_STEP_CLOSE) {
            closes++;
            continue;
        }
        uint64_t chain = ud >> UT_STEP_BITS;
        res_tab[chain] = res[k];
        step_tab[chain] = (uint8_t)step;
        left[chain / per_region]--;
    }
    return closes;
}

/* Which of n chains did not end as success looks like; their indexes go to
 * failed. Returns how many. */
int ut_chains_failed(const int32_t *res, const uint8_t *step,
                     const int32_t *want_res, const uint8_t *want_step,
                     unsigned n, uint32_t *failed)
{
    int nf = 0;
    for (unsigned i = 0; i < n; i++)
        if (res[i] != want_res[i] || step[i] != want_step[i])
            failed[nf++] = i;
    return nf;
}
