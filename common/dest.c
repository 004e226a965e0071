/* dest.c - the destination names (dest.h). */
#include <string.h>

#include "dest.h"

static const char *const dest_names[DEST_COUNT] = {
    [DEST_HL7] = "hl7",
    [DEST_FHIR] = "fhir",
    [DEST_REJECT_HL7] = "reject-hl7",
    [DEST_REJECT_FHIR] = "reject-fhir",
};

const char *dest_name(dest_t d)
{
    return (unsigned)d < DEST_COUNT ? dest_names[d] : "?";
}

int dest_from_name(const char *name)
{
    for (int i = 0; name && i < DEST_COUNT; i++)
        if (strcmp(name, dest_names[i]) == 0)
            return i;
    return -1;
}

bool dest_is_reject(dest_t d)
{
    return d == DEST_REJECT_HL7 || d == DEST_REJECT_FHIR;
}

bool dest_is_fhir(dest_t d)
{
    return d == DEST_FHIR || d == DEST_REJECT_FHIR;
}
