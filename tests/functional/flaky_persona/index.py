"""Test double: the real persona handler, but each delivery's first attempt raises after the
handler has done its work up to a point chosen by TROUPE_TEST_FAIL_AT (see the test)."""

import json
import os

import index_real  # the real functions/persona/index.py, copied beside this file by the test

SEEN = os.path.join(os.environ["TROUPE_DATA"], "flaky-seen")


def handler(event, context):
    key = json.loads(event)["events"][0]["oss"]["object"]["key"]
    marker = os.path.join(SEEN, key.replace("/", "_"))
    os.makedirs(SEEN, exist_ok=True)
    first = not os.path.exists(marker)
    if first:
        open(marker, "w").close()
        if os.environ.get("TROUPE_TEST_FAIL_AT") == "before":
            raise RuntimeError("injected failure before the turn")
    result = index_real.handler(event, context)
    if first and os.environ.get("TROUPE_TEST_FAIL_AT") == "after":
        raise RuntimeError("injected failure after the turn")
    return result
