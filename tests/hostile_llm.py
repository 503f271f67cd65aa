"""A hostile OpenAI-compatible endpoint: well-formed software-company replies with poisoned names.

Every reply is the scripted SOP reply (infra.testing.scripted_llm.sop_reply) for the prompt, then twisted by
the case the conversation's requirement names (`hostile-case-<name>` anywhere in the prompt, so
many conversations can share one endpoint):

  project name   the PRD's "Project Name" (and the design's project name) is replaced
  file name      the design's file list, the task list and the logic analysis name this file
  test code      every WriteTest reply is this code instead of a unit test

What a model does by accident or under a prompt injection, on the wire a real provider speaks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from infra.testing.scripted_llm import sop_reply
from tests.llm_endpoints import OpenAIEndpoint, Recorded

_CASE = re.compile(r"hostile-case-([a-z0-9_]+)")
_CONTENT = re.compile(r"\[CONTENT\]\s*(\{.*\})\s*\[/CONTENT\]", re.S)
_PROJECT_KEYS = ("Project Name", "Project name")
_FILE_KEYS = ("File list", "Refined File list", "Task list", "Refined Task list")
_LOGIC_KEYS = ("Logic Analysis", "Refined Logic Analysis")


@dataclass
class Case:
    project_name: str | None = None
    file_name: str | None = None
    test_code: str | None = None


class HostileEndpoint(OpenAIEndpoint):
    def __init__(self, cases: dict[str, Case], key: str = "hostile-key"):
        super().__init__(key=key, script=self.twist)
        self.cases = cases

    def case_of(self, rec: Recorded) -> Case | None:
        text = "\n".join(str(m.get("content", "")) for m in rec.messages)
        m = _CASE.search(text)
        return self.cases.get(m.group(1)) if m else None

    def twist(self, rec: Recorded) -> str:
        prompt = next((str(m.get("content", "")) for m in reversed(rec.messages) if m.get("role") == "user"), "")
        reply = sop_reply(prompt)
        if reply is None:
            return "Noted."
        case = self.case_of(rec)
        if case is None:
            return reply
        if case.test_code is not None and re.search(r"## \S+?: Write test code with triple quote", prompt):
            name = reply.split("\n", 1)[0]
            return f"{name}\n```python\n{case.test_code}\n```\n"
        m = _CONTENT.search(reply)
        if not m:
            return reply
        doc = json.loads(m.group(1))
        for key in _PROJECT_KEYS:
            if key in doc and case.project_name is not None:
                doc[key] = case.project_name
        if case.file_name is not None:
            for key in _FILE_KEYS:
                if key in doc:
                    doc[key] = [case.file_name]
            for key in _LOGIC_KEYS:
                if key in doc:
                    doc[key] = [[case.file_name, "Contains main(), which prints a summary."]]
        return f"[CONTENT]\n{json.dumps(doc, indent=4, ensure_ascii=False)}\n[/CONTENT]"
