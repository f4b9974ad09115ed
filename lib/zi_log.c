/*  zi_log.c - see zi_log.h. */
#include "zi_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

//  Process-wide logging settings: the one place zinfer keeps global state,
//  because a process has exactly one identity and one stderr.
static char s_program[64] = "zinfer";
static char s_role[64] = "";
static int s_level = -1;

void
zi_log_set_ident (const char *program, const char *role)
{
    snprintf (s_program, sizeof s_program, "%s", program ? program : "zinfer");
    snprintf (s_role, sizeof s_role, "%s", role ? role : "");
}

void
zi_log_set_level (zi_log_level_t level)
{
    s_level = (int) level;
}

zi_log_level_t
zi_log_get_level (void)
{
    if (s_level < 0) {
        const char *env = getenv ("ZI_LOG_LEVEL");
        s_level = ZI_LOG_INFO;
        if (env) {
            if (strcasecmp (env, "debug") == 0) {
                s_level = ZI_LOG_DEBUG;
            }
            else if (strcasecmp (env, "warn") == 0) {
                s_level = ZI_LOG_WARN;
            }
            else if (strcasecmp (env, "error") == 0) {
                s_level = ZI_LOG_ERROR;
            }
            else if (strcasecmp (env, "off") == 0) {
                s_level = ZI_LOG_OFF;
            }
        }
    }
    return (zi_log_level_t) s_level;
}

void
zi_log (zi_log_level_t level, const char *msgid, const char *fmt, ...)
{
    if ((int) level < (int) zi_log_get_level ()) {
        return;
    }
    struct timeval tv;
    gettimeofday (&tv, NULL);
    struct tm tm;
    gmtime_r (&tv.tv_sec, &tm);
    char line[1024];
    int pos = snprintf (line, sizeof line,
                        "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %c %s%s%s%s %d %s: ",
                        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                        tm.tm_min, tm.tm_sec, (int) (tv.tv_usec / 1000),
                        "DIWE"[level], s_program, *s_role ? "[" : "", s_role,
                        *s_role ? "]" : "", (int) getpid (), msgid);
    if (pos > 0 && (size_t) pos < sizeof line) {
        va_list ap;
        va_start (ap, fmt);
        vsnprintf (line + pos, sizeof line - (size_t) pos, fmt, ap);
        va_end (ap);
    }
    //  One write per line so lines of concurrent processes do not interleave.
    fprintf (stderr, "%s\n", line);
}
