"""Generated tests as RunCode runs them: in their own interpreter, from the project folder."""

from __future__ import annotations

import subprocess
import sys

import shared.mg  # noqa: F401  (pins MetaGPT's root before it is imported)
from shared.llm.structured import Expected, shape, with_test_import


def _body(block: str) -> str:
    """The file a ```python block holds, as MetaGPT's own parser reads it (WriteTest saves this)."""
    from metagpt.utils.common import CodeParser

    return CodeParser.parse_code(block="", text=block, lang="python")


def test_a_test_file_without_a_main_guard_gets_one_so_runcode_runs_it(tmp_path):
    reply = ("```python\nimport unittest\n\n\nclass TestMath(unittest.TestCase):\n    def test_ok(self):\n"
             "        self.assertEqual(1 + 1, 2)\n\n    def test_bad(self):\n        self.assertEqual(1, ")
    block = shape(reply, Expected("code", "WriteTest"))
    test_file = tmp_path / "test_math.py"
    test_file.write_text(_body(block))
    run = subprocess.run([sys.executable, str(test_file)], capture_output=True, text=True, timeout=60)
    assert "Ran 1 test" in run.stderr and run.returncode == 0
    # a file that has its guard, or no TestCase, is left as written; WriteCode's files never get one
    guarded = "```python\nimport unittest\nclass T(unittest.TestCase):\n    pass\nif __name__ == '__main__':\n    unittest.main()\n```"
    assert shape(guarded, Expected("code", "WriteTest")) == guarded
    assert "__main__" not in shape(reply, Expected("code", "WriteCode"))


def test_a_test_file_imports_the_code_under_test_as_runcode_finds_it(tmp_path):
    from metagpt.actions.write_test import PROMPT_TEMPLATE

    # GIVEN WriteTest's own prompt, which places the project under a made-up /data
    prompt = PROMPT_TEMPLATE.format(code_to_test="def add(a, b):\n    return a + b", test_file_name="test_calc.py",
                                    source_file_path="/data/calc_app/calc.py", workspace="/data")
    asked, root = with_test_import(prompt)
    # THEN the prompt names the module to import, and the made-up folder is known
    assert root == "data" and asked.startswith(prompt.rstrip()) and "`from calc_app.calc import ...`" in asked
    assert with_test_import("## Code: calc.py") == ("## Code: calc.py", None)
    # AND a reply that imports through /data anyway is fixed to run from the project folder
    reply = ("```python\nimport unittest\nfrom data.calc_app.calc import add\n\n\nclass TestAdd(unittest.TestCase):\n"
             "    def test_add(self):\n        self.assertEqual(add(1, 2), 3)\n```")
    block = shape(reply, Expected("code", "WriteTest", fake_root=root))
    (tmp_path / "calc_app").mkdir()
    (tmp_path / "calc_app" / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_calc.py").write_text(_body(block))
    run = subprocess.run([sys.executable, "tests/test_calc.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert "from calc_app.calc import add" in block and "Ran 1 test" in run.stderr and run.returncode == 0, run.stderr
