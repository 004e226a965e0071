/* placeholder while the backend is written */
#include "queue_int.h"
err_t queue__pg_open(uv_loop_t *loop, const queue_opts_t *opts, queue_t **out, err_detail_t *d)
{
    (void)loop; (void)opts;
    *out = NULL;
    return err_set(d, ERR_BAD_CONFIG, 0, "queue: postgres not built yet");
}
