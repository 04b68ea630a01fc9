/* The installed commands uring-cat, uring-cp, uring-hash and uringtools.
 *
 * Two things are lost once Python starts, before any of our code runs:
 * Python cannot start at all with a directory on fd 0, 1 or 2 ("Fatal
 * Python error: init_sys_streams"), where GNU cat says "cat: -: Is a
 * directory"; and it sets SIGPIPE to SIG_IGN, so a caller's `trap '' PIPE`
 * (after which GNU tools report "write error: Broken pipe") cannot be told
 * from the default (die of the signal).  This launcher runs first: it
 * parks a directory found on fd 0-2 above fd 2, with /dev/null in its
 * place, notes that and an ignored (or blocked) SIGPIPE in
 * URINGTOOLS_LAUNCH, holds SIGINT until our Python code can take it, and runs
 * the Python half, `_uringtools COMMAND ARGS...`, installed beside it (pip
 * points its #! line at the environment's python; where the kernel cannot
 * run that line, a python path with a space, the launcher runs it).
 * uringtools/cli/launch.py reads the note and puts the directories back.
 *
 * Built by setup.py once per command, with -DCOMMAND="uring-cat" etc.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef COMMAND
#error "build with -DCOMMAND='\"uring-cat\"' (or uring-cp, uring-hash, uringtools)"
#endif

#define ENTRY "_uringtools"
#define NOTE "URINGTOOLS_LAUNCH"

/* Append to note (size bytes) what fits; never past its end. */
static void append(char *note, size_t size, const char *word, int a, int b)
{
    size_t used = strlen(note);
    if (used < size)
        snprintf(note + used, size - used, word, a, b);
}

/* "sigpipe=ignored 0=3 ..." into note: what Python will not see itself. */
static void take_note(char *note, size_t size)
{
    struct sigaction old;
    sigset_t mask, old_mask;

    note[0] = '\0';
    /* blocked is as good as ignored: a write with no reader gets EPIPE */
    if ((sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_IGN) ||
        (sigprocmask(SIG_BLOCK, NULL, &mask) == 0 &&
         sigismember(&mask, SIGPIPE) == 1))
        append(note, size, "sigpipe=ignored ", 0, 0);
    /* Ctrl-C while Python starts (importing site, or our modules) would
     * print a traceback, or "Fatal Python error: init_import_site": hold
     * SIGINT until our code can take it (launch.py unblocks it, and a
     * pending one then dies quietly). Unless the caller blocked it. */
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, NULL, &old_mask) == 0 &&
        sigismember(&old_mask, SIGINT) == 0 &&
        sigprocmask(SIG_BLOCK, &mask, NULL) == 0)
        append(note, size, "sigint=held ", 0, 0);
    for (int fd = 0; fd < 3; fd++) {
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        int parked = fcntl(fd, F_DUPFD, 3);     /* inherited: no CLOEXEC */
        if (parked < 0)
            continue;       /* Python will refuse to start, as without us */
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0 || dup2(null, fd) < 0) {
            close(parked);
            if (null >= 0)
                close(null);
            continue;
        }
        if (null != fd)
            close(null);    /* below 3 only if that std fd was closed: again */
        append(note, size, "%d=%d ", fd, parked);
    }
}

/* This executable's path, symlinks resolved (malloc'ed), or NULL. */
static char *self_path(const char *argv0)
{
    for (size_t size = 4096;; size *= 2) {
        char *path = malloc(size);
        if (path == NULL)
            return NULL;
        ssize_t n = readlink("/proc/self/exe", path, size);
        if (n >= 0 && (size_t)n < size) {
            path[n] = '\0';
            return path;
        }
        free(path);
        if (n < 0)
            break;
    }
    /* no /proc: where the shell found us, by argv[0] or along $PATH */
    if (strchr(argv0, '/') != NULL)
        return realpath(argv0, NULL);
    const char *dirs = getenv("PATH");
    while (dirs != NULL && argv0[0] != '\0') {
        const char *colon = strchr(dirs, ':');
        int len = (int)(colon != NULL ? (size_t)(colon - dirs) : strlen(dirs));
        size_t size = (size_t)len + strlen(argv0) + 3;
        char *candidate = malloc(size);
        if (candidate == NULL)
            return NULL;
        snprintf(candidate, size, "%.*s/%s", len > 0 ? len : 1,
                 len > 0 ? dirs : ".", argv0);      /* "" is "." */
        char *found = access(candidate, X_OK) == 0 ?
            realpath(candidate, NULL) : NULL;
        free(candidate);
        if (found != NULL)
            return found;
        dirs = colon != NULL ? colon + 1 : NULL;
    }
    errno = ENOENT;
    return NULL;
}

/* The path of _uringtools: beside this executable. */
static char *entry_path(const char *argv0)
{
    char *self = self_path(argv0);
    if (self == NULL)
        return NULL;
    char *path = realloc(self, strlen(self) + sizeof ENTRY);
    if (path == NULL) {
        free(self);
        return NULL;
    }
    char *slash = strrchr(path, '/');
    strcpy(slash != NULL ? slash + 1 : path, ENTRY);
    return path;
}

/* Run args[1] (_uringtools) with the whole of its #! line as the path of
 * its interpreter: pip writes the environment's python there as it is,
 * spaces and all ("#!/home/me/my env/bin/python"), where the kernel takes
 * the first word ("/home/me/my").  Returns only if that fails too. */
static void exec_whole_line(char **args)
{
    char line[PATH_MAX + 3];
    int fd = open(args[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, line, sizeof line - 1);
    close(fd);
    if (n < 3 || line[0] != '#' || line[1] != '!')
        return;
    line[n] = '\0';
    char *end = strchr(line, '\n');
    if (end == NULL)
        return;
    *end = '\0';
    args[0] = line + 2;
    execv(args[0], args);
}

int main(int argc, char **argv)
{
    char note[128];
    char *entry;
    char **args;

    take_note(note, sizeof note);
    if (note[0] != '\0')
        setenv(NOTE, note, 1);
    else
        unsetenv(NOTE);
    entry = entry_path(argc > 0 ? argv[0] : "");
    /* [interpreter,] entry, COMMAND, ARGS..., NULL */
    args = calloc((size_t)argc + 4, sizeof *args);
    if (entry == NULL || args == NULL) {
        fprintf(stderr, "%s: cannot find %s: %s\n", COMMAND, ENTRY,
                strerror(errno));
        return 127;
    }
    args[1] = entry;
    args[2] = COMMAND;
    for (int i = 1; i < argc; i++)
        args[i + 2] = argv[i];
    execv(entry, args + 1);
    int err = errno;
    if (err == ENOENT || err == ENOEXEC)
        exec_whole_line(args);
    fprintf(stderr, "%s: cannot run %s: %s\n", COMMAND, entry, strerror(err));
    return err == ENOENT ? 127 : 126;
}
