// Shared by the fuzz targets: a rejected input must come with a one-line error message that fits its
// buffer (err was filled with 'x' before the call, so an unterminated message runs to the end).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void require_one_line_error(const char *err, size_t cap) {
    size_t len = strnlen(err, cap);
    if (len == 0 || len == cap || strchr(err, '\n')) {
        fprintf(stderr, "rejected without a one-line message\n");
        abort();
    }
}
