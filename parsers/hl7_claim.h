/* hl7_claim.h - maps a parsed HL7 v2 financial message onto the claim model
 * (common/claim.h). The claim and every string in it live in the arena the
 * caller passes; the message may be freed once the claim is built (all
 * values are copied, unescaped, into the arena).
 *
 * What is read (versions 2.3 to 2.8; where shapes differ, the first
 * components that all versions share are read, so one reading fits all):
 *   MSH-9   message type and trigger (CM in 2.3/2.4, MSG from 2.5): comp 1, 2;
 *           ADT -> kind CLAIM_KIND_ADT, DFT and BAR -> CLAIM_KIND_BILL
 *   MSH-10  control id -> claim id
 *   PID-7   birth date (TS/DTM; comp 1), PID-8 sex (IS, CWE from 2.7; comp 1:
 *           F, M; O, A, N, U and anything else -> 'U')
 *   PV1-2   patient class (IS, CWE from 2.7; comp 1): I -> inpatient; O, E,
 *           R, P, B -> outpatient; anything else or absent -> unknown
 *   PV1-36  discharge disposition (IS, CWE from 2.7; comp 1): 20 (expired),
 *           40, 41, 42 (expired, hospice UB-04 codes) -> discharged_alive 0,
 *           another value 1, empty -1
 *   PV1-44/45 admit / discharge date-time (first repetition): the service
 *           period when no FT1-4 is sent; PV1-45 is the discharge date
 *   GP1-1   type of bill (IS to 2.6, CWE from 2.7; comp 1), first GP1 of the
 *           message, kept as sent; a valid one decides the setting over
 *           PV1-2 (11x/12x inpatient, other 1xx-8xx outpatient). GP1 is v2's
 *           only standard home of the UB-04 type of bill (docs/claim-mapping.md).
 *   DG1     every DG1 in the message in order, message level and (P11)
 *           inside financial groups; occurrence n gives location "DG1(n)-3".
 *     DG1-1   set id -> sequence
 *     DG1-3   CE (to 2.4) / CWE (2.5+): of the triplets comp 1-3, the
 *             alternate comp 4-6 and (2.7+) the second alternate comp 10-12,
 *             the first whose system is ICD-10-CM, else the first with a
 *             code: its code, text and system. A DG1 without a code is
 *             skipped.
 *     DG1-2   the old coding method ("I10", "I9"), used as the system when
 *             DG1-3.3 is empty
 *     DG1-4   description (deprecated from 2.5) -> text; else the triplet's text
 *     DG1-6   type: A -> admitting; W, F, anything else stated -> secondary;
 *             W / F are also the stage (working / final)
 *     DG1-15  priority: 1 -> principal (wins over DG1-6)
 *     DG1-21  action code: D (delete, as in a BAR^P12) -> the DG1 is skipped,
 *             also as a P11 line's diagnosis
 *     DG1-26  present on admission (Y, N, U, W, 1 = exempt; E also exempt).
 *             Defined from 2.5; read in every version, because sites that
 *             send POA before 2.5 put it in the same place.
 *   FT1     every FT1 in order; occurrence n gives location "FT1(n)".
 *     FT1-1 sequence; FT1-4 transaction date (TS to 2.4: comp 1 is the
 *     date; DR from 2.5: comp 1 start, comp 2 end); FT1-10 quantity;
 *     FT1-19 diagnoses (repeating CE/CWE, every repetition r, the triplet
 *     picked as for DG1-3): each code, normalised, into dx_codes (at most
 *     CLAIM_MAX_DX_POINTERS per line), and the DG1-1 of the DG1 with that
 *     code into dx_pointers. A code with no DG1 of the same normalised code
 *     (a malformed one: of the same form as sent) is a diagnosis of its
 *     own: location "FT1(n)-19(r)", line = the line's index, sequence 0,
 *     type secondary, its system and text from the triplet; one diagnosis
 *     per distinct code across all FT1s, the first line's. Codes are found
 *     through a hash index, so the cost is linear in the codes sent.
 *     FT1-25 procedure (CE, CNE from 2.6): comp 1 code, comp 3 system (C4,
 *     CPT, HCPCS...); FT1-26 modifiers (repeating): comp 1 of each.
 *     DFT^P11: when FT1-19 is empty, the DG1s of the FT1's financial group
 *     (those between it and the next FT1) give its codes and pointers; a
 *     group's DG1 whose code the claim already has is no second diagnosis
 *     (the charge points at the first DG1 with that code).
 *     A reversal (FT1-6 CD, credit; or FT1-10 below 0) bills nothing: it is
 *     no line, its FT1-19 codes are no diagnoses, and in a DFT^P11 neither
 *     are the DG1s of its financial group; occurrence numbers still count it.
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
 *                    field, e.g. "DG1(2)-3", "FT1(1)-19(2)"); texts (and the
 *                    type of bill) with a malformed escape are kept raw. */
err_t hl7_claim_read(const hl7_msg_t *msg, arena_t *a, claim_t **out, err_detail_t *d);

#endif
