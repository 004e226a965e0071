/* fuzz_adminreq.c - what the daemon's admin socket reads (app/adminsock.c):
 * a 4-byte length, that much JSON, then a message; the JSON is checked by
 * admin_req_from_json. A request is either refused with a reason or taken
 * with every member within its limits. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "admincmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    size_t hlen = (size_t)data[0] << 24 | (size_t)data[1] << 16 | (size_t)data[2] << 8 | data[3];
    if (hlen > ADMIN_REQ_MAX || hlen > size - 4)
        return 0;
    cJSON *o = cJSON_ParseWithLength((const char *)data + 4, hlen);
    if (!o)
        return 0;
    admin_req_t r;
    char why[160];
    why[0] = '\0';
    if (admin_req_from_json(o, &r, why, sizeof why)) {
        assert(r.op < ADMIN__COUNT);
        assert(r.op != ADMIN_SHOW || r.nids == 1);
        assert(!r.note || strlen(r.note) <= 4096);
        for (size_t i = 0; i < r.nids; i++)
            assert(r.ids[i] > 0);
        admin_req_free(&r);
    } else {
        assert(why[0]);
    }
    cJSON_Delete(o);
    return 0;
}
