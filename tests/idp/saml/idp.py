"""A SAML 2.0 identity provider for medhub's tests: pysaml2 on loopback, signing with xmlsec1.

GET /sso/redirect takes medhub's AuthnRequest (HTTP-Redirect binding), "signs the user in" at
once, and answers with the HTTP-POST binding's auto-submitting form to medhub's ACS, as a real
IdP does. The test plays the browser and chooses the user and the answer with these query
parameters, appended to the redirect URL the way a login form would fill them in:

  user          the username attribute (uid) and the persistent NameID (default alice)
  name          the displayName attribute
  groups        comma-separated values of the groups attribute
  authn_class   the AuthnContextClassRef (default ...:PasswordProtectedTransport)
  sign          assertion (default), response, both, or none
  audience      the Audience (default: the requesting SP's entity id)
  in_response_to  overrides InResponseTo (Response and SubjectConfirmationData)

Nothing here is for production: it signs whoever the test names in.
"""

import argparse
import html
import http.server
import json
import sys
import urllib.parse

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
from saml2.server import Server

PASSWORD = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--sp-metadata", required=True)
    p.add_argument("--entity-id", help="default: http://127.0.0.1:PORT/idp")
    p.add_argument("--lifetime-minutes", type=int, default=5)
    args = p.parse_args()

    base = f"http://127.0.0.1:{args.port}"
    entity_id = args.entity_id or f"{base}/idp"
    conf = IdPConfig()
    conf.load(
        {
            "entityid": entity_id,
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "key_file": args.key,
            "cert_file": args.cert,
            "metadata": {"local": [args.sp_metadata]},
            "service": {
                "idp": {
                    "endpoints": {"single_sign_on_service": [(f"{base}/sso/redirect", BINDING_HTTP_REDIRECT)]},
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                    "policy": {
                        "default": {
                            "lifetime": {"minutes": args.lifetime_minutes},
                            "attribute_restrictions": None,
                            "name_form": "urn:oasis:names:tc:SAML:2.0:attrname-format:basic",
                        }
                    },
                }
            },
        }
    )
    idp = Server(config=conf)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def answer(self, status, body, ctype="text/html; charset=utf-8"):
            data = body.encode()
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
            if url.path == "/health":
                return self.answer(200, "ok", "text/plain")
            if url.path != "/sso/redirect":
                return self.answer(404, "not found", "text/plain")
            try:
                req = idp.parse_authn_request(q["SAMLRequest"], BINDING_HTTP_REDIRECT)
                resp_args = idp.response_args(req.message, [BINDING_HTTP_POST])
                user = q.get("user", "alice")
                identity = {"uid": [user]}
                if "name" in q:
                    identity["displayName"] = [q["name"]]
                if q.get("groups"):
                    identity["groups"] = q["groups"].split(",")
                if "in_response_to" in q:
                    resp_args["in_response_to"] = q["in_response_to"]
                if "audience" in q:
                    resp_args["sp_entity_id"] = q["audience"]
                sign = q.get("sign", "assertion")
                resp = idp.create_authn_response(
                    identity,
                    userid=user,
                    name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=f"{user}-persistent-id"),
                    authn={"class_ref": q.get("authn_class", PASSWORD), "authn_auth": entity_id},
                    sign_assertion=sign in ("assertion", "both"),
                    sign_response=sign in ("response", "both"),
                    sign_alg="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
                    digest_alg="http://www.w3.org/2001/04/xmlenc#sha256",
                    **resp_args,
                )
                http_args = idp.apply_binding(
                    BINDING_HTTP_POST, str(resp), resp_args["destination"], q.get("RelayState", ""), response=True
                )
                return self.answer(200, http_args["data"])
            except Exception as e:  # the test reads the reason
                return self.answer(400, f"idp error: {type(e).__name__}: {html.escape(str(e))}", "text/plain")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(json.dumps({"listening": base}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
