"""Settings of `python -m infra.fc`, from the environment (secrets are never printed).

  ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET   the AccessKey (required)
  ALIBABA_CLOUD_SECURITY_TOKEN                                  with an STS AccessKey
  TROUPE_FC_ENDPOINT       the FC endpoint, e.g. http://127.0.0.1:PORT (the local runtime's FC
                           invoke API); else https://<account>.<region>.fc.aliyuncs.com from
  ALIBABA_CLOUD_ACCOUNT_ID and TROUPE_FC_REGION (default: the function's region in s.yaml)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping
from urllib.parse import urlsplit

from infra.local import spec as specs
from infra.local.spec import FunctionSpec


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    access_key_id: str
    access_key_secret: str = dataclasses.field(repr=False)
    security_token: str = dataclasses.field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Credentials":
        key_id = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "").strip()
        secret = env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "").strip()
        missing = [n for n, v in (("ALIBABA_CLOUD_ACCESS_KEY_ID", key_id),
                                  ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret)) if not v]
        if missing:
            raise ConfigError(f"set {' and '.join(missing)} (the AccessKey the FC SDK signs requests with)")
        return cls(key_id, secret, env.get("ALIBABA_CLOUD_SECURITY_TOKEN", "").strip())


def endpoint_from_env(region: str | None, env: Mapping[str, str] = os.environ) -> str:
    """TROUPE_FC_ENDPOINT (http:// or https://; https:// if no scheme), else the account's."""
    given = env.get("TROUPE_FC_ENDPOINT", "").strip().rstrip("/")
    if given:
        url = given if "://" in given else "https://" + given
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(f"TROUPE_FC_ENDPOINT={given!r} is not an endpoint like "
                              "http://127.0.0.1:PORT or https://<account>.<region>.fc.aliyuncs.com")
        return f"{parts.scheme}://{parts.netloc}"
    account = env.get("ALIBABA_CLOUD_ACCOUNT_ID", "").strip()
    region = env.get("TROUPE_FC_REGION", "").strip() or (region or "")
    if not account:
        raise ConfigError("set TROUPE_FC_ENDPOINT (e.g. the local runtime's FC invoke API, "
                          "http://127.0.0.1:PORT) or ALIBABA_CLOUD_ACCOUNT_ID (and TROUPE_FC_REGION)")
    if not region:
        raise ConfigError("set TROUPE_FC_REGION (e.g. cn-hangzhou)")
    return f"https://{account}.{region}.fc.aliyuncs.com"


class _AnyEnv(dict):
    """s.yaml's ${env('X')} resolve to '' when unset, without a warning: only names are needed."""

    def __contains__(self, key) -> bool:
        return True

    def get(self, key, default=""):
        return super().get(key, default)


def load_functions(s_yaml: str) -> list[FunctionSpec]:
    try:
        return specs.load(s_yaml, environ=_AnyEnv(os.environ))
    except (OSError, specs.SpecError) as e:
        raise ConfigError(f"cannot read {s_yaml}: {e}") from None


def function_name(functions: list[FunctionSpec], given: str) -> tuple[str, FunctionSpec | None]:
    """(FC function name, its spec): a resource id (gateway) becomes its functionName
    (troupe-gateway); a name s.yaml does not declare is used as given."""
    for s in functions:
        if given in (s.id, s.name):
            return s.name, s
    return given, None
