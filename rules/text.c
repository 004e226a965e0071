/* text.c - reading spine regions out of words: a code's description in the
 * table ("Spondylolysis, thoracic region") and a diagnosis's free text
 * ("pars defect T12-L1"). Text is normalised once (upper case, one space
 * between words) so that phrase search is a plain strstr on " WORD " and
 * "T12-L1", "T12/L1" and "T12–L1" all read the same. Pure functions; the
 * caller owns every buffer.
 */
#include <ctype.h>
#include <string.h>

#include "rules_int.h"

size_t rule__text_norm(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    bool space = true;
    if (cap < 3) {
        if (cap)
            out[0] = '\0';
        return 0;
    }
    out[n++] = ' ';
    for (const unsigned char *p = (const unsigned char *)in; p && *p && n + 2 < cap; p++) {
        if (isalnum(*p) && *p < 0x80) {
            out[n++] = (char)toupper(*p);
            space = false;
        } else if (!space) {
            out[n++] = ' ';
            space = true;
        }
    }
    if (!space)
        out[n++] = ' ';
    out[n] = '\0';
    return n;
}

static bool is_stop(const rule__geo_t *g, const char *w, size_t n)
{
    for (int i = 0; i < g->nstop; i++) {
        /* stop words are stored normalised: " WEIGHTED " */
        const char *s = g->stop_after[i] + 1;
        size_t sl = strlen(s) - 1;
        if (sl == n && memcmp(s, w, n) == 0)
            return true;
    }
    return false;
}

/* Reads the vertebral levels in one word ("T12", "L5S1") into segment bits.
 * Returns 0 when the word is not made of levels only. */
static unsigned word_levels(const rule__geo_t *g, const char *w, size_t n)
{
    unsigned seg = 0;
    size_t i = 0;
    while (i < n) {
        char letter = w[i++];
        int v = 0, digits = 0;
        while (i < n && isdigit((unsigned char)w[i]) && digits < 2) {
            v = v * 10 + (w[i++] - '0');
            digits++;
        }
        if (!digits)
            return 0;
        const rule__level_t *lv = NULL;
        for (int k = 0; k < g->nlevels; k++)
            if (g->levels[k].letter == letter && v >= g->levels[k].from && v <= g->levels[k].to)
                lv = &g->levels[k];
        if (!lv)
            return 0;
        seg |= lv->segment;
    }
    return seg;
}

static int region_of_segments(const rule__geo_t *g, unsigned seg)
{
    for (int i = 0; i < g->nregions; i++)
        if (g->regions[i].kind == REGION_SPECIFIC && g->regions[i].segments == seg)
            return i;
    return -1;
}

uint32_t rule__text_regions(const rule__geo_t *g, const char *norm, bool description)
{
    uint32_t set = 0;
    for (int i = 0; i < g->nregions && i < 32; i++) {
        const rule__region_t *r = &g->regions[i];
        char *const *ph = description ? r->desc : r->text;
        int nph = description ? r->ndesc : r->ntext;
        for (int k = 0; k < nph; k++)
            if (strstr(norm, ph[k])) {
                set |= 1u << i;
                break;
            }
    }
    /* Levels: the segments named by level words make one region ("T12 L1"
     * is thoracic + lumbar = thoracolumbar). */
    unsigned seg = 0;
    const char *p = norm;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *w = p;
        while (*p && *p != ' ')
            p++;
        size_t n = (size_t)(p - w);
        if (n < 2 || !strchr("CTLS", w[0]) || !isdigit((unsigned char)w[1]))
            continue;
        unsigned s = word_levels(g, w, n);
        if (!s)
            continue;
        const char *nx = p;
        while (*nx == ' ')
            nx++;
        const char *ne = nx;
        while (*ne && *ne != ' ')
            ne++;
        if (ne > nx && is_stop(g, nx, (size_t)(ne - nx)))
            continue; /* "T2 weighted": an MRI sequence, not a vertebra */
        seg |= s;
    }
    if (seg) {
        int r = region_of_segments(g, seg);
        if (r >= 0 && r < 32)
            set |= 1u << r;
    }
    return set;
}

int rule__desc_region(const rule__geo_t *g, const char *desc)
{
    char norm[RULE_TEXT_MAX];
    rule__text_norm(desc, norm, sizeof norm);
    uint32_t set = rule__text_regions(g, norm, true);
    if (!set)
        return -1;
    int specific = -1, nspecific = 0, other = -1;
    unsigned seg = 0;
    for (int i = 0; i < g->nregions && i < 32; i++) {
        if (!(set & (1u << i)))
            continue;
        if (g->regions[i].kind == REGION_SPECIFIC) {
            specific = i;
            nspecific++;
            seg |= g->regions[i].segments;
        } else if (other < 0) {
            other = i;
        }
    }
    /* A named region wins over "unspecified" ("unspecified cervical
     * region" is cervical); several named regions combine by segments. */
    if (nspecific == 1)
        return specific;
    if (nspecific > 1)
        return region_of_segments(g, seg);
    return other;
}

bool rule__text_has_word(const char *norm, const char *word, char *const *neg, int nneg)
{
    size_t wl = strlen(word);
    for (const char *p = strstr(norm, word); p; p = strstr(p + 1, word)) {
        bool negated = false;
        for (int i = 0; i < nneg && !negated; i++) {
            size_t nl = strlen(neg[i]); /* " NOT " */
            /* word starts with its own space, so the negation ends at p+1 */
            if ((size_t)(p + 1 - norm) >= nl && memcmp(p + 1 - nl, neg[i], nl) == 0)
                negated = true;
        }
        if (!negated)
            return true;
        (void)wl;
    }
    return false;
}
