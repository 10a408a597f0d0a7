/* errors.c -- the wire names of px/errors.h, made from the same list. */
#include "px/errors.h"

#include <string.h>

#include "px/common.h"

static const char *const names[] = {
#define PX_ERR_NAME_(id, name) [PX_E_##id] = name,
    PX_ERRORS(PX_ERR_NAME_)
#undef PX_ERR_NAME_
};

_Static_assert(PX_ARRAY_LEN(names) == PX_E__COUNT, "every px_err has a wire name");

const char *px_err_name(enum px_err code)
{
    if ((int)code < 0 || code >= PX_E__COUNT)
        return "internal";
    return names[code];
}

int px_err_from_name(const char *name)
{
    for (int i = 0; name && i < PX_E__COUNT; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}
