/* rules_int.h - internals shared by the files of rules/ (tables.c, pack.c,
 * text.c, excludes.c, eval.c); nothing outside rules/ includes it except the module's own
 * tests, fuzz targets and benchmark.
 *
 * Ownership: a rule_pack_t owns everything below it (tables, compiled rule
 * parameters, strings) in plain xmalloc'd arrays freed by rule_pack_free().
 * After load the pack is read-only, so evaluation needs no locks.
 */
#ifndef SPINEGATE_RULES_INT_H
#define SPINEGATE_RULES_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "claim.h"
#include "err.h"
#include "rules.h"

/* ---- small open-addressing map keyed by a code of at most 7 characters,
 * packed into a uint64 (NUL padded), so a lookup is a multiply, a mask and
 * integer compares. Values are int32 indexes. */
typedef struct {
    uint64_t *keys; /* 0 = empty slot */
    int32_t *vals;
    size_t cap;     /* power of two */
    size_t n;
} rule__map_t;

uint64_t rule__key(const char *code);            /* 0 when longer than 7 chars */
uint64_t rule__keyn(const char *code, size_t n); /* first n chars */
void rule__map_put(rule__map_t *m, uint64_t key, int32_t val);
int32_t rule__map_get(const rule__map_t *m, uint64_t key); /* -1 when absent */
void rule__map_free(rule__map_t *m);

/* ---- code references of a tabular note ("Q76.3-Q76.4", "M51.- with fifth
 * character 4"): a code matches when its prefix, cut to the length of each
 * bound, lies between the bounds (a bare code is lo == hi). */
typedef struct {
    char lo[8], hi[8];
    uint8_t lolen, hilen;
    char fifth; /* 0, or the character the 5th position must hold */
} rule__ref_t;

bool rule__ref_parse(const char *tok, size_t n, rule__ref_t *r);
bool rule__ref_match(const rule__ref_t *r, const char *code);

typedef enum {
    NOTE_INCLUDES,
    NOTE_INCLUSION_TERM,
    NOTE_EXCLUDES1,
    NOTE_EXCLUDES2,
    NOTE_CODE_FIRST,
    NOTE_USE_ADDITIONAL,
    NOTE_CODE_ALSO,
    NOTE_SEVEN_NOTE,
    NOTE_SEVEN_DEF,
    NOTE_NOTES,
} rule__note_type_t;

typedef struct {
    rule__ref_t owner;         /* the code or section the note sits under */
    char owner_dotted[16];
    rule__note_type_t type;
    char *text;
    rule__ref_t *refs;
    int nrefs;
} rule__note_t;

/* A 7th-character definition: the owner's prefix and its allowed letters. */
typedef struct {
    char prefix[8];
    char dotted[16];
    char chars[16];    /* "ABDGKS" */
    char *list;        /* "A, B, D, G, K, S" for messages */
    bool in_codes;     /* the owner's category is in the code table */
} rule__seven_t;

typedef struct {
    char code[8];
    char dotted[10];
    uint8_t len;
    bool billable;
    bool leaf;         /* no code in the table starts with this one */
    int32_t parent;    /* nearest ancestor in the table, -1 at a category */
    int32_t end;       /* one past the last descendant (codes are sorted) */
    char *desc;
    int16_t seven;     /* index into seven[], -1 when no 7th character */
    int16_t region;    /* index into the pack's regions, -1 none (compiled) */
    /* note indexes that apply to this code: its own, its ancestors' and its
     * section's (precomputed so evaluation never walks the hierarchy). */
    int32_t *ex1, *ex2;
    int nex1, nex2;
} rule__code_t;

/* One fiscal year's tables. */
typedef struct {
    char name[64];       /* file name it came from */
    char fy[16];         /* "FY2026" */
    claim_date_t from, to;
    char *icd_source, *drg_source;
    /* MS-DRG grouper whose lists this table carries ("43"), and the one CMS
     * uses for this year's discharges ("44"); they differ when the newer
     * lists are not available and the older are applied. */
    char drg_version[8], drg_for_year[8];
    rule__code_t *codes; /* sorted by code */
    size_t ncodes;
    rule__map_t code_map;
    rule__map_t category_map; /* 3-character categories present */
    rule__note_t *notes;
    size_t nnotes;
    rule__seven_t *seven;
    size_t nseven;
    rule__map_t seven_map; /* owner prefix -> index into seven */
    rule__map_t mcc_map;  /* value: 1 when it counts only if discharged alive */
    rule__map_t pdx_map;  /* DRG 551/552 principals; value: index into pdx */
    struct {
        int32_t off, n;   /* the MCCs this principal excludes: excl[off..off+n) */
    } *pdx;
    uint64_t *excl;       /* excluded MCC keys, sorted per principal */
    size_t nexcl;
    size_t npdx, nmcc;
} rule__table_t;

/* Parses one table file (text, len bytes). name is used in errors.
 * Errors: ERR_BAD_TABLE with d->segment = line and d->where = "name:line". */
err_t rule__table_parse(const char *name, const char *text, size_t len, rule__table_t *t,
                        err_detail_t *d);
void rule__table_free(rule__table_t *t);
const rule__code_t *rule__table_find(const rule__table_t *t, const char *code);
/* The 7th-character owner covering code (longest prefix), or NULL. */
const rule__seven_t *rule__table_seven_for(const rule__table_t *t, const char *code);

/* ---- regions (compiled from the pack). */
typedef enum { REGION_SPECIFIC, REGION_UNSPECIFIED, REGION_MULTIPLE } rule__region_kind_t;

#define RULE_SEG_C 1u
#define RULE_SEG_T 2u
#define RULE_SEG_L 4u
#define RULE_SEG_S 8u

typedef struct {
    char *id;
    char *label;
    rule__region_kind_t kind;
    unsigned segments;  /* RULE_SEG_* bits */
    char **desc;        /* normalised phrases (" THORACIC REGION ") */
    int ndesc;
    char **text;
    int ntext;
} rule__region_t;

typedef struct {
    char letter;        /* 'C', 'T', 'L', 'S' */
    int from, to;
    unsigned segment;
} rule__level_t;

typedef struct {
    rule__region_t *regions;
    int nregions;
    rule__level_t levels[8];
    int nlevels;
    char **stop_after;  /* words that make a preceding level token no level */
    int nstop;
} rule__geo_t;

#define RULE_TEXT_MAX 1024
/* Normalises text for phrase search: upper case, every run of other than
 * A-Z/0-9 becomes one space, with a space at both ends. Returns length. */
size_t rule__text_norm(const char *in, char *out, size_t cap);
/* The regions named by normalised text, as a bit set over region indexes. */
uint32_t rule__text_regions(const rule__geo_t *g, const char *norm, bool description);
/* One region for a description (union of what it names), or -1. */
int rule__desc_region(const rule__geo_t *g, const char *desc);
/* True when normalised text holds word (normalised " WORD ") not preceded by
 * any of the negation words. */
bool rule__text_has_word(const char *norm, const char *word, char *const *neg, int nneg);

/* ---- procedures (pack). */
typedef struct {
    char lo[8], hi[8];  /* code range, same length, compared as strings */
    claim_procsys_t system; /* PROCSYS_CPT or PROCSYS_HCPCS */
    int region;         /* region index, -1 = any region */
    char *kind;         /* "imaging", "injection", "bracing", "surgery" */
    char *label;
} rule__proc_t;

/* ---- rules. */
typedef enum {
    RID_CODE_SYSTEM,
    RID_CODE_INVALID,
    RID_CODE_NOT_BILLABLE,
    RID_SEVENTH,
    RID_EXCLUDES1,
    RID_EXCLUDES2,
    RID_SITE_UNSPECIFIED,
    RID_JUNCTION,
    RID_CONGENITAL,
    RID_LINKAGE,
    RID_DRG,
    RID_TABLE_COVERAGE,
    RID_DUPLICATE,
    RID_MANIFESTATION,
    RID__COUNT
} rule__id_t;

/* Message keys a rule uses; every key of a rule is required in the pack. */
typedef enum {
    MK_DEFAULT,
    MK_MISSING,
    MK_PLACEHOLDER,
    MK_UNDEFINED,
    MK_NOT_APPLICABLE,
    MK_SAME_REGION,
    MK_REGION_UNSTATED,
    MK_UNLINKED,
    MK_DANGLING,
    MK_OTHER_REGION,
    MK_MCC,
    MK_NO_MCC,
    MK_ALIVE_UNKNOWN,
    MK_NOT_STATED,
    MK_SURGERY,
    MK_MALFORMED,      /* code-invalid: punctuation or shape that is no code */
    MK_NEWER_UNKNOWN,  /* code-invalid: unknown to the newest table, date after it */
    MK_WHO,            /* code-system: WHO ICD-10 on a US claim */
    MK_UNKNOWN_SYSTEM, /* code-system: an unrecognised system on a spine-shaped code */
    MK_NEWER,          /* table-coverage: date after the newest table */
    MK_OLDER,          /* table-coverage: date before the oldest table */
    MK_SPAN,           /* table-coverage: lines on both sides of a new code set */
    MK_PRINCIPAL,      /* manifestation-first: stated principal */
    MK_FIRST_LISTED,   /* manifestation-first: first by sequence, no principal stated */
    MK_GROUPER,        /* drg-tier: the year's own grouper lists are not available */
    MK_POA_N,          /* drg-tier: the MCC is not present on admission */
    MK_SAME_CONDITION,
    MK_QUERY,
    MK_REGION_OVERLAP,
    MK_LEVELS_DIFFER,
    MK_UNREVIEWED,
    MK_WORKING,      /* excludes1-pair: a working diagnosis beside a final one */
    MK_UNDATED,      /* code-invalid: not in the newest table, in an older one; no date */
    MK_DATES_DIFFER, /* excludes1-pair: the codes' lines are on different days */
    MK_DELETED,      /* code-invalid: a code of an older table, deleted since */
    MK_ACQUIRED,     /* acquired-congenital: a congenital code, text says acquired */
    MK__COUNT
} rule__msgkey_t;

typedef struct {
    bool enabled;
    int index;                     /* position in the pack's rules[], for errors */
    rule_severity_t severity;      /* after policy */
    char *reference;
    char *msg[MK__COUNT];          /* templates, NULL for keys not used */
} rule__rule_t;

/* ---- Excludes1 by meaning (pack keys "region_axes" and "excludes1";
 * docs/excludes1.md). */

/* Where a group of codes keeps its spine region: one character (the 5th,
 * 6th or 7th) read through a digit map, or one region for every code. */
typedef struct {
    rule__ref_t *codes;
    int ncodes;
    int character;                 /* 4 to 7; 0: every code is in region */
    int region;                    /* region index when character == 0 */
    int digit_region[36];          /* by character (0-9, A-Z): region or -1 */
} rule__axis_t;

/* One reviewed row: an Excludes1 note under owner, the owner codes it is
 * applied to, the codes the note really names, and how a pair is judged. */
typedef struct {
    rule__ref_t owner;             /* a code or a section ("M50-M54") */
    char owner_dotted[16];
    char *note;                    /* the tabular text, exactly */
    rule__ref_t *applies;          /* narrowing of the owner side; none: all */
    int napplies;
    rule__ref_t *excl;             /* the codes the note names */
    int nexcl;
    bool same_region;              /* relation "same-region" (else "any") */
    rule_severity_t severity;      /* RULE_SEV_REJECT or RULE_SEV_WARN */
    bool other_region_none;        /* disjoint regions: no finding */
    char *why;
} rule__ex1row_t;

/* Per table: what applies to each code, as items[off[i]..off[i+1]) for
 * codes[i]; an item >= 0 is a row index, an item < 0 is -(note index)-1 for
 * an Excludes1 note that no row reviews (judged from its raw pointers, warn
 * at most). */
typedef struct {
    int32_t *off;
    int32_t *items;
    int16_t *region;               /* per code: rule__pair_region(), precomputed */
} rule__ex1idx_t;

/* The Excludes1 note of t that row r reviews (same owner, same text), or
 * NULL. */
const rule__note_t *rule__excludes_note(const rule__table_t *t, const rule__ex1row_t *r);
/* Builds p->ex1idx for every table (rows and tables already checked). */
void rule__excludes_index(rule_pack_t *p);
/* Excludes1 notes of table ti that no row reviews; *first (may be NULL)
 * gets the first of them. */
size_t rule__excludes_unreviewed(const rule_pack_t *p, size_t ti, const rule__note_t **first);
/* The region of a code for pairs: its axis region, else the table code's
 * description region, else -1. tc (a code of table t) may be NULL. */
int rule__pair_region(const rule_pack_t *p, const rule__table_t *t, const char *code,
                      const rule__code_t *tc);
/* The vertebral levels named by normalised text, one bit per level of the
 * pack's levels[] (C1 = bit 0, ...); 0 when none. */
uint64_t rule__text_levels(const rule__geo_t *g, const char *norm);

/* One diagnosis as the pair finder sees it. */
typedef struct {
    const char *code;              /* normalised */
    const rule__table_t *t;        /* the code set it is judged by */
    const rule__code_t *tc;        /* the valid table code (in t), or NULL */
    bool usable;                   /* judged, and not an invalid spine code */
    const char *norm;              /* normalised free text, or NULL */
} rule__pairdx_t;

/* A pair found: owner's note names other. */
typedef struct {
    int owner, other;              /* indexes into the diagnoses */
    bool excludes2;
    const rule__ex1row_t *row;     /* the reviewed row, or NULL */
    const rule__note_t *note;      /* the raw note when no row */
    rule__msgkey_t mk;
    rule_severity_t severity;      /* after the rule's ceiling (Excludes1) */
    int region_owner, region_other;/* region indexes, -1 none */
    char levels[80];               /* "L3 / L4, L5" when mk is levels_differ */
} rule__pair_t;

/* Finds the Excludes1 (then Excludes2) pairs of a claim in time linear in
 * n: identical codes take part once (the first), codes are indexed by
 * category, and a code's rows look up partners only in the categories
 * they name. emit is called once per pair judged a finding, in owner
 * order; it returns false to stop (the findings cap). Scratch memory comes
 * from a. */
void rule__pairs_find(const rule_pack_t *p, const rule__pairdx_t *dx, size_t n, arena_t *a,
                      bool (*emit)(void *ctx, const rule__pair_t *pr), void *ctx);

typedef struct {
    rule__ref_t *acquired;
    int nacquired;
    char *congenital;              /* dotted suggestion "Q76.2" */
} rule__congenital_t;

typedef struct {
    int junction;                  /* region index */
    unsigned from;                 /* bit set of region indexes */
} rule__junction_t;

struct rule_pack {
    char *describe;
    char *name;
    int version;
    rule__table_t *tables;         /* sorted by validity start */
    size_t ntables;
    char *tables_span;             /* "FY2026 2025-10-01..2026-09-30, ...": for the
                                    * table-coverage finding, made once at load */
    rule__geo_t geo;
    rule__proc_t *procs;
    size_t nprocs;
    rule__rule_t rules[RID__COUNT];
    /* Excludes1 by meaning */
    rule__axis_t *axes;
    int naxes;
    rule__ex1row_t *ex1rows;
    int nex1rows;
    rule__ex1idx_t *ex1idx;        /* one per table */
    /* parameters */
    rule__junction_t *junctions;
    int njunctions;
    rule__congenital_t *congenital;
    int ncongenital;
    char **congenital_words;
    int ncongenital_words;
    char **acquired_words; /* the other way: a congenital code said acquired */
    int nacquired_words;
    char **negations;
    int nnegations;
    bool site_use_text, site_use_codes, site_use_procedures;
    bool drg_first_when_unstated;
    rule_adt_mode_t adt;           /* site policy for ADT messages */
};

/* Placeholders a message template may use ("{code}"). */
typedef enum {
    V_CODE, V_OTHER, V_OWNER, V_NOTE, V_REGION, V_OTHER_REGION, V_SUGGESTION, V_CHARS,
    V_CHAR, V_BASE, V_DESCRIPTION, V_CATEGORY, V_FY, V_SOURCE, V_LINE, V_PROC, V_KIND,
    V_LABEL, V_POINTER, V_MCC, V_DRG, V_DETAIL, V_DATE, V_TABLES,
    V_SENT, V_FORM, V_SYSTEM, V_GROUPER, V_LOCATION, V_BOUNDARY,
    V__COUNT
} rule__var_t;

/* Placeholders one template may hold: the pack loader refuses more, so that
 * the expansion can list a template's pieces on the stack. */
#define RULE__TEMPLATE_MAX_VARS 32

/* The variable named by name[0..n), or -1. */
int rule__var_from(const char *name, size_t n);

const char *rule__var_name(rule__var_t v);

/* Diagnoses the note pairs search looked at, counted up on this thread: the
 * tests bound the search's work by it, which a clock cannot do reliably. */
extern _Thread_local unsigned long rule__partners_visited;

const char *rule__id_name(rule__id_t id);
int rule__id_from(const char *name);
const char *rule__msgkey_name(rule__msgkey_t k);
/* Bit set of the message keys each rule needs. */
uint64_t rule__msgkeys_of(rule__id_t id);

/* Embedded files (rules/embedded.c, generated at build time). */
typedef struct {
    const char *name;
    const unsigned char *data; /* NUL-terminated; len excludes the NUL */
    size_t len;
} rule__embedded_t;
extern const rule__embedded_t rule__embedded_files[];
extern const size_t rule__embedded_count;

/* rule_pack_load() with the pack's JSON from memory (fuzzing, tests). */
err_t rule__pack_load_mem(const char *json, size_t len, const char *tables_path,
                          const rule_policy_t *policy, rule_pack_t **out, err_detail_t *d);

/* Compiles region data of every table against the pack's geography. */
void rule__compile_tables(rule_pack_t *p);

/* The procedure entry for a line's code, or NULL. */
const rule__proc_t *rule__proc_find(const rule_pack_t *p, const claim_line_t *l);

/* The table valid on date (year 0: the newest), or NULL when none is. */
const rule__table_t *rule__table_for_date(const rule_pack_t *p, claim_date_t date);

#endif
