"""Each function's RAM policy (infra/ram/<function>.json) grants what its code uses and no more
than the prefixes it needs: a conversation runs through every function with a store that
refuses whatever the function's policy does not allow."""

import fnmatch
import json
import os

import pytest

from shared.conversation import ConversationStore
from shared.deadletter import handle_failure
from shared.director import Director
from shared.errors import StoreError
from shared.gateway import Gateway
from shared.runner import RoleRunner
from shared.store.base import ListPage, ObjectStore
from infra.testing.harness import API_KEY, Harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUCKET = "troupe-conversations"


class AccessDenied(StoreError):
    status = 403


def load_policy(function):
    with open(os.path.join(ROOT, "infra", "ram", f"{function}.json"), encoding="utf-8") as f:
        return json.load(f)


def allowed(policy, action, resource, prefix=None):
    for st in policy["Statement"]:
        if st["Effect"] != "Allow" or action not in st["Action"]:
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in st["Resource"]):
            continue
        cond = st.get("Condition", {}).get("StringLike", {}).get("oss:Prefix")
        if cond is not None and not any(fnmatch.fnmatchcase(prefix or "", c) for c in cond):
            continue
        return True
    return False


class PolicedStore(ObjectStore):
    """Wraps a store; every call is checked against one function's policy first."""

    def __init__(self, inner, policy):
        super().__init__()
        self.inner, self.policy, self.denied = inner, policy, []

    def _check(self, action, key=None, prefix=None):
        resource = f"acs:oss:cn-hangzhou:1234567890:{BUCKET}" + (f"/{key}" if key is not None else "")
        if not allowed(self.policy, action, resource, prefix):
            self.denied.append((action, key or prefix))
            raise AccessDenied(f"{action} on {key or prefix} denied")

    def _put(self, key, data, create_only):
        self._check("oss:PutObject", key)
        return self.inner.put(key, data, create_only=create_only)

    def _get(self, key):
        self._check("oss:GetObject", key)
        return self.inner.get(key)

    def _head(self, key):
        self._check("oss:GetObject", key)
        return self.inner.head(key)

    def _list(self, prefix, marker, max_keys) -> ListPage:
        self._check("oss:ListObjects", prefix=prefix)
        return self.inner.list(prefix, marker=marker, max_keys=max_keys)

    def _delete(self, key):
        self._check("oss:DeleteObject", key)
        self.inner.delete(key)


@pytest.fixture
def policed(tmp_path):
    h = Harness(str(tmp_path))
    stores = {fn: PolicedStore(h.store, load_policy(fn)) for fn in ("gateway", "persona", "deadletter", "director")}
    h.gateway = Gateway(ConversationStore(stores["gateway"]), api_key=API_KEY)
    h.runners["persona"] = RoleRunner(ConversationStore(stores["persona"]), "persona", h.llm_factory)
    h.runners["director"] = Director(ConversationStore(stores["director"]), h.llm_factory)
    return h, stores


def test_a_whole_conversation_stays_within_each_functions_policy(policed):
    h, stores = policed
    # GIVEN a debate started and read through the gateway, played by persona
    cid = h.start(max_turns=4)
    h.pump()
    status, body = h.http("GET", f"/conversations/{cid}")
    assert status == 200 and body["status"] == "completed"
    # AND a selector scene routed by director, with a human's turn taken by the gateway
    _, sel = h.http("POST", "/conversations", {"scenario": "digital_employees", "input": "Refund?", "humans": ["CustomerService"]})
    for _ in range(10):
        h.pump()
        waiting = h.http("GET", f"/conversations/{sel['id']}")[1]
        if waiting["status"] != "waiting_for_human":
            break
        h.http("POST", f"/conversations/{sel['id']}/messages", {"role": "CustomerService",
                                                                "content": "Finance, what is the refund?"})
    assert h.http("GET", f"/conversations/{sel['id']}")[1]["status"] == "completed"
    assert h.http("GET", f"/conversations/{cid}/usage")[0] == 200
    # AND a dead letter handled by deadletter
    cid2 = h.start()
    event, = h.pending_inbox()
    record = {"requestContext": {"condition": "RetriesExhausted"}, "requestPayload": event.decode(),
              "responsePayload": "boom"}
    out = handle_failure(json.dumps(record).encode(), ConversationStore(stores["deadletter"]))
    assert out[0]["outcome"] == "dead-lettered"
    # THEN no function needed anything its policy does not grant
    assert {fn: s.denied for fn, s in stores.items()} == {"gateway": [], "persona": [], "deadletter": [], "director": []}
    assert h.convs.get_end(cid2)["status"] == "failed"


@pytest.mark.parametrize("function, action, key", [
    ("gateway", "oss:GetObject", "inbox/persona/x.json"),
    ("gateway", "oss:PutObject", "deadletters/persona/x.json"),
    ("persona", "oss:GetObject", "inbox/gateway/x.json"),
    ("persona", "oss:DeleteObject", "conversations/x/meta.json"),
    ("deadletter", "oss:PutObject", "conversations/x/messages/000001-a.json"),
    ("deadletter", "oss:PutObject", "inbox/persona/x.json"),
    ("director", "oss:GetObject", "inbox/persona/x.json"),
])
def test_policies_refuse_what_a_function_never_needs(function, action, key):
    assert not allowed(load_policy(function), action, f"acs:oss:cn-hangzhou:1:{BUCKET}/{key}")


def test_the_software_company_and_a_pipeline_stay_within_their_policies(tmp_path):
    from shared.pipeline import Pipeline
    from shared.sop.runner import sop_runner
    from infra.testing.harness import SOP_FUNCTIONS

    h = Harness(str(tmp_path))
    functions = ("gateway", "pipeline", *SOP_FUNCTIONS)
    stores = {fn: PolicedStore(h.store, load_policy(fn)) for fn in functions}
    h.gateway = Gateway(ConversationStore(stores["gateway"]), api_key=API_KEY)
    for fn in SOP_FUNCTIONS:
        h.runners[fn] = sop_runner(ConversationStore(stores[fn]), fn, h.llm_factory)
    pipeline = Pipeline(ConversationStore(stores["pipeline"]))
    # GIVEN a software company started by a request file
    h.store.put("requests/ledger.json", json.dumps({"scenario": "software_company", "input": "开发一个记账APP"}).encode())
    for _ in range(100):
        batch = h.pending()
        if not batch:
            break
        for _name, event in batch:
            key = json.loads(event)["events"][0]["oss"]["object"]["key"]
            if key.startswith("requests/") or key.endswith("/end.json"):
                pipeline.handle_event(event)
            else:
                h.deliver(event)
    result = json.loads(h.store.get("results/ledger.json"))
    assert result["status"] == "completed" and result["artifacts"]
    # AND its files read back through the gateway
    cid = result["conversation"]
    h.tokens[cid] = "no-token"  # started by a file: no API token exists, so reading is refused
    assert h.http("GET", f"/conversations/{cid}/artifacts")[0] == 403
    # THEN no function needed anything its policy does not grant
    assert {fn: s.denied for fn, s in stores.items()} == {fn: [] for fn in functions}


def test_a_role_function_may_invoke_itself_to_hand_a_throttled_turn_back_and_nothing_else():
    import yaml

    with open(os.path.join(ROOT, "s.yaml"), encoding="utf-8") as f:
        resources = yaml.safe_load(f)["resources"]
    names = {fid: res["props"]["functionName"] for fid, res in resources.items()}
    role_functions = ("persona", "product_manager", "architect", "project_manager", "engineer", "qa_engineer")
    for fid in names:
        policy = load_policy(fid)
        for other, name in names.items():
            may = allowed(policy, "fc:InvokeFunction", f"acs:fc:cn-hangzhou:1234567890:functions/{name}")
            # the role functions their own function only (shared/handback.py); the others none
            assert may == (other == fid and fid in role_functions), (fid, other)
