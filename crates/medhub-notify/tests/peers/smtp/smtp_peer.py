"""An SMTP server for medhub-notify's e-mail and pager tests: PyPI aiosmtpd on 127.0.0.1.

    python smtp_peer.py --port N --outdir DIR --mode starttls|implicit|plain
                        [--cert PEM --key PEM] [--auth USER:PASSWORD] [--data-reply "451 ..."]

Every message it accepts is written to DIR as one JSON file (written to a temporary name,
then renamed): the envelope, the raw DATA bytes (base64), the session's TLS version (null without TLS)
and the user it authenticated. With --data-reply it answers DATA with that reply instead of
accepting the message. "starttls" requires STARTTLS before MAIL; "implicit" speaks TLS from
the first byte. Prints "listening N" once it accepts connections.
"""

import argparse
import base64
import json
import os
import signal
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Recorder:
    def __init__(self, outdir, data_reply):
        self.outdir = outdir
        self.data_reply = data_reply
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        with self.lock:
            self.count += 1
            n = self.count
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        # Set for implicit TLS and after STARTTLS alike (session.ssl is only set by STARTTLS).
        tls = server.transport.get_extra_info("ssl_object")
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data_b64": base64.b64encode(envelope.original_content).decode("ascii"),
            "tls": tls.version() if tls is not None else None,
            "auth_login": login.decode("utf-8") if login is not None else None,
        }
        tmp = os.path.join(self.outdir, f".{n}.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.outdir, f"{n:04}.json"))
        return "250 OK"


def authenticator(expected_user, expected_password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == expected_user.encode()
            and auth_data.password == expected_password.encode()
        )
        return AuthResult(success=ok, auth_data=auth_data if ok else None)

    return check


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--mode", choices=["starttls", "implicit", "plain"], required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--auth")
    p.add_argument("--data-reply")
    args = p.parse_args()

    tls = None
    if args.mode != "plain":
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)

    kwargs = {}
    if args.auth:
        user, password = args.auth.split(":", 1)
        kwargs["authenticator"] = authenticator(user, password)
        kwargs["auth_require_tls"] = True
    if args.mode == "starttls":
        kwargs["tls_context"] = tls
        kwargs["require_starttls"] = True
    elif args.mode == "implicit":
        kwargs["ssl_context"] = tls

    controller = Controller(
        Recorder(args.outdir, args.data_reply),
        hostname="127.0.0.1",
        port=args.port,
        server_hostname="smtp.medhub.test",
        **kwargs,
    )
    controller.start()
    print(f"listening {args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
