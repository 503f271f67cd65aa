"""The FC invoke API's signature check (infra/local/fcapi.py), against the SDKs' own signers:
fc2's `FC` scheme and alibabacloud-tea-openapi's ACS3-HMAC-SHA256 (used by
alibabacloud-fc-open20210406 and alibabacloud-fc20230330). No worker processes."""

from __future__ import annotations

import email.utils
import hashlib
import json
import time
import types
import urllib.error
import urllib.request

import pytest

from infra.local.fcapi import AccessKey, InvokeAPIServer, NonceCache, SignatureError, verify_request

KEY = AccessKey("LTAIlocaltest", "s3cret-local")
NOW = 1_800_000_000.0
BODY = b'{"version": "v1", "rawPath": "/scenarios"}'
FC2_PATH = "/2016-08-15/services/troupe/functions/troupe-gateway/invocations"
FC3_PATH = "/2023-03-30/functions/troupe-gateway/invocations"


# -- requests signed by the SDKs' own code -----------------------------------------------------

def fc2_request(*, key=KEY, path=FC2_PATH, body=BODY, when=NOW, extra=None, md5=False, token=""):
    """(method, target, headers, body) as fc2.Client.invoke_function builds them."""
    from fc2.auth import Auth

    headers = {"host": "127.0.0.1:9000", "date": email.utils.formatdate(when, usegmt=True),
               "content-type": "application/json", "user-agent": "aliyun-fc-sdk-v2.5.2",
               "x-fc-invocation-type": "Sync", **(extra or {})}
    if token:
        headers["x-fc-security-token"] = token
    if md5:
        import base64
        headers["content-md5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    headers["authorization"] = Auth(key.id, key.secret, token).sign_request("POST", path, headers)
    return "POST", path, list(headers.items()), body


def acs3_request(*, key=KEY, path=FC3_PATH, query=None, body=BODY, when=NOW, extra=None, token="",
                 nonce="5d1b2c3e4f"):
    """(method, target, headers, body) as alibabacloud-tea-openapi signs an ROA request."""
    from alibabacloud_tea_openapi.utils import Utils

    headers = {"host": "127.0.0.1:9000", "x-acs-version": "2023-03-30", "x-acs-action": "InvokeFunction",
               "user-agent": "AlibabaCloud TeaDSL/2",
               "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
               "x-acs-signature-nonce": nonce, "accept": "application/json", "x-fc-invocation-type": "Sync",
               "content-type": "application/octet-stream",
               "x-acs-content-sha256": hashlib.sha256(body).hexdigest(), **(extra or {})}
    if token:
        headers["x-acs-accesskey-id"] = key.id
        headers["x-acs-security-token"] = token
    req = types.SimpleNamespace(method="POST", pathname=path, query=dict(query or {}), headers=headers)
    headers["Authorization"] = Utils.get_authorization(req, "ACS3-HMAC-SHA256", headers["x-acs-content-sha256"],
                                                       key.id, key.secret)
    target = path + ("?" + "&".join(f"{k}={v}" for k, v in (query or {}).items()) if query else "")
    return "POST", target, list(headers.items()), body


def verify(req, keys=KEY, now=NOW, nonces=None):
    method, target, headers, body = req
    return verify_request(method, target, headers, body, keys, now=now, nonces=nonces)


def refused(req, code, **kw):
    with pytest.raises(SignatureError) as e:
        verify(req, **kw)
    assert e.value.status == 403 and e.value.code == code, (e.value.code, e.value.message)
    return e.value


def replace(req, name, value):
    method, target, headers, body = req
    return method, target, [(k, value if k.lower() == name else v) for k, v in headers], body


SCHEMES = {"fc2": fc2_request, "acs3": acs3_request}


# -- both schemes --------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_correctly_signed_request_is_accepted(scheme):
    assert verify(SCHEMES[scheme]()) == KEY.id
    # AND an STS token is accepted (it is signed like any header, and otherwise ignored)
    assert verify(SCHEMES[scheme](token="sts-token")) == KEY.id


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_tampered_path_is_refused(scheme):
    method, _, headers, body = SCHEMES[scheme]()
    other = (FC2_PATH if scheme == "fc2" else FC3_PATH).replace("troupe-gateway", "troupe-persona")
    refused((method, other, headers, body), "SignatureNotMatch")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_wrong_secret_or_unknown_key_is_refused(scheme):
    make = SCHEMES[scheme]
    refused(make(key=AccessKey(KEY.id, "not-the-secret")), "SignatureNotMatch")
    err = refused(make(key=AccessKey("LTAIsomeoneelse", KEY.secret)), "InvalidAccessKeyID")
    assert KEY.secret not in err.message


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_stale_or_future_date_is_refused_even_when_signed(scheme):
    make = SCHEMES[scheme]
    assert verify(make(when=NOW - 14 * 60)) == KEY.id
    refused(make(when=NOW - 16 * 60), "RequestTimeTooSkewed")
    refused(make(when=NOW + 16 * 60), "RequestTimeTooSkewed")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_changed_date_header_breaks_the_signature(scheme):
    req = SCHEMES[scheme]()
    if scheme == "fc2":
        refused(replace(req, "date", email.utils.formatdate(NOW + 60, usegmt=True)), "SignatureNotMatch")
    else:
        refused(replace(req, "x-acs-date", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + 60))),
                "SignatureNotMatch")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_switching_sync_to_async_breaks_the_signature(scheme):
    refused(replace(SCHEMES[scheme](), "x-fc-invocation-type", "Async"), "SignatureNotMatch")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_missing_or_foreign_authorization_is_refused(scheme):
    method, target, headers, body = SCHEMES[scheme]()
    unsigned = [(k, v) for k, v in headers if k.lower() != "authorization"]
    refused((method, target, unsigned, body), "AccessDenied")
    refused((method, target, unsigned + [("Authorization", "Bearer abc")], body), "AccessDenied")
    refused((method, target, unsigned + [("Authorization", "FC nocolon")], body), "AccessDenied")


# -- fc2's FC scheme ---------------------------------------------------------------------------

def test_fc2_body_is_covered_when_content_md5_is_sent():
    method, target, headers, _ = fc2_request(md5=True)
    assert verify((method, target, headers, BODY)) == KEY.id
    refused((method, target, headers, BODY + b" "), "SignatureNotMatch")


def test_fc2_without_content_md5_signs_no_body():
    # documented limitation of the scheme: fc2 sends no Content-MD5, so the body is not signed
    method, target, headers, _ = fc2_request()
    assert verify((method, target, headers, b"another body")) == KEY.id


def test_fc2_a_changed_or_added_x_fc_header_breaks_the_signature():
    req = fc2_request(token="sts-token")
    refused(replace(req, "x-fc-security-token", "other"), "SignatureNotMatch")
    method, target, headers, body = fc2_request()
    refused((method, target, headers + [("x-fc-log-type", "Tail")], body), "SignatureNotMatch")


def test_fc2_missing_date_is_refused():
    method, target, headers, body = fc2_request()
    refused((method, target, [(k, v) for k, v in headers if k != "date"], body), "MissingRequiredHeader")


# -- ACS3-HMAC-SHA256 (alibabacloud-fc-open20210406, alibabacloud-fc20230330) ------------------

def test_acs3_a_tampered_body_is_refused():
    method, target, headers, _ = acs3_request()
    refused((method, target, headers, BODY + b" "), "SignatureNotMatch")
    # AND a body hash rewritten to match the new body breaks the signature
    refused(replace((method, target, headers, BODY + b" "), "x-acs-content-sha256",
                    hashlib.sha256(BODY + b" ").hexdigest()), "SignatureNotMatch")


def test_acs3_query_is_signed():
    req = acs3_request(query={"qualifier": "LATEST"})
    assert verify(req) == KEY.id
    method, target, headers, body = req
    refused((method, target.replace("LATEST", "prod"), headers, body), "SignatureNotMatch")
    refused((method, target + "&extra=1", headers, body), "SignatureNotMatch")


def test_acs3_fc2_style_path_from_fc_open():
    path = "/2021-04-06/services/troupe/functions/troupe-gateway/invocations"
    assert verify(acs3_request(path=path, extra={"x-acs-version": "2021-04-06"})) == KEY.id


def test_acs3_unsigned_acs_or_fc_headers_are_refused():
    method, target, headers, body = acs3_request()
    refused((method, target, headers + [("x-fc-log-type", "Tail")], body), "SignatureNotMatch")
    refused((method, target, headers + [("x-acs-security-token", "t")], body), "SignatureNotMatch")


def test_acs3_security_token_must_name_the_same_key():
    req = acs3_request(token="sts-token")
    refused(replace(req, "x-acs-accesskey-id", "LTAIother"), "InvalidAccessKeyID")


def test_acs3_a_replayed_nonce_is_refused():
    nonces = NonceCache()
    req = acs3_request(nonce="n-1")
    assert verify(req, nonces=nonces) == KEY.id
    refused(req, "SignatureNonceUsed", nonces=nonces)
    assert verify(acs3_request(nonce="n-2"), nonces=nonces) == KEY.id


def test_acs3_missing_content_hash_is_refused():
    method, target, headers, body = acs3_request()
    refused((method, target, [(k, v) for k, v in headers if k != "x-acs-content-sha256"], body),
            "MissingRequiredHeader")


# -- the server: 403 with FC's error body, nothing invoked -------------------------------------

class FakeRuntime:
    def __init__(self):
        self.invoked = []
        self.fc_access_key = KEY

    def function(self, name):
        if name not in ("gateway", "troupe-gateway"):
            raise LookupError(f"no function {name!r}")
        return types.SimpleNamespace(id="gateway")

    def invoke(self, fid, body, *, sync, request_id, delay=0.0):
        self.invoked.append((fid, body, sync))
        return types.SimpleNamespace(ok=True, body=lambda: b'"done"')


@pytest.fixture
def server():
    runtime = FakeRuntime()
    srv = InvokeAPIServer("127.0.0.1", 0, runtime)
    srv.start()
    try:
        yield srv, runtime
    finally:
        srv.stop()


def test_server_refuses_a_bad_signature_with_an_fc_error_and_invokes_nothing(server):
    import fc2

    srv, runtime = server
    assert srv.access_key == KEY
    bad = fc2.Client(endpoint=srv.url, accessKeyID=KEY.id, accessKeySecret="wrong")
    with pytest.raises(fc2.fc_exceptions.FcError) as e:
        bad.invoke_function("troupe", "troupe-gateway", payload=b"{}")
    assert e.value.status_code == 403 and e.value.err_code == "SignatureNotMatch"
    req = urllib.request.Request(srv.url + FC3_PATH, data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as unsigned:
        urllib.request.urlopen(req, timeout=5)
    body = json.loads(unsigned.value.read())
    assert unsigned.value.code == 403 and body["ErrorCode"] == body["Code"] == "AccessDenied" and body["RequestId"]
    assert runtime.invoked == []
    # AND the right key invokes
    good = fc2.Client(endpoint=srv.url, accessKeyID=KEY.id, accessKeySecret=KEY.secret)
    assert good.invoke_function("troupe", "troupe-gateway", payload=b"{}").data == b'"done"'
    assert runtime.invoked == [("gateway", b"{}", True)]


def test_access_key_repr_hides_the_secret():
    assert KEY.secret not in repr(KEY) and KEY.id in repr(KEY)
    assert AccessKey.generate() != AccessKey.generate()


def test_access_key_from_env_wants_both(monkeypatch):
    monkeypatch.setenv("TROUPE_FC_ACCESS_KEY_ID", "LTAIx")
    monkeypatch.delenv("TROUPE_FC_ACCESS_KEY_SECRET", raising=False)
    with pytest.raises(ValueError, match="TROUPE_FC_ACCESS_KEY_SECRET"):
        AccessKey.from_env()
    monkeypatch.setenv("TROUPE_FC_ACCESS_KEY_SECRET", "y")
    assert AccessKey.from_env() == AccessKey("LTAIx", "y")


def test_publish_layer_sends_the_zip_for_python310(tmp_path):
    import base64
    import types

    from infra.fc.__main__ import _Context, _parser, cmd_publish_layer

    zip_path = tmp_path / "layer.zip"
    zip_path.write_bytes(b"PK\x03\x04 layer")
    sent = {}

    class Client:  # stands in for alibabacloud_fc20230330's Client: records the request
        def create_layer_version(self, name, request):
            sent["name"], sent["body"] = name, request.body.to_map()
            return types.SimpleNamespace(body=types.SimpleNamespace(version=3, layer_version_arn="acs:fc:x:1:layers/n/versions/3"))

    ctx = _Context(_parser().parse_args(["publish-layer", str(zip_path), "--name", "troupe-deps"]))
    assert cmd_publish_layer(ctx, client=Client()) == 0
    assert sent["name"] == "troupe-deps" and sent["body"]["compatibleRuntime"] == ["python3.10"]
    assert base64.b64decode(sent["body"]["code"]["zipFile"]) == b"PK\x03\x04 layer"
