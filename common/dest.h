/* dest.h - the queue destinations the daemon delivers to: one enum and one
 * name table. The names are what the queue stores and what logs, metrics
 * and the worklist show. */
#ifndef SPINEGATE_DEST_H
#define SPINEGATE_DEST_H

#include <stdbool.h>

typedef enum {
    DEST_HL7,         /* "hl7": HL7 v2 messages that pass, to billing */
    DEST_FHIR,        /* "fhir": FHIR Claims that pass */
    DEST_REJECT_HL7,  /* "reject-hl7": HL7 messages with a reject finding */
    DEST_REJECT_FHIR, /* "reject-fhir": FHIR Claims with a reject finding */
} dest_t;

#define DEST_COUNT 4

/* The destination's queue name. */
const char *dest_name(dest_t d);

/* The destination a queue name names, or -1. */
int dest_from_name(const char *name);

/* A reject destination (reject-hl7, reject-fhir). */
bool dest_is_reject(dest_t d);

/* A FHIR destination (fhir, reject-fhir). */
bool dest_is_fhir(dest_t d);

#endif
