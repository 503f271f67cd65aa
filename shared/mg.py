"""The one place troupe touches MetaGPT's process-wide setup.

MetaGPT computes its root (logs/, workspace/) when `metagpt.const` is first imported, from
METAGPT_PROJECT_ROOT, else the working directory. On FC only /tmp is writable, so the root is
pinned under the temp directory before any metagpt import. Config is built in code, never read
from ~/.metagpt or the working directory.
"""

from __future__ import annotations

import os
import sys
import tempfile


def bootstrap() -> None:
    """Call before the first `import metagpt...` in a process."""
    root = os.environ.get("METAGPT_PROJECT_ROOT") or os.path.join(tempfile.gettempdir(), "troupe-metagpt")
    os.makedirs(root, exist_ok=True)
    os.environ["METAGPT_PROJECT_ROOT"] = root
    # metagpt.config2 builds a global Config at import and needs an `llm` key: give it a
    # placeholder under our root so nothing is read from the user's home or working directory
    # repair_llm_output: MetaGPT repairs near-miss structured replies (a missing bracket, a key's
    # case) before it retries, which small local models need; it reads this only from its global config
    cfg = os.path.join(root, "config", "config2.yaml")
    wanted = "llm:\n  api_type: openai\n  api_key: unused\n  model: unused\nrepair_llm_output: true\n"
    try:
        with open(cfg) as f:
            current = f.read()
    except OSError:
        current = None
    if current != wanted:
        os.makedirs(os.path.dirname(cfg), exist_ok=True)
        tmp = f"{cfg}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(wanted)
        os.replace(tmp, cfg)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


bootstrap()

# MetaGPT's package __init__s import every role, action, provider and tool (about 3.3 s and
# 320 MB); shared/lean.py makes them import what is used, on first use (about 0.85 s, 112 MB)
from shared import lean  # noqa: E402

lean.install()


_walled = False


def wall_off() -> None:
    """Stop MetaGPT re-reading config files at run time.

    Every Action construction asks `ModelsConfig.default()`, which parses config2.yaml from the
    root and from ~/.metagpt on each call (about 1 ms a time, three times a turn). troupe picks
    each role's model itself and passes the LLM in, so the models table is empty, built once.
    """
    global _walled
    if _walled:
        return
    from metagpt.configs import models_config
    from metagpt.logs import logger

    # MetaGPT also logs every prompt at DEBUG to a file under its root, which on a warm FC
    # instance would fill /tmp (512 MB) with conversation text: keep its log on stderr only
    logger.remove()
    logger.add(sys.stderr, level=os.environ.get("TROUPE_METAGPT_LOG_LEVEL", "INFO"))

    empty = models_config.ModelsConfig()
    models_config.ModelsConfig.default = classmethod(lambda cls: empty)
    _walled = True


def make_context(llm_config: dict | None = None, context_class=None, workspace: str | None = None):
    """A MetaGPT Context whose Config is built here, offline; `workspace` is where MetaGPT's
    software-company roles create their project (config.workspace.path)."""
    wall_off()
    from metagpt.config2 import Config
    from metagpt.configs.llm_config import LLMConfig
    from metagpt.configs.mermaid_config import MermaidConfig
    from metagpt.configs.workspace_config import WorkspaceConfig
    from metagpt.context import Context

    llm = LLMConfig.model_validate(llm_config or {"api_type": "openai", "api_key": "unused", "model": "troupe-fake"})
    # diagrams stay as their mermaid source (.mmd): no renderer is called (mmdc, a browser)
    config = Config(llm=llm, mermaid=MermaidConfig(engine="none"))
    if workspace:
        config.workspace = WorkspaceConfig(path=workspace)
    return (context_class or Context)(config=config)
