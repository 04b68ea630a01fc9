/* The cdef: what Python may call. Layouts are left to the compiler. */

struct io_uring { ...; };
struct io_uring_params {
    uint32_t sq_entries;
    uint32_t cq_entries;
    uint32_t flags;
    uint32_t features;
    ...;
};
struct iovec { void *iov_base; size_t iov_len; };

#define IORING_SETUP_SQPOLL ...
#define IORING_SETUP_CLAMP ...
#define IORING_SETUP_COOP_TASKRUN ...
#define IORING_SETUP_TASKRUN_FLAG ...
#define IORING_SETUP_SINGLE_ISSUER ...
#define IORING_SETUP_DEFER_TASKRUN ...

#define IORING_FEAT_RW_CUR_POS ...
#define IORING_FEAT_NODROP ...

#define IOSQE_FIXED_FILE ...
#define IOSQE_IO_LINK ...
#define IOSQE_IO_DRAIN ...
#define IOSQE_ASYNC ...
#define IOSQE_CQE_SKIP_SUCCESS ...

#define IORING_FILE_INDEX_ALLOC ...

enum io_uring_op {
    IORING_OP_NOP,
    IORING_OP_READV,
    IORING_OP_WRITEV,
    IORING_OP_FSYNC,
    IORING_OP_READ_FIXED,
    IORING_OP_WRITE_FIXED,
    IORING_OP_POLL_ADD,
    IORING_OP_OPENAT,
    IORING_OP_CLOSE,
    IORING_OP_STATX,
    IORING_OP_READ,
    IORING_OP_WRITE,
    IORING_OP_SPLICE,
    IORING_OP_LAST,
    IORING_OP_RENAMEAT,
    ...
};

/* liburing */
int io_uring_queue_init_params(unsigned entries, struct io_uring *ring,
                               struct io_uring_params *p);
void io_uring_queue_exit(struct io_uring *ring);
int io_uring_register_buffers(struct io_uring *ring, const struct iovec *iovecs,
                              unsigned nr_iovecs);
int io_uring_unregister_buffers(struct io_uring *ring);
int io_uring_register_files_sparse(struct io_uring *ring, unsigned nr);
int io_uring_register_files_update(struct io_uring *ring, unsigned off,
                                   const int *files, unsigned nr_files);
int io_uring_unregister_files(struct io_uring *ring);
int io_uring_register_iowq_max_workers(struct io_uring *ring, unsigned int *values);

/* our helpers (csrc/uringtools.c) */
struct ut_sqe {
    uint8_t opcode;       /* IORING_OP_* */
    uint8_t flags;        /* IOSQE_* */
    uint16_t buf_index;   /* registered buffer, for *_FIXED */
    int32_t fd;           /* fd, or index in the registered file table */
    uint32_t len;
    uint32_t op_flags;    /* rw_flags, open_flags, poll mask, ... */
    uint64_t addr;
    uint64_t off;
    uint64_t addr2;       /* statx buffer */
    uint32_t file_index;  /* openat_direct target slot + 1, 0 = none */
    int32_t splice_fd_in;
    uint64_t user_data;
};

int ut_ring_fd(struct io_uring *ring);
unsigned ut_ring_flags(struct io_uring *ring);
unsigned ut_sq_space(struct io_uring *ring);
int ut_queue(struct io_uring *ring, const struct ut_sqe *sqes, unsigned n,
             uint64_t *op_counts);
int ut_enter(struct io_uring *ring, unsigned wait_nr, unsigned *submitted);
int ut_reap(struct io_uring *ring, unsigned max, uint64_t *user_data,
            int32_t *res, int64_t *in_flight);
long long ut_fs_type(const char *path);
long long ut_fd_fs_type(int fd);
void ut_die_of_signal(int sig);

/* A directory read in one call (ut_dir_read), entries in inode order. */
struct ut_dirent {
    uint64_t ino;
    int64_t size;
    int64_t blocks;       /* 512-byte blocks allocated */
    uint32_t mode;        /* 0: the stat failed (Python stats it again) */
    uint32_t name;        /* offset of the NUL-terminated name in names */
    uint32_t name_len;
    uint32_t link;        /* a symlink, stat'ed through (-L) */
};
struct ut_dir {
    struct ut_dirent *ents;
    char *names;
    unsigned count;
    ...;
};
int ut_dir_read(int dirfd, int stat_flags, struct ut_dir **out);
void ut_dir_free(struct ut_dir *d);

/* Chains for the files of a directory this run made (see copybatch.py). */
struct ut_fresh {
    int32_t src_dirfd;
    int32_t dst_dirfd;
    uint32_t open_src;    /* open flags */
    uint32_t open_dst;
    uint32_t umask;
    int64_t small_max;    /* largest size taken */
    int32_t keep_holes;   /* files with holes are not taken */
    uint64_t buf;         /* next buffer byte, and the end of the region */
    uint64_t buf_end;
    uint32_t slot;        /* next pair of file table slots */
    uint32_t room;        /* chains the batch can still take */
    uint64_t user_data;   /* of the next chain, step bits clear */
    int32_t *want_res;    /* the next chain's success result, and step */
    uint8_t *want_step;
    uint64_t bytes;       /* sizes of the files chained (added to) */
    int32_t stop;         /* why it stopped: UT_STOP_* */
    int32_t check_dst;    /* the destination directory existed: take only
                             names not there yet */
    uint64_t dst_checks;  /* fstatat calls made for that (added to) */
    int32_t clone;        /* ut_copy_fresh clones (FICLONE) instead of
                             reading and writing */
    int32_t err;          /* errno of the copy that stopped ut_copy_fresh */
};
/* chain steps, in the low 3 bits of user_data */
#define UT_STEP_OPEN_SRC ...
#define UT_STEP_OPEN_DST ...
#define UT_STEP_READ ...
#define UT_STEP_WRITE ...
#define UT_STEP_RENAME ...
#define UT_STEP_CLOSE ...
#define UT_STOP_END ...
#define UT_STOP_OTHER ...
#define UT_STOP_FULL ...
int ut_chain_fresh(const struct ut_dir *d, unsigned pos, struct ut_fresh *f,
                   struct ut_sqe *out);
#define UT_STOP_FAILED ...
/* syscalls ut_copy_fresh made, by name */
struct ut_sync_calls {
    uint64_t openat;
    uint64_t read;
    uint64_t write;
    uint64_t close;
    uint64_t unlink;
    uint64_t ioctl;
};
int ut_copy_fresh(const struct ut_dir *d, unsigned pos, struct ut_fresh *f,
                  unsigned max, char *buf, struct ut_sync_calls *calls);
int ut_small_run(const struct ut_dir *d, unsigned pos, struct ut_fresh *f,
                 unsigned max);
int ut_route_chains(const uint64_t *user_data, const int32_t *res, unsigned n,
                    unsigned per_region, int32_t *res_tab, uint8_t *step_tab,
                    unsigned *left);
int ut_chains_failed(const int32_t *res, const uint8_t *step,
                     const int32_t *want_res, const uint8_t *want_step,
                     unsigned n, uint32_t *failed);
