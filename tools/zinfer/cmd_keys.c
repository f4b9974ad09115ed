/*  zinfer keys - make CURVE certificates for a pipeline.

        zinfer keys DIR [--name NAME]... [--plan PLAN] [--force]

    Writes DIR/broker.key (public key only) and DIR/broker.key_secret (both
    keys, mode 0600) for the broker, and one such pair per NAME for the
    other processes: by default one pair called "peer" that every process
    shares; with --plan and no --name, one pair per process of the plan
    (each exec and stage replica) plus "client" for clients, and the plan
    names its key file "DIR/{name}.key_secret" (zi_security.h: "{name}"
    becomes each process's replica name). Pairs that exist are kept (so a
    name can be added later) unless --force.

    Prints each name with its Z85 public key, then the plan's "security"
    section; with --plan it writes that section into the plan file (and
    nothing else changes). Exit status 0, 1 when a file cannot be written,
    2 on a usage error.
*/
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "zi_plan.h"
#include "zi_security.h"
#include "zinfer.h"

#define S_MAX_NAMES 4096

static void
s_usage (FILE *out)
{
    fprintf (
        out,
        "usage: zinfer keys DIR [--name NAME]... [--plan PLAN] [--force]\n"
        "\n"
        "Makes CURVE certificates (zcert files): DIR/broker.key (public) and\n"
        "DIR/broker.key_secret (both keys, mode 0600) for the broker, and a pair per\n"
        "NAME for the other processes (default: one pair \"peer\" they all share).\n"
        "Prints the Z85 public keys and the plan's \"security\" section.\n"
        "\n"
        "  --name NAME   a key pair for NAME (repeat). NAME is a process's replica\n"
        "                name when the plan names its key file DIR/{name}.key_secret\n"
        "  --plan PLAN   write the security section into PLAN (curve on, the\n"
        "                broker's key, every NAME's public key allowed). Without\n"
        "                --name: one pair per process of the plan, plus \"client\"\n"
        "  --force       make new pairs even where DIR already has them\n"
        "  -h, --help    show this help\n");
}

typedef struct {
    const char *names[S_MAX_NAMES];
    size_t n;
} s_names_t;

static int
s_add_name (s_names_t *names, const char *name)
{
    for (size_t i = 0; i < names->n; i++) {
        if (strcmp (names->names[i], name) == 0) {
            return 0;
        }
    }
    if (names->n >= S_MAX_NAMES) {
        fprintf (stderr, "zinfer keys: more than %d names\n", S_MAX_NAMES);
        return -1;
    }
    names->names[names->n++] = name;
    return 0;
}

//  Every process of the plan that connects to the broker, plus clients.
static int
s_plan_names (const zi_plan_t *plan, s_names_t *names)
{
    for (size_t s = 0; s < plan->n_segments; s++) {
        for (size_t r = 0; r < plan->segments[s].n_replicas; r++) {
            if (s_add_name (names, plan->segments[s].replicas[r].name)) {
                return -1;
            }
        }
    }
    for (size_t s = 0; s < plan->n_stages; s++) {
        for (size_t r = 0; r < plan->stages[s].n_replicas; r++) {
            if (s_add_name (names, plan->stages[s].replicas[r].name)) {
                return -1;
            }
        }
    }
    return s_add_name (names, ZI_SECURITY_CLIENT_NAME);
}

static void
s_json_str (const char *s)
{
    putchar ('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            putchar ('\\');
        }
        putchar (*s);
    }
    putchar ('"');
}

int
zi_cmd_keys (int argc, char **argv)
{
    const char *dir = NULL, *plan_path = NULL;
    bool force = false;
    s_names_t *names = (s_names_t *)calloc (1, sizeof *names);
    if (!names) {
        fprintf (stderr, "zinfer keys: out of memory\n");
        return 1;
    }
    int status = 2;
    zi_plan_t *plan = NULL;
    char (*publics)[41] = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp (a, "-h") == 0 || strcmp (a, "--help") == 0) {
            s_usage (stdout);
            status = 0;
            goto done;
        }
        if (strcmp (a, "--force") == 0) {
            force = true;
        }
        else if (strcmp (a, "--name") == 0 || strcmp (a, "--plan") == 0) {
            if (i + 1 >= argc) {
                fprintf (stderr, "zinfer keys: %s needs a value (try --help)\n", a);
                goto done;
            }
            if (a[2] == 'n') {
                if (s_add_name (names, argv[++i])) {
                    goto done;
                }
            }
            else {
                plan_path = argv[++i];
            }
        }
        else if (a[0] == '-') {
            fprintf (stderr, "zinfer keys: unknown option '%s' (try --help)\n", a);
            goto done;
        }
        else if (!dir) {
            dir = a;
        }
        else {
            fprintf (stderr, "zinfer keys: one directory only ('%s' and '%s')\n", dir, a);
            goto done;
        }
    }
    if (!dir) {
        fprintf (stderr, "zinfer keys: which directory? (try --help)\n");
        goto done;
    }
    char err[1024];
    if (plan_path) {
        plan = zi_plan_load (plan_path, err, sizeof err);
        if (!plan) {
            fprintf (stderr, "zinfer keys: %s\n", err);
            goto done;
        }
    }
    bool per_process = plan && names->n == 0;
    if (per_process && s_plan_names (plan, names)) {
        goto done;
    }
    if (names->n == 0) {
        s_add_name (names, "peer");
    }
    for (size_t i = 0; i < names->n; i++) {
        if (strcmp (names->names[i], "broker") == 0) {
            fprintf (stderr, "zinfer keys: 'broker' is the broker's own pair: choose "
                             "another name\n");
            goto done;
        }
    }
    status = 1;
    if (mkdir (dir, 0700) != 0 && errno != EEXIST) {
        fprintf (stderr, "zinfer keys: cannot create %s: %s\n", dir, strerror (errno));
        goto done;
    }
    //  The plan is read on other hosts and from other directories: name
    //  the key files by absolute path.
    char absdir[PATH_MAX];
    if (!realpath (dir, absdir)) {
        fprintf (stderr, "zinfer keys: %s: %s\n", dir, strerror (errno));
        goto done;
    }
    char server[41];
    if (zi_security_keypair_write (absdir, "broker", !force, server, err, sizeof err)) {
        fprintf (stderr, "zinfer keys: %s\n", err);
        goto done;
    }
    publics = (char (*)[41])calloc (names->n, sizeof *publics);
    if (!publics) {
        fprintf (stderr, "zinfer keys: out of memory\n");
        goto done;
    }
    for (size_t i = 0; i < names->n; i++) {
        if (zi_security_keypair_write (absdir, names->names[i], !force, publics[i], err,
                                       sizeof err)) {
            fprintf (stderr, "zinfer keys: %s\n", err);
            goto done;
        }
    }
    printf ("%-24s %s  %s/broker.key_secret\n", "broker (server)", server, absdir);
    for (size_t i = 0; i < names->n; i++) {
        printf ("%-24s %s  %s/%s.key_secret\n", names->names[i], publics[i], absdir,
                names->names[i]);
    }
    char client_file[PATH_MAX + 80], server_file[PATH_MAX + 32];
    snprintf (server_file, sizeof server_file, "%s/broker.key_secret", absdir);
    if (names->n == 1) {
        snprintf (client_file, sizeof client_file, "%s/%s.key_secret", absdir,
                  names->names[0]);
    }
    else {
        snprintf (client_file, sizeof client_file, "%s/{name}.key_secret", absdir);
    }
    printf ("\n\"security\": {\n  \"curve\": true,\n  \"server_public_key\": ");
    s_json_str (server);
    printf (",\n  \"server_secret_file\": ");
    s_json_str (server_file);
    printf (",\n  \"client_secret_file\": ");
    s_json_str (client_file);
    printf (",\n  \"allowed_keys\": [");
    for (size_t i = 0; i < names->n; i++) {
        printf ("%s\n    ", i ? "," : "");
        s_json_str (publics[i]);
    }
    printf ("\n  ]\n}\n");
    if (names->n > 1 && !per_process) {
        printf ("(client_secret_file names DIR/{name}.key_secret: each process loads the "
                "pair of its replica name, clients the pair \"client\")\n");
    }
    if (plan) {
        zi_plan_security_t *sec = &plan->security;
        free (sec->server_public_key);
        free (sec->server_secret_file);
        free (sec->client_secret_file);
        for (size_t i = 0; i < sec->n_allowed_keys; i++) {
            free (sec->allowed_keys[i]);
        }
        free (sec->allowed_keys);
        sec->curve = true;
        sec->server_public_key = strdup (server);
        sec->server_secret_file = strdup (server_file);
        sec->client_secret_file = strdup (client_file);
        sec->allowed_keys = (char **)calloc (names->n, sizeof *sec->allowed_keys);
        sec->n_allowed_keys = 0;
        for (size_t i = 0; sec->allowed_keys && i < names->n; i++) {
            sec->allowed_keys[sec->n_allowed_keys++] = strdup (publics[i]);
        }
        if (zi_plan_write (plan, plan_path, err, sizeof err)) {
            fprintf (stderr, "zinfer keys: %s\n", err);
            goto done;
        }
        printf ("wrote the security section into %s\n", plan_path);
    }
    status = 0;
done:
    free (publics);
    zi_plan_destroy (&plan);
    free (names);
    return status;
}
