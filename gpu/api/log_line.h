/* One diagnostic line on stderr, "<who>: <message>", for the fake driver
 * (fk_log) and the interposer (ic_say): the message is formatted first and
 * written with one call, so that lines from several threads do not
 * interleave. */
#ifndef CEDANA_LOG_LINE_H
#define CEDANA_LOG_LINE_H

#include <stdarg.h>
#include <stdio.h>

__attribute__((format(printf, 2, 0))) static inline void cu_log_line(const char *who,
                                                                     const char *fmt, va_list ap) {
  char buf[768];
  vsnprintf(buf, sizeof buf, fmt, ap);
  fprintf(stderr, "%s: %s\n", who, buf);
}

#endif
