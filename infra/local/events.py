"""The events FC and OSS deliver, built for the local runtime, its CLIs and the tests: an OSS
trigger event, the CloudEvent an EventBridge-based OSS trigger delivers, an FC 3.0 HTTP trigger
event. shared/events.py reads them; on FC the cloud builds them.
"""

from __future__ import annotations

import base64
import time
import uuid


def eventbridge_event(record: dict, account: str = "1234567890") -> dict:
    """The CloudEvent an EventBridge-based OSS trigger delivers for one OSS record."""
    region = record.get("region", "")
    bucket = record["oss"]["bucket"]["name"]
    return {"id": str(uuid.uuid4()), "source": "acs.oss", "specversion": "1.0",
            "type": "oss:" + record["eventName"], "datacontenttype": "application/json;charset=utf-8",
            "subject": f"acs:oss:{region}:{account}:{bucket}/{record['oss']['object']['key']}",
            "time": record.get("eventTime", ""), "aliyunaccountid": account, "aliyuneventbusname": "default",
            "aliyunregionid": region, "data": record}


def make_oss_event(bucket: str, region: str, key: str, size: int, etag: str,
                   event_name: str = "ObjectCreated:PutObject", account: str = "1234567890") -> dict:
    """An OSS trigger event in the shape OSS delivers (see tests/events/oss-event.json)."""
    return {
        "events": [
            {
                "eventName": event_name,
                "eventSource": "acs:oss",
                "eventTime": _now_iso(),
                "eventVersion": "1.0",
                "oss": {
                    "bucket": {
                        "arn": f"acs:oss:{region}:{account}:{bucket}",
                        "name": bucket,
                        "ownerIdentity": account,
                        "virtualBucket": "",
                    },
                    "object": {"deltaSize": size, "eTag": etag, "key": key, "size": size},
                    "ossSchemaVersion": "1.0",
                    "ruleId": uuid.uuid4().hex,
                },
                "region": region,
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"requestId": uuid.uuid4().hex[:24].upper()},
                "userIdentity": {"principalId": account},
            }
        ]
    }


# --- HTTP trigger --------------------------------------------------------------------------


def make_http_event(method: str, path: str, *, body: bytes = b"", headers: dict | None = None,
                    query: dict | None = None, source_ip: str = "127.0.0.1",
                    request_id: str = "") -> dict:
    """An FC 3.0 HTTP trigger event (see tests/events/http-event.json)."""
    try:
        text, b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, b64 = base64.b64encode(body).decode(), True
    now = time.time()
    return {
        "version": "v1",
        "rawPath": path,
        "headers": dict(headers or {}),
        "queryParameters": dict(query or {}),
        "body": text,
        "isBase64Encoded": b64,
        "requestContext": {
            "accountId": "1234567890",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "requestId": request_id or uuid.uuid4().hex,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "timeEpoch": str(int(now * 1000)),
            "http": {"method": method.upper(), "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": source_ip, "userAgent": (headers or {}).get("User-Agent", "")},
        },
    }


def _now_iso() -> str:
    """This moment as OSS writes an event's time: UTC, to the millisecond."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
