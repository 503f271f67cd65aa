"""shared.lean: MetaGPT's package __init__s made lazy, behaviour kept.

Each check runs in a fresh interpreter: this process has MetaGPT imported eagerly already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code: str, cwd: str = ROOT, extra_path: str | None = None) -> dict:
    env = dict(os.environ)
    env.pop("TROUPE_LEAN", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sop_roles_start_lean_and_keep_working():
    out = _run("""
        import json, sys
        import shared.mg, shared.lean
        assert shared.lean.install()
        from metagpt.roles.product_manager import ProductManager
        from metagpt.roles.architect import Architect
        from metagpt.roles.project_manager import ProjectManager
        from metagpt.roles.engineer import Engineer
        from metagpt.roles.qa_engineer import QaEngineer
        from shared.roles.character import Character
        ctx = shared.mg.make_context()
        actions = {c.__name__: [type(a).__name__ for a in c(context=ctx).actions]
                   for c in (ProductManager, Architect, ProjectManager, Engineer, QaEngineer)}
        actions["Character"] = [type(a).__name__ for a in Character(name="A", context=ctx).actions]
        from metagpt.roles import Role, Engineer as E2
        from metagpt.actions import Action, UserRequirement, WriteCode, WritePRD, prepare_documents
        from metagpt.provider import HumanProvider
        assert E2 is Engineer and issubclass(Engineer, Role) and issubclass(WriteCode, Action)
        from shared.llm import make_llm
        import infra.testing
        infra.testing.install()
        llms = [type(make_llm(env)).__name__ for env in (
            {"TROUPE_LLM": "fake"},
            {"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": "http://127.0.0.1:9/v1"},
            {"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": "k"})]
        from metagpt.configs.llm_config import LLMType
        from metagpt.provider.llm_provider_registry import LLM_REGISTRY
        registered = [str(k) for k in (LLMType.OPENAI, LLMType.DASHSCOPE, "troupe_fake")
                      if dict.__contains__(LLM_REGISTRY.providers, k)]
        heavy = [m for m in ("sklearn", "scipy", "IPython", "nbclient", "google.generativeai", "zhipuai",
                             "qianfan", "boto3", "metagpt.roles.searcher", "metagpt.roles.sales",
                             "metagpt.actions.research", "metagpt.actions.di.execute_nb_code",
                             "metagpt.tools.libs.data_preprocess", "metagpt.environment.werewolf")
                 if m in sys.modules]
        pandas = sys.modules.get("pandas")
        print(json.dumps({"actions": actions, "llms": llms, "registered": registered, "heavy": heavy,
                          "pandas_deferred": pandas is None or type(pandas).__name__ == "_LazyModule"}))
    """)
    assert out["actions"] == {"ProductManager": ["PrepareDocuments", "WritePRD"], "Architect": ["WriteDesign"],
                              "ProjectManager": ["WriteTasks"], "Engineer": ["WriteCode"],
                              "QaEngineer": ["WriteTest"], "Character": ["Speak"]}
    assert out["llms"] == ["ScriptedLLM", "OpenAILLM", "DashScopeLLM"]
    assert out["registered"] == ["LLMType.OPENAI", "LLMType.DASHSCOPE", "troupe_fake"]
    assert out["heavy"] == []
    assert out["pandas_deferred"]


def test_what_the_eager_init_did_still_happens_on_first_use():
    out = _run("""
        import json, sys
        import shared.mg, shared.lean
        shared.lean.install()
        import metagpt.actions, metagpt.roles, metagpt.tools
        from metagpt.configs.llm_config import LLMConfig
        from metagpt.provider.llm_provider_registry import create_llm_instance
        ollama = type(create_llm_instance(LLMConfig(api_type="ollama", base_url="http://127.0.0.1:9", model="m")))
        one_sdk = ("metagpt.provider.ollama_api" in sys.modules
                   and "metagpt.provider.google_gemini_api" not in sys.modules)
        claude = type(create_llm_instance(LLMConfig(api_type="claude", api_key="k", model="m")))
        from metagpt.tools.tool_registry import TOOL_REGISTRY
        before = "metagpt.tools.libs.data_preprocess" in sys.modules
        tools = sorted(TOOL_REGISTRY.get_all_tools())
        import pandas
        print(json.dumps({
            "action_type": metagpt.actions.ActionType.WRTIE_CODE.value.__name__,
            "engine": metagpt.tools.WebBrowserEngineType("selenium").name,
            "tools_before_read": before, "tools": len(tools), "has_fill_missing": "FillMissingValue" in tools,
            "ollama": ollama.__name__, "one_sdk": one_sdk,
            "claude": claude.__name__, "pandas": pandas.DataFrame.__name__,
            "searcher": metagpt.roles.searcher.__name__, "dir": "Searcher" in dir(metagpt.roles)}))
    """)
    assert out == {"action_type": "WriteCode", "engine": "SELENIUM", "tools_before_read": False,
                   "tools": out["tools"], "has_fill_missing": True, "ollama": "OllamaLLM", "one_sdk": True,
                   "claude": "AnthropicLLM", "pandas": "DataFrame",
                   "searcher": "metagpt.roles.searcher", "dir": True}
    assert out["tools"] > 10


def test_the_mechanism_on_a_package_of_our_own(tmp_path):
    pkg = tmp_path / "lazypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        """The package docstring."""
        from __future__ import annotations
        from enum import Enum
        from lazypkg.a import A, helper as h
        from .b import B
        from lazypkg import sub
        from lazypkg.shadow import shadow
        from lazypkg.a import REBOUND
        REBOUND = "eager wins"

        class Kinds(Enum):
            FIRST = A
            SECOND = B

        def uses_b():
            return B

        CONSTANT = 3
        __all__ = ["A", "B", "Kinds", "CONSTANT"]
    '''))
    (pkg / "a.py").write_text("import sys\nsys.modules.setdefault('loaded', []).append('a')\n"
                              "class A: pass\ndef helper(): return 'h'\nREBOUND = 'lazy'\n")
    (pkg / "b.py").write_text("import sys\nsys.modules['loaded'].append('b')\nclass B: pass\n")
    (pkg / "shadow.py").write_text("def shadow(): return 'fn'\n")
    (pkg / "sub" / "__init__.py").write_text("X = 1\n")
    out = _run("""
        import json, sys
        sys.modules["loaded"] = []
        import shared.lean
        shared.lean.LAZY = ("lazypkg",)
        shared.lean.install()
        import lazypkg
        first = list(sys.modules["loaded"])
        a = lazypkg.A.__name__
        after_a = list(sys.modules["loaded"])
        from lazypkg import B, sub, h
        import lazypkg.shadow
        kinds = [k.value.__name__ for k in lazypkg.Kinds]
        from lazypkg import *
        print(json.dumps({"first": first, "after_a": after_a, "a": a, "b": B.__name__, "x": sub.X, "h": h(),
                          "kinds": kinds, "uses_b": lazypkg.uses_b().__name__, "doc": lazypkg.__doc__,
                          "rebound": lazypkg.REBOUND, "constant": CONSTANT,
                          "shadow": type(lazypkg.shadow).__name__, "path": list(lazypkg.__path__) != [],
                          "dir": [n for n in ("A", "B", "Kinds", "sub") if n in dir(lazypkg)],
                          "missing": hasattr(lazypkg, "nothing")}))
    """, extra_path=str(tmp_path))
    assert out == {"first": [], "after_a": ["a"], "a": "A", "b": "B", "x": 1, "h": "h", "kinds": ["A", "B"],
                   "uses_b": "B", "doc": "The package docstring.", "rebound": "eager wins", "constant": 3,
                   "shadow": "function", "path": True, "dir": ["A", "B", "Kinds", "sub"], "missing": False}


def test_disabled_by_environment():
    out = _run("""
        import json, os
        os.environ["TROUPE_LEAN"] = "0"
        import shared.lean
        print(json.dumps({"installed": shared.lean.install()}))
    """)
    assert out == {"installed": False}


def test_a_dashscope_role_function_loads_no_other_sdk(tmp_path):
    out = _run(f"""
        import json, sys
        import shared.mg, shared.lean
        shared.lean.install()
        from metagpt.roles.engineer import Engineer
        from shared.llm import make_llm
        Engineer(context=shared.mg.make_context(), llm=make_llm({{"TROUPE_LLM": "dashscope", "DASHSCOPE_API_KEY": "k"}}))
        loaded = [m for m in ("openai", "anthropic", "git", "tiktoken", "httpx") if m in sys.modules]
        hoisted = {{m: sorted(sys.modules[m].__hoisted__) for m in shared.lean.HOISTED}}
        from metagpt.utils.git_repository import GitRepository
        repo = GitRepository({str(tmp_path / "repo")!r}, auto_init=True)
        print(json.dumps({{"loaded": loaded, "hoisted": hoisted, "git": GitRepository.is_git_dir(repo.workdir),
                          "git_loaded": "git" in sys.modules}}))
    """)
    assert out["loaded"] == []
    assert out["hoisted"] == {
        "metagpt.provider.base_llm": ["AsyncOpenAI"],
        "metagpt.utils.token_counter": ["ChatCompletionChunk", "CompletionUsage", "anthropic", "tiktoken"],
        "metagpt.utils.git_repository": ["Repo", "is_git_dir"]}
    assert out["git"] is True and out["git_loaded"] is True


def test_the_scripted_double_exists_only_where_a_host_registers_it():
    import subprocess
    import sys
    import textwrap

    # GIVEN a process as a function runs on FC: the product's code, nothing from infra/testing imported
    code = textwrap.dedent("""
        import sys
        from shared.llm import LLMConfigError, make_llm
        try:
            make_llm({"TROUPE_LLM": "fake"})
        except LLMConfigError as e:
            print(e.message)
        print("scripted" if any(m.startswith("infra") for m in sys.modules) else "product only")
    """)
    from shared.llm import make_llm

    env = {k: v for k, v in os.environ.items() if k != "TROUPE_LLM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    # THEN TROUPE_LLM=fake is an unknown LLM there, and no test double was loaded
    assert "unknown TROUPE_LLM='fake'" in out.stdout and "product only" in out.stdout, out.stderr[-2000:]
    # AND where the local runtime or the tests register it, it is the scripted LLM
    assert type(make_llm({"TROUPE_LLM": "fake"})).__name__ == "ScriptedLLM"
