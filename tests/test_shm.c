/*  test_shm.c - shared-memory arenas (zi_shm) and shared-memory tensors in
    messages (zi_msg): blocks allocated, resolved, released and reused;
    stale and forged references refused with the reason; a full arena
    makes the sender fall back to inline bytes; the broker-side holder
    releases a block only when the last message sharing it is gone;
    arenas of dead processes are swept.
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zi_msg.h"
#include "zi_shm.h"

static bool
s_exists (const char *name)
{
    char path[128];
    snprintf (path, sizeof path, "/dev/shm/%s", name);
    return access (path, F_OK) == 0;
}

Test (shm, blocks_are_resolved_released_and_reused_with_a_new_generation)
{
    char err[256];
    zi_shm_arena_t *a = zi_shm_arena_new (1 << 20, err, sizeof err);
    cr_assert_not_null (a, "%s", err);
    cr_assert (s_exists (zi_shm_arena_name (a)));
    zi_shm_ref_t r1;
    float *p = (float *) zi_shm_alloc (a, 64 << 10, &r1);
    cr_assert_not_null (p);
    cr_assert_eq ((uintptr_t) p % 64, 0, "data is 64-byte aligned");
    for (int i = 0; i < (64 << 10) / 4; i++) {
        p[i] = (float) i;
    }
    //  A reader maps the arena by name and sees the bytes.
    const float *q = (const float *) zi_shm_resolve (&r1, 64 << 10, err, sizeof err);
    cr_assert_not_null (q, "%s", err);
    cr_assert_neq ((const void *) q, (const void *) p, "a second mapping, as in another process");
    cr_assert_eq (memcmp (p, q, 64 << 10), 0);
    //  Size must match the block.
    cr_assert_null (zi_shm_resolve (&r1, 32 << 10, err, sizeof err));
    cr_assert (strstr (err, "stale reference"), "%s", err);
    cr_assert_eq (zi_shm_arena_used (a, NULL), 1);
    zi_shm_release (&r1);
    cr_assert_null (zi_shm_resolve (&r1, 64 << 10, err, sizeof err), "a released block resolves");
    cr_assert (strstr (err, "not in use"), "%s", err);
    zi_shm_release (&r1);       //  twice: no effect
    cr_assert_eq (zi_shm_arena_used (a, NULL), 0);
    //  The space comes back, with a new generation: the old reference stays stale.
    zi_shm_ref_t r2;
    cr_assert_not_null (zi_shm_alloc (a, 64 << 10, &r2));
    cr_assert_eq (r2.offset, r1.offset, "the released block's place is reused");
    cr_assert_neq (r2.gen, r1.gen);
    cr_assert_null (zi_shm_resolve (&r1, 64 << 10, err, sizeof err));
    cr_assert_not_null (zi_shm_resolve (&r2, 64 << 10, err, sizeof err), "%s", err);
    //  Small tensors are not worth a block: inline.
    cr_assert_null (zi_shm_alloc (a, 1000, &r1));
    char name[ZI_SHM_NAME_MAX];
    snprintf (name, sizeof name, "%s", zi_shm_arena_name (a));
    zi_shm_arena_destroy (&a);
    cr_assert (!s_exists (name), "the arena file outlives its owner");
}

Test (shm, the_producer_frees_its_own_blocks)
{
    //  A client's request inputs: nobody else releases them (the broker
    //  only reads them with broker.client_shm); the client does.
    char err[256];
    zi_shm_arena_t *a = zi_shm_arena_new (1 << 20, err, sizeof err);
    zi_shm_arena_t *b = zi_shm_arena_new (1 << 20, err, sizeof err);
    cr_assert (a && b, "%s", err);
    zi_shm_ref_t r, other;
    cr_assert_not_null (zi_shm_alloc (a, 64 << 10, &r));
    cr_assert_not_null (zi_shm_alloc (b, 64 << 10, &other));
    zi_shm_free (a, &other);                //  not a's block: ignored
    cr_assert_eq (zi_shm_arena_used (b, NULL), 1);
    zi_shm_ref_t stale = r;
    stale.gen++;
    zi_shm_free (a, &stale);                //  another generation: ignored
    cr_assert_eq (zi_shm_arena_used (a, NULL), 1);
    zi_shm_free (a, &r);
    cr_assert_eq (zi_shm_arena_used (a, NULL), 0);
    cr_assert_null (zi_shm_resolve (&r, 64 << 10, err, sizeof err), "a freed block resolves");
    zi_shm_arena_destroy (&a);
    zi_shm_arena_destroy (&b);
}

Test (shm, a_reader_maps_more_arenas_than_its_table_when_old_ones_are_idle)
{
    //  Every client of a broker with client_shm has an arena of its own:
    //  over a broker's life far more than the 256 it keeps mapped at once.
    //  Mappings nothing holds make room (their owners gone first).
    char err[256];
    for (int i = 0; i < 300; i++) {
        zi_shm_arena_t *a = zi_shm_arena_new (1 << 20, err, sizeof err);
        cr_assert_not_null (a, "arena %d: %s", i, err);
        zi_shm_ref_t r;
        cr_assert_not_null (zi_shm_alloc (a, 64 << 10, &r));
        cr_assert_not_null (zi_shm_resolve (&r, 64 << 10, err, sizeof err), "arena %d: %s", i,
                            err);
        zi_shm_arena_destroy (&a);
    }
    //  A held mapping is never taken: a message keeps its bytes readable.
    zi_shm_arena_t *kept = zi_shm_arena_new (1 << 20, err, sizeof err);
    zi_shm_ref_t kr;
    float *p = (float *) zi_shm_alloc (kept, 64 << 10, &kr);
    p[0] = 42.0f;
    const float *q = (const float *) zi_shm_resolve (&kr, 64 << 10, err, sizeof err);
    cr_assert_not_null (q, "%s", err);
    void *hold = zi_shm_handle_new (&kr, false);
    cr_assert_not_null (hold);
    for (int i = 0; i < 300; i++) {
        zi_shm_arena_t *a = zi_shm_arena_new (1 << 20, err, sizeof err);
        zi_shm_ref_t r;
        cr_assert_not_null (zi_shm_alloc (a, 64 << 10, &r));
        cr_assert_not_null (zi_shm_resolve (&r, 64 << 10, err, sizeof err), "%s", err);
        zi_shm_arena_destroy (&a);
    }
    cr_assert_eq (q[0], 42.0f, "a held mapping was unmapped");
    zi_shm_handle_free ((void *) q, hold);
    zi_shm_arena_destroy (&kept);
}

Test (shm, a_full_arena_gives_null_and_reuses_any_released_block)
{
    char err[256];
    zi_shm_arena_t *a = zi_shm_arena_new (1 << 20, err, sizeof err);
    cr_assert_not_null (a, "%s", err);
    zi_shm_ref_t r[32];
    int n = 0;
    while (n < 32 && zi_shm_alloc (a, 100 << 10, &r[n])) {
        n++;
    }
    cr_assert (n >= 8 && n < 11, "%d blocks of 100 KB in 1 MiB", n);
    zi_shm_ref_t extra, big;
    cr_assert_null (zi_shm_alloc (a, 100 << 10, &extra), "the full arena handed out a block");
    //  A block never released (its broker was killed holding it) does not
    //  stop the others from being reused: first fit, lowest address first.
    zi_shm_release (&r[3]);
    cr_assert_not_null (zi_shm_alloc (a, 100 << 10, &extra));
    cr_assert_eq (extra.offset, r[3].offset);
    //  Neighbours released are merged for a larger tensor.
    cr_assert_null (zi_shm_alloc (a, 200 << 10, &big));
    zi_shm_release (&r[5]);
    zi_shm_release (&r[6]);
    cr_assert_not_null (zi_shm_alloc (a, 200 << 10, &big));
    cr_assert_eq (big.offset, r[5].offset);
    //  What is left of a merged block after a smaller one stays usable.
    zi_shm_release (&big);
    zi_shm_ref_t small;
    cr_assert_not_null (zi_shm_alloc (a, 50 << 10, &small));
    cr_assert_eq (small.offset, r[5].offset);
    cr_assert_not_null (zi_shm_alloc (a, 100 << 10, &big), "the rest of the merged block");
    cr_assert_gt (big.offset, small.offset);
    cr_assert_lt (big.offset, r[7].offset);
    size_t bytes;
    cr_assert_eq (zi_shm_arena_used (a, &bytes), (size_t) n);
    zi_shm_arena_destroy (&a);
}

Test (shm, forged_references_are_refused_with_the_reason)
{
    char err[256];
    zi_shm_arena_t *a = zi_shm_arena_new (1 << 20, err, sizeof err);
    cr_assert_not_null (a, "%s", err);
    zi_shm_ref_t good;
    cr_assert_not_null (zi_shm_alloc (a, 64 << 10, &good));
    struct {
        const char *name;
        uint64_t offset;
        const char *why;
    } bad[] = {
        {"../../etc/passwd", 4096, "not an arena name"},
        {"zinfer-1", 4096, "not an arena name"},
        {"zinfer-12-x", 4096, "not an arena name"},
        {"zinfer-999999-1", 4096, "arena zinfer-999999-1"},
        {NULL, 4097, "outside the arena"},
        {NULL, 64, "outside the arena"},
        {NULL, (uint64_t) 1 << 40, "outside the arena"},
        {NULL, 4096 + 64 * 1024 + 128, "not in use"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        zi_shm_ref_t r = good;
        if (bad[i].name) {
            snprintf (r.name, sizeof r.name, "%s", bad[i].name);
        }
        r.offset = bad[i].offset;
        cr_assert_null (zi_shm_resolve (&r, 64 << 10, err, sizeof err), "case %zu resolved", i);
        cr_assert (strstr (err, bad[i].why), "case %zu: %s", i, err);
        zi_shm_release (&r);    //  never crashes, never frees the good block
    }
    zi_shm_ref_t r = good;
    r.gen++;
    cr_assert_null (zi_shm_resolve (&r, 64 << 10, err, sizeof err));
    cr_assert (strstr (err, "stale reference"), "%s", err);
    zi_shm_release (&r);
    cr_assert_not_null (zi_shm_resolve (&good, 64 << 10, err, sizeof err), "%s", err);
    zi_shm_arena_destroy (&a);
}

//  A RESULT as an exec worker sends it: one cut tensor in its arena.
static zi_msg_t *
s_result (zi_shm_arena_t *a, zi_shm_ref_t *ref, float first)
{
    int64_t shape[2] = {64, 256};
    float *p = (float *) zi_shm_alloc (a, 64 * 256 * 4, ref);
    cr_assert_not_null (p);
    for (int i = 0; i < 64 * 256; i++) {
        p[i] = first + (float) i;
    }
    zi_msg_t *m = zi_msg_new (ZI_CMD_RESULT);
    zi_msg_set_id (m, 7);
    zi_msg_set_seg (m, 0);
    cr_assert_eq (zi_msg_add_tensor_shm (m, "h", ZI_DT_F32, 2, shape, p, ref, false), 0);
    return m;
}

Test (shm, messages_carry_references_and_the_holder_releases_the_last_copy)
{
    char err[256];
    zi_shm_arena_t *a = zi_shm_arena_new (1 << 20, err, sizeof err);
    cr_assert_not_null (a, "%s", err);
    zsock_t *out = zsock_new_push ("inproc://shm-test");
    zsock_t *in = zsock_new_pull ("inproc://shm-test");
    cr_assert (out && in);

    //  Without shm_out the bytes go inline: any receiver reads them.
    zi_shm_ref_t ref;
    zi_msg_t *m = s_result (a, &ref, 1.0f);
    cr_assert_eq (zi_msg_send (&m, out), 0);
    zi_msg_t *got = NULL;
    cr_assert_eq (zi_msg_recv (in, &got, err, sizeof err), 0, "%s", err);
    cr_assert (!zi_msg_tensor_shm (got, 0));
    cr_assert_eq (((const float *) zi_msg_tensor (got, 0)->data)[5], 6.0f);
    zi_msg_destroy (&got);
    zi_shm_release (&ref);

    //  With shm_out: a reference, refused where none is accepted ...
    m = s_result (a, &ref, 2.0f);
    zi_msg_set_shm_out (m, true);
    cr_assert_eq (zi_msg_send (&m, out), 0);
    cr_assert_neq (zi_msg_recv (in, &got, err, sizeof err), 0);
    cr_assert (strstr (err, "not accepted here"), "%s", err);
    zi_shm_release (&ref);      //  nobody took it (a misconfigured receiver)
    //  ... read in place where accepted (a consumer: it does not release).
    m = s_result (a, &ref, 3.0f);
    zi_msg_set_shm_out (m, true);
    cr_assert_eq (zi_msg_send (&m, out), 0);
    zi_shm_accept_begin (false);
    cr_assert_eq (zi_msg_recv (in, &got, err, sizeof err), 0, "%s", err);
    zi_shm_accept_end ();
    cr_assert (zi_msg_tensor_shm (got, 0));
    cr_assert_eq (((const float *) zi_msg_tensor (got, 0)->data)[5], 8.0f);
    zi_msg_destroy (&got);
    cr_assert_not_null (zi_shm_resolve (&ref, 64 * 256 * 4, err, sizeof err),
                        "a consumer released the producer's block");
    zi_shm_release (&ref);

    //  The broker holds it (own): a message built from it shares the block,
    //  which is released only when both are gone.
    m = s_result (a, &ref, 4.0f);
    zi_msg_set_shm_out (m, true);
    cr_assert_eq (zi_msg_send (&m, out), 0);
    zi_shm_accept_begin (true);
    cr_assert_eq (zi_msg_recv (in, &got, err, sizeof err), 0, "%s", err);
    zi_shm_accept_end ();
    zi_msg_t *task = zi_msg_new (ZI_CMD_TASK);
    zi_msg_set_id (task, 9);
    zi_msg_set_seg (task, 1);
    zi_msg_add_req (task, 1, 0, 64);
    zi_msg_set_mb (task, 0, 1);
    cr_assert_eq (zi_msg_add_tensor_ref (task, "h", got, 0), 0);
    cr_assert (zi_msg_tensor_shm (task, 0));
    //  Sent on as a reference to the next worker while the broker keeps
    //  the RESULT (for a re-dispatch): the TASK's own hold goes with it.
    zi_msg_set_shm_out (task, true);
    cr_assert_eq (zi_msg_send (&task, out), 0);
    zi_msg_t *next = NULL;
    zi_shm_accept_begin (false);
    cr_assert_eq (zi_msg_recv (in, &next, err, sizeof err), 0, "%s", err);
    zi_shm_accept_end ();
    cr_assert_eq (((const float *) zi_msg_tensor (next, 0)->data)[5], 9.0f);
    zi_msg_destroy (&next);
    cr_assert_not_null (zi_shm_resolve (&ref, 64 * 256 * 4, err, sizeof err),
                        "released while the broker still holds it: %s", err);
    //  A second copy of the TASK (a re-dispatch) shares it too; the block
    //  goes when the broker's RESULT and every copy are gone.
    task = zi_msg_new (ZI_CMD_TASK);
    zi_msg_set_id (task, 9);
    zi_msg_set_seg (task, 1);
    zi_msg_add_req (task, 1, 0, 64);
    zi_msg_set_mb (task, 0, 1);
    cr_assert_eq (zi_msg_add_tensor_ref (task, "h", got, 0), 0);
    zi_msg_destroy (&got);
    cr_assert_not_null (zi_shm_resolve (&ref, 64 * 256 * 4, err, sizeof err),
                        "released while a message still shares it: %s", err);
    zi_msg_destroy (&task);
    cr_assert_null (zi_shm_resolve (&ref, 64 * 256 * 4, err, sizeof err),
                    "the broker's last holder is gone and the block is still in use");

    //  A reference whose block was released is refused on arrival.
    m = s_result (a, &ref, 5.0f);
    zi_msg_set_shm_out (m, true);
    zi_shm_release (&ref);
    cr_assert_eq (zi_msg_send (&m, out), 0);
    zi_shm_accept_begin (true);
    cr_assert_neq (zi_msg_recv (in, &got, err, sizeof err), 0);
    zi_shm_accept_end ();
    cr_assert (strstr (err, "stale reference"), "%s", err);
    cr_assert_eq (zi_shm_arena_used (a, NULL), 0);
    zsock_destroy (&out);
    zsock_destroy (&in);
    zi_shm_arena_destroy (&a);
}

Test (shm, arenas_of_dead_processes_are_swept)
{
    int fds[2];
    cr_assert_eq (pipe (fds), 0);
    pid_t pid = fork ();
    cr_assert_geq (pid, 0);
    if (pid == 0) {
        char err[256];
        zi_shm_arena_t *a = zi_shm_arena_new (1 << 20, err, sizeof err);
        char name[ZI_SHM_NAME_MAX] = "";
        if (a) {
            snprintf (name, sizeof name, "%s", zi_shm_arena_name (a));
        }
        if (write (fds[1], name, sizeof name) != (ssize_t) sizeof name) {
            _exit (2);
        }
        _exit (0);      //  "crashes": the arena is left behind
    }
    close (fds[1]);
    char name[ZI_SHM_NAME_MAX];
    cr_assert_eq (read (fds[0], name, sizeof name), (ssize_t) sizeof name);
    close (fds[0]);
    int status;
    cr_assert_eq (waitpid (pid, &status, 0), pid);
    cr_assert (name[0] && s_exists (name), "the child made no arena");
    //  A live process's arena is kept.
    char err[256];
    zi_shm_arena_t *mine = zi_shm_arena_new (1 << 20, err, sizeof err);
    cr_assert_not_null (mine, "%s", err);
    cr_assert_geq (zi_shm_sweep (), 1);
    cr_assert (!s_exists (name), "the dead process's arena is still there");
    cr_assert (s_exists (zi_shm_arena_name (mine)));
    zi_shm_arena_destroy (&mine);
}
