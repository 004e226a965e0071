/* hl7_claim.h - maps a parsed HL7 v2 financial message onto the claim model
 * (common/claim.h). The claim and every string in it live in the arena the
 * caller passes; the message may be freed once the claim is built (all
 * values are copied, unescaped, into the arena).
 *
 * What is read (versions 2.3 to 2.8; where shapes differ, the first
 * components that all versions share are read, so one reading fits all):
 *   MSH-9   message type and trigger (CM in 2.3/2.4, MSG from 2.5): comp 1, 2
 *   MSH-10  control id -> claim id
 *   PID-7   birth date (TS/DTM; comp 1), PID-8 sex (IS, CWE from 2.7; comp 1:
 *           F, M; O, A, N, U and anything else -> 'U')
 *   PV1-36  discharge disposition (IS, CWE from 2.7; comp 1): 20 (expired),
 *           40, 41, 42 (expired, hospice UB-04 codes) -> discharged_alive 0,
 *           another value 1, empty -1
 *   PV1-44/45 admit / discharge date-time (first repetition): the service
 *           period when no FT1-4 is sent
 *   DG1     every DG1 in the message in order, message level and (P11)
 *           inside financial groups; occurrence n gives location "DG1(n)-3".
 *     DG1-1   set id -> sequence
 *     DG1-3   CE (to 2.4) / CWE (2.5+): comp 1 code, 2 text, 3 coding system;
 *             when comp 3 is not ICD-10-CM but the CWE alternate (comp 6)
 *             is, the alternate code (comp 4) is taken. A DG1 without a
 *             code is skipped.
 *     DG1-2   the old coding method ("I10", "I9"), used as the system when
 *             DG1-3.3 is empty
 *     DG1-4   description (deprecated from 2.5) -> text; else DG1-3.2
 *     DG1-6   type: A -> admitting; W, F, anything else stated -> secondary
 *     DG1-15  priority: 1 -> principal (wins over DG1-6)
 *     DG1-26  present on admission (Y, N, U, W, 1 = exempt; E also exempt).
 *             Defined from 2.5; read in every version, because sites that
 *             send POA before 2.5 put it in the same place.
 *   FT1     every FT1 in order; occurrence n gives location "FT1(n)".
 *     FT1-1 sequence; FT1-4 transaction date (TS to 2.4: comp 1 is the
 *     date; DR from 2.5: comp 1 start, comp 2 end); FT1-10 quantity;
 *     FT1-19 diagnoses (repeating CE/CWE): each comp 1, normalised, into
 *     dx_codes, and the DG1-1 of the DG1 with that code into dx_pointers;
 *     FT1-25 procedure (CE, CNE from 2.6): comp 1 code, comp 3 system (C4,
 *     CPT, HCPCS...); FT1-26 modifiers (repeating): comp 1 of each.
 *     DFT^P11: when FT1-19 is empty, the DG1s of the FT1's financial group
 *     (those between it and the next FT1) give its codes and pointers.
 *   The service period is the earliest FT1-4 start to the latest end, else
 *   PV1-44 to PV1-45.
 */
#ifndef SPINEGATE_HL7_CLAIM_H
#define SPINEGATE_HL7_CLAIM_H

#include "arena.h"
#include "claim.h"
#include "err.h"
#include "hl7.h"

/* Builds a claim from msg: DFT^P03, DFT^P11, BAR^P01/P05/P12, and ADT
 * messages (any trigger) that carry at least one DG1.
 * Errors (*out is NULL, d says where):
 *   ERR_UNSUPPORTED  another message type (d->where "MSH-9", the message
 *                    names the type), or an ADT without DG1
 *   ERR_BAD_ESCAPE   a malformed escape in a code or id (d->where names the
 *                    field, e.g. "DG1(2)-3"); texts with a malformed escape
 *                    are kept raw instead. */
err_t hl7_claim_read(const hl7_msg_t *msg, arena_t *a, claim_t **out, err_detail_t *d);

#endif
