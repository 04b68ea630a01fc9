/* C for the loops that must not cost a Python call per SQE or CQE.
 * Every helper returns >= 0 or -errno; policy stays in Python. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
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

/* Copy up to max ready CQEs into arrays and mark them seen. */
static int ut_reap(struct io_uring *ring, unsigned max, uint64_t *user_data,
                   int32_t *res)
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
    return (int)n;
}
