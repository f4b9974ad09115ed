/*  zt_spawn.h - start a test's child process so that it never outlives the
    test (header only; every function is static).

    The child asks for SIGKILL when its parent dies (PR_SET_PDEATHSIG) and
    exits at once if the parent died before it asked, so a test killed by a
    timeout or a crash leaves nothing running; a failed assertion is
    covered by each test's fini hook, which kills the pids it recorded.
    stdout and stderr go to a log file; inherited descriptors are closed
    and SIGTERM / SIGINT get their default dispositions.
*/
#ifndef ZT_SPAWN_H_INCLUDED
#define ZT_SPAWN_H_INCLUDED

#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

//  Start argv[0] with argv (NULL-terminated), stdout and stderr into log
//  (appended, or truncated first). Returns the child's pid.
static __attribute__ ((unused)) pid_t
zt_fork_exec (const char *log, bool append, char *const argv[])
{
    pid_t parent = getpid ();
    pid_t pid = fork ();
    cr_assert_geq (pid, 0, "fork failed");
    if (pid == 0) {
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        if (getppid () != parent) {
            _exit (127);        //  the test died before prctl
        }
        int fd = open (log, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC),
                       0644);
        if (fd >= 0) {
            dup2 (fd, 1);
            dup2 (fd, 2);
        }
        for (int i = 3; i < 1024; i++) {
            close (i);
        }
        signal (SIGTERM, SIG_DFL);
        signal (SIGINT, SIG_DFL);
        execv (argv[0], argv);
        _exit (127);
    }
    return pid;
}

//  nftw needs _GNU_SOURCE (or _XOPEN_SOURCE >= 500) defined before the
//  first include; files that remove scratch trees define it.
#ifdef FTW_DEPTH
static int
zt_rm_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st;
    (void) flag;
    (void) ftw;
    return remove (path);
}

//  Remove a directory tree (a test's scratch directory); safe when absent.
static __attribute__ ((unused)) void
zt_rm_tree (const char *dir)
{
    if (dir && *dir) {
        nftw (dir, zt_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
}
#endif

#endif
