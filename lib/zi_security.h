/*  zi_security.h - what every socket of a zinfer pipeline gets: limits,
    liveness options and, when the plan turns CURVE on, its keys.

    One place decides how a socket is hardened, so the broker, the exec
    workers, the stages and the clients cannot drift apart:

        zsock_t *sock = zsock_new (ZMQ_DEALER);
        zi_security_socket (sock, plan, false);     //  limits + liveness
        if (zi_security_client (sock, plan, "s0r1", err, sizeof err)) {
            ...                                     //  key file missing
        }
        zsock_connect (sock, "%s", endpoint);

    and on the broker, before any socket binds:

        zi_security_server_t *server = zi_security_server_new (plan, err, sizeof err);
        zi_security_socket (sock, plan, true);
        zi_security_server_apply (server, sock);    //  CURVE server + ZAP
        zsock_bind (sock, "%s", endpoint);

    CURVE (plan security.curve): the broker's key pair comes from
    server_secret_file; a zauth actor (ZeroMQ's ZAP, RFC 27) admits only
    the public keys in allowed_keys, on every socket the broker binds, so
    an unknown key, a peer that expects another server key and a peer
    without CURVE (the NULL mechanism) all fail the handshake before a
    single message is delivered. Every other process loads its key pair
    from client_secret_file; a "{name}" in that path is replaced by the
    process's replica name ("client" for clients), so one plan can give
    each process its own certificate: "keys/{name}.key_secret".

    Key files are zcert files (ZPL text): NAME.key holds the public key
    only, NAME.key_secret both keys; zi_security_keypair_write makes them
    (the secret one with mode 0600). A secret file readable by group or
    others is refused (SECURITY-KEY-MODE), as ssh refuses such keys.

    Socket options (zi_security_socket): ZMQ_MAXMSGSIZE from the plan (a
    frame over it makes libzmq drop the connection before the frame is
    stored); ZMTP heartbeats every heartbeat interval with a timeout of
    liveness x interval, so a dead TCP peer (no FIN, no RST) is noticed on
    PUSH/PULL links too and a connecting socket reconnects; a handshake
    bound of ZI_SECURITY_HANDSHAKE_MS, so an unauthenticated connection
    that never finishes its handshake is closed; and for connecting
    sockets a reconnect backoff from ZI_SECURITY_RECONNECT_MS doubling to
    ZI_SECURITY_RECONNECT_MAX_MS.
*/
#ifndef ZI_SECURITY_H_INCLUDED
#define ZI_SECURITY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include <czmq.h>

#include "zi_plan.h"

#ifdef __cplusplus
extern "C" {
#endif

//  A connection must finish its ZMTP (and CURVE) handshake this fast.
#define ZI_SECURITY_HANDSHAKE_MS 5000
//  Reconnect backoff of connecting sockets: first wait, and the cap.
#define ZI_SECURITY_RECONNECT_MS 100
#define ZI_SECURITY_RECONNECT_MAX_MS 1000
//  The name a "{name}" in client_secret_file takes for clients.
#define ZI_SECURITY_CLIENT_NAME "client"

typedef struct zi_security_server zi_security_server_t;

//  Set the options every pipeline socket has (see above). `bound` says
//  whether the socket will bind (the broker's) or connect (everyone
//  else's: it also gets the reconnect backoff). plan may be NULL (plain
//  defaults). Call before bind/connect.
void zi_security_socket (zsock_t *sock, const zi_plan_t *plan, bool bound);

//  ZMQ_MAXMSGSIZE of a plan: broker.max_message_bytes, or the default.
int64_t zi_security_max_message (const zi_plan_t *plan);

//  Resolve a key file path of the plan: "{name}" (every occurrence)
//  becomes name, then a relative path is taken from the plan's directory.
//  Returns 0 or ZI_ERR_LIMIT / ZI_ERR_INVALID with a message in err.
int zi_security_key_path (const zi_plan_t *plan, const char *path, const char *name,
                          char *buf, size_t len, char *err, size_t errlen);

//  Load a key pair (a zcert secret file) and check it holds a secret key
//  and is not readable by group or others. NULL with a message in err.
zcert_t *zi_security_load_secret (const char *path, char *err, size_t errlen);

//  CURVE client side for a process of the plan called name: when
//  plan->security.curve, load its key pair (client_secret_file) and set
//  the broker's public key. A no-op returning 0 when CURVE is off.
//  Returns 0, or ZI_ERR_IO / ZI_ERR_INVALID with a message in err.
int zi_security_client (zsock_t *sock, const zi_plan_t *plan, const char *name, char *err,
                        size_t errlen);

//  The same with explicit keys: the key pair file and the server's Z85
//  public key (both required).
int zi_security_client_keys (zsock_t *sock, const char *secret_file,
                             const char *server_key, char *err, size_t errlen);

//  The broker's side: load server_secret_file (its public key must be
//  the plan's server_public_key), write the allow-list where zauth reads
//  it (a private temporary directory) and start zauth. Returns NULL with
//  a message in err; the plan must have security.curve on.
zi_security_server_t *zi_security_server_new (const zi_plan_t *plan, char *err,
                                              size_t errlen);

//  Stop zauth and remove the temporary directory; sets *self_p to NULL.
//  Destroy every socket it was applied to first.
void zi_security_server_destroy (zi_security_server_t **self_p);

//  Make a socket a CURVE server with the broker's keys, checked by the
//  allow-list (ZAP domain "zinfer"). Call before bind.
void zi_security_server_apply (zi_security_server_t *self, zsock_t *sock);

//  The broker's public key (Z85).
const char *zi_security_server_public (const zi_security_server_t *self);

//  Make a new key pair and save it as DIR/NAME.key (public) and
//  DIR/NAME.key_secret (both keys, mode 0600). When keep is true and the
//  secret file already exists, it is loaded instead. Writes the Z85
//  public key into public_txt. Returns 0 or ZI_ERR_IO / ZI_ERR_INVALID
//  (a name that is not 1..64 letters, digits, '.', '_' or '-').
int zi_security_keypair_write (const char *dir, const char *name, bool keep,
                               char public_txt[41], char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
