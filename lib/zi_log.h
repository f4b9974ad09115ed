/*  zi_log.h - one-line logs with a stable message id operators can grep.

        zi_log_set_ident ("zinfer-exec", "s0r1");
        zi_log_info ("EXEC-READY", "segment %d loaded (%zu weight bytes)", s, n);

    prints to stderr:

        2026-11-25T16:40:00.123Z I zinfer-exec[s0r1] 4242 EXEC-READY: segment 0 ...

    The level threshold comes from ZI_LOG_LEVEL (debug, info, warn, error;
    default info) or zi_log_set_level.
*/
#ifndef ZI_LOG_H_INCLUDED
#define ZI_LOG_H_INCLUDED

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    ZI_LOG_DEBUG = 0,
    ZI_LOG_INFO = 1,
    ZI_LOG_WARN = 2,
    ZI_LOG_ERROR = 3,
    ZI_LOG_OFF = 4,
} zi_log_level_t;

//  Name the process ("zinfer-broker") and optionally its role ("s0r1").
void zi_log_set_ident (const char *program, const char *role);
void zi_log_set_level (zi_log_level_t level);
zi_log_level_t zi_log_get_level (void);

void zi_log (zi_log_level_t level, const char *msgid, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

#define zi_log_debug(id, ...) zi_log (ZI_LOG_DEBUG, id, __VA_ARGS__)
#define zi_log_info(id, ...) zi_log (ZI_LOG_INFO, id, __VA_ARGS__)
#define zi_log_warn(id, ...) zi_log (ZI_LOG_WARN, id, __VA_ARGS__)
#define zi_log_error(id, ...) zi_log (ZI_LOG_ERROR, id, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif
