/*  zi_security.c - socket limits, liveness options, CURVE keys and the
    ZAP allow-list; see zi_security.h. */
#include "zi_security.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zi_error.h"
#include "zi_log.h"

struct zi_security_server {
    zcert_t *cert;    //  the broker's key pair
    zactor_t *auth;   //  zauth, CURVE with the allow-list
    char keydir[256]; //  allowed keys as zauth reads them
};

//  ---------------------------------------------------------------------
//  Socket options

int64_t
zi_security_max_message (const zi_plan_t *plan)
{
    return plan && plan->broker.max_message_bytes > 0 ? plan->broker.max_message_bytes
                                                      : ZI_PLAN_DEFAULT_MAX_MESSAGE_BYTES;
}

void
zi_security_socket (zsock_t *sock, const zi_plan_t *plan, bool bound)
{
    int64_t max = zi_security_max_message (plan);
    //  libzmq takes an int64_t; CZMQ's setter only an int.
    zmq_setsockopt (zsock_resolve (sock), ZMQ_MAXMSGSIZE, &max, sizeof max);
    int64_t interval = plan && plan->broker.heartbeat_interval_ms > 0
                           ? plan->broker.heartbeat_interval_ms
                           : ZI_PLAN_DEFAULT_HEARTBEAT_MS;
    int64_t liveness = plan && plan->broker.heartbeat_liveness > 0
                           ? plan->broker.heartbeat_liveness
                           : ZI_PLAN_DEFAULT_LIVENESS;
    int64_t timeout = interval * liveness;
    //  ZMTP PINGs: the only liveness a PUSH/PULL link has below the
    //  protocol's own HEARTBEATs. A TTL tells the peer to drop us too when
    //  our PINGs stop. (libzmq keeps these in 16-bit deciseconds for the
    //  TTL: cap at 6553 s.)
    int ivl = interval > INT32_MAX ? INT32_MAX : (int)interval;
    int tmo = timeout > 6553000 ? 6553000 : (int)timeout;
    zsock_set_heartbeat_ivl (sock, ivl);
    zsock_set_heartbeat_timeout (sock, tmo);
    zsock_set_heartbeat_ttl (sock, tmo);
    zsock_set_handshake_ivl (sock, ZI_SECURITY_HANDSHAKE_MS);
    if (!bound) {
        zsock_set_reconnect_ivl (sock, ZI_SECURITY_RECONNECT_MS);
        zsock_set_reconnect_ivl_max (sock, ZI_SECURITY_RECONNECT_MAX_MS);
    }
}

//  ---------------------------------------------------------------------
//  Key files

int
zi_security_key_path (const zi_plan_t *plan, const char *path, const char *name,
                      char *buf, size_t len, char *err, size_t errlen)
{
    if (!path || !*path) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "no key file named");
    }
    char expanded[4096];
    size_t out = 0;
    static const char token[] = "{name}";
    const size_t ntoken = sizeof token - 1;
    for (const char *p = path; *p;) {
        const char *piece = p;
        size_t n = 1;
        if (strncmp (p, token, ntoken) == 0) {
            if (!name || !*name) {
                return zi_fail (err, errlen, ZI_ERR_INVALID,
                                "key file '%s' has {name} but this process has no name",
                                path);
            }
            piece = name;
            n = strlen (name);
            p += ntoken;
        }
        else {
            p++;
        }
        if (out + n >= sizeof expanded) {
            return zi_fail (err, errlen, ZI_ERR_LIMIT, "key file path '%s' is too long",
                            path);
        }
        memcpy (expanded + out, piece, n);
        out += n;
    }
    expanded[out] = 0;
    if (plan) {
        if (zi_plan_path (plan, expanded, buf, len)) {
            return zi_fail (err, errlen, ZI_ERR_LIMIT, "key file path '%s' is too long",
                            expanded);
        }
    }
    else if (snprintf (buf, len, "%s", expanded) >= (int)len) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT, "key file path '%s' is too long",
                        expanded);
    }
    return ZI_OK;
}

static bool
s_all_zero (const byte *key)
{
    for (int i = 0; i < 32; i++) {
        if (key[i]) {
            return false;
        }
    }
    return true;
}

zcert_t *
zi_security_load_secret (const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat (path, &st) != 0) {
        zi_fail (err, errlen, ZI_ERR_IO, "key file '%s': %s", path, strerror (errno));
        return NULL;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        //  Like ssh: a secret anybody on the host can read is no secret.
        zi_log_error ("SECURITY-KEY-MODE",
                      "%s is readable by group or others (mode %03o)", path,
                      (unsigned)(st.st_mode & 0777));
        zi_fail (err, errlen, ZI_ERR_IO,
                 "key file '%s' is readable by group or others (mode %03o): "
                 "chmod 600 it",
                 path, (unsigned)(st.st_mode & 0777));
        return NULL;
    }
    zcert_t *cert = zcert_load (path);
    if (!cert) {
        zi_fail (err, errlen, ZI_ERR_IO, "key file '%s' is not a CURVE certificate",
                 path);
        return NULL;
    }
    if (s_all_zero (zcert_secret_key (cert))) {
        zcert_destroy (&cert);
        zi_fail (err, errlen, ZI_ERR_INVALID,
                 "key file '%s' holds no secret key (a public .key file? use the "
                 ".key_secret one)",
                 path);
        return NULL;
    }
    return cert;
}

static bool
s_z85_key (const char *key)
{
    uint8_t bin[32];
    return key && strlen (key) == 40 && zmq_z85_decode (bin, key) != NULL;
}

int
zi_security_client_keys (zsock_t *sock, const char *secret_file, const char *server_key,
                         char *err, size_t errlen)
{
    if (!s_z85_key (server_key)) {
        return zi_fail (err, errlen, ZI_ERR_INVALID,
                        "the server's public key is not a 40-character Z85 key");
    }
    if (!secret_file) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "no client key file");
    }
    zcert_t *cert = zi_security_load_secret (secret_file, err, errlen);
    if (!cert) {
        return ZI_ERR_IO;
    }
    zcert_apply (cert, sock);
    zsock_set_curve_serverkey (sock, server_key);
    zcert_destroy (&cert);
    return ZI_OK;
}

int
zi_security_client (zsock_t *sock, const zi_plan_t *plan, const char *name, char *err,
                    size_t errlen)
{
    if (!plan || !plan->security.curve) {
        return ZI_OK;
    }
    const zi_plan_security_t *sec = &plan->security;
    if (!sec->client_secret_file || !sec->server_public_key) {
        return zi_fail (err, errlen, ZI_ERR_INVALID,
                        "security.curve is on but security.%s is not set",
                        !sec->client_secret_file ? "client_secret_file"
                                                 : "server_public_key");
    }
    char path[4096];
    int rc = zi_security_key_path (plan, sec->client_secret_file, name, path, sizeof path,
                                   err, errlen);
    if (rc) {
        return rc;
    }
    return zi_security_client_keys (sock, path, sec->server_public_key, err, errlen);
}

//  ---------------------------------------------------------------------
//  The broker's side

static void
s_keydir_remove (zi_security_server_t *self)
{
    if (!self->keydir[0]) {
        return;
    }
    zdir_t *dir = zdir_new (self->keydir, NULL);
    if (dir) {
        zdir_remove (dir, true);
        zdir_destroy (&dir);
    }
    rmdir (self->keydir);
    self->keydir[0] = 0;
}

void
zi_security_server_destroy (zi_security_server_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_security_server_t *self = *self_p;
    zactor_destroy (&self->auth);
    zcert_destroy (&self->cert);
    s_keydir_remove (self);
    free (self);
    *self_p = NULL;
}

zi_security_server_t *
zi_security_server_new (const zi_plan_t *plan, char *err, size_t errlen)
{
    const zi_plan_security_t *sec = &plan->security;
    if (!sec->curve) {
        zi_fail (err, errlen, ZI_ERR_INVALID, "plan: security.curve is off");
        return NULL;
    }
    zi_security_server_t *self = (zi_security_server_t *)calloc (1, sizeof *self);
    if (!self) {
        zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        return NULL;
    }
    char path[4096];
    if (!sec->server_secret_file
        || zi_security_key_path (plan, sec->server_secret_file, NULL, path, sizeof path,
                                 err, errlen)) {
        if (!sec->server_secret_file) {
            zi_fail (err, errlen, ZI_ERR_INVALID,
                     "plan: security.curve is on but security.server_secret_file "
                     "is not set");
        }
        goto fail;
    }
    self->cert = zi_security_load_secret (path, err, errlen);
    if (!self->cert) {
        goto fail;
    }
    if (sec->server_public_key
        && strcmp (zcert_public_txt (self->cert), sec->server_public_key) != 0) {
        zi_fail (err, errlen, ZI_ERR_INVALID,
                 "security.server_secret_file '%s' holds public key %s, "
                 "not the plan's server_public_key %s",
                 path, zcert_public_txt (self->cert), sec->server_public_key);
        goto fail;
    }
    if (sec->n_allowed_keys == 0) {
        zi_fail (err, errlen, ZI_ERR_INVALID,
                 "plan: security.curve is on but security.allowed_keys is empty");
        goto fail;
    }
    //  zauth reads allowed keys as public certificates in a directory:
    //  write them into a private temporary one.
    const char *tmp = getenv ("TMPDIR");
    snprintf (self->keydir, sizeof self->keydir, "%s/zinfer-broker-keys-XXXXXX",
              tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp (self->keydir)) {
        self->keydir[0] = 0;
        zi_fail (err, errlen, ZI_ERR_IO,
                 "cannot create a directory for the allowed keys: %s", strerror (errno));
        goto fail;
    }
    for (size_t i = 0; i < sec->n_allowed_keys; i++) {
        const char *key = sec->allowed_keys[i];
        uint8_t public_key[32], secret_key[32] = { 0 };
        if (!s_z85_key (key) || !zmq_z85_decode (public_key, key)) {
            zi_fail (err, errlen, ZI_ERR_INVALID,
                     "plan: security.allowed_keys[%zu] is not a Z85 key", i);
            goto fail;
        }
        zcert_t *cert = zcert_new_from (public_key, secret_key);
        char file[512];
        snprintf (file, sizeof file, "%s/key-%zu.txt", self->keydir, i);
        int rc = cert ? zcert_save_public (cert, file) : -1;
        zcert_destroy (&cert);
        if (rc) {
            zi_fail (err, errlen, ZI_ERR_IO, "cannot write %s", file);
            goto fail;
        }
    }
    self->auth = zactor_new (zauth, NULL);
    if (!self->auth) {
        zi_fail (err, errlen, ZI_ERR_NOMEM, "cannot start zauth");
        goto fail;
    }
    //  Configured (and acknowledged) before any socket binds: a CURVE
    //  server without a ZAP handler would admit any client key.
    zstr_sendx (self->auth, "CURVE", self->keydir, NULL);
    zsock_wait (self->auth);
    return self;
fail:
    zi_security_server_destroy (&self);
    return NULL;
}

void
zi_security_server_apply (zi_security_server_t *self, zsock_t *sock)
{
    zcert_apply (self->cert, sock);
    zsock_set_curve_server (sock, 1);
    zsock_set_zap_domain (sock, "zinfer");
}

const char *
zi_security_server_public (const zi_security_server_t *self)
{
    return zcert_public_txt (self->cert);
}

//  ---------------------------------------------------------------------
//  Key generation

static bool
s_valid_name (const char *name)
{
    size_t n = name ? strlen (name) : 0;
    if (n == 0 || n > 64) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
              || c == '.' || c == '_' || c == '-')) {
            return false;
        }
    }
    return strcmp (name, ".") != 0 && strcmp (name, "..") != 0;
}

int
zi_security_keypair_write (const char *dir, const char *name, bool keep,
                           char public_txt[41], char *err, size_t errlen)
{
    if (!s_valid_name (name)) {
        return zi_fail (err, errlen, ZI_ERR_INVALID,
                        "key name '%s': use 1..64 letters, digits, '.', '_' or '-'",
                        name ? name : "");
    }
    char path[4096], secret[4200];
    if (snprintf (path, sizeof path, "%s/%s.key", dir, name) >= (int)sizeof path) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT, "directory name too long");
    }
    snprintf (secret, sizeof secret, "%s_secret", path);
    zcert_t *cert = NULL;
    if (keep && access (secret, F_OK) == 0) {
        cert = zi_security_load_secret (secret, err, errlen);
        if (!cert) {
            return ZI_ERR_IO;
        }
    }
    else {
        cert = zcert_new ();
        if (!cert) {
            return zi_fail (err, errlen, ZI_ERR_NOMEM, "cannot make a key pair");
        }
        zcert_set_meta (cert, "name", "%s", name);
        zcert_set_meta (cert, "made-by", "zinfer keys");
        //  zcert_save writes NAME.key and NAME.key_secret, the secret one
        //  with a private file mode; remove old files first so a stale
        //  mode cannot survive.
        unlink (path);
        unlink (secret);
        if (zcert_save (cert, path) != 0) {
            int e = errno;
            zcert_destroy (&cert);
            return zi_fail (err, errlen, ZI_ERR_IO, "cannot write %s: %s", path,
                            strerror (e));
        }
        chmod (secret, 0600);
    }
    snprintf (public_txt, 41, "%s", zcert_public_txt (cert));
    zcert_destroy (&cert);
    return ZI_OK;
}
