"""Knowledge bases, measured (not asserted): `python -m bench.knowledge [--quick]`.

For knowledge bases of 1,000 and 10,000 chunks (synthetic Markdown documents of ~10 chunks
each, 80% English-like, 20% Chinese), on a DiskStore in a temp directory:
  - indexing throughput: documents/s and chunks/s, one `reconcile` per document as the
    indexer's trigger would run them (one after another, so the figure is per instance);
  - storage requests of one document's indexing (they do not grow with the kb, bytes do: the
    manifest is read and rewritten);
  - retrieval latency p50/p95: cold (the first search of a process: it reads the manifest and
    every document's index file) and warm (one LIST per search), and the refresh after one
    document changed (the manifest and that document's file).
The DiskStore has no network latency: on OSS add ~5-20 ms per request (cold reads are
parallel, 16 at a time).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

ZH_WORDS = ("退款 订单 发货 物流 保修 维修 电机 滤芯 客服 投诉 补偿 优惠券 快递 签收 地址 发票 安装 冰箱 吸尘器 净化器 "
            "洗衣机 电池 充电 故障 检测 更换 配件 运费 时效 延误 丢件 破损 退货 换货 政策 规则 升级 组长 安全 过热 "
            "火花 断电 用户 会员 积分 价格 活动 支付 银行卡 支付宝 微信 到账 工作日 仓库 预约 上门 回收 说明书 型号 "
            "噪音 异味 漏水 屏幕 按键 遥控器 温度 模式 定时 清洁 保养 寿命 质量 批次 召回 通知 短信 邮件 电话 在线").split()


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))]


class Corpus:
    def __init__(self, seed: int = 7, vocab: int = 6000):
        self.rnd = random.Random(seed)
        syll = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
        words = set()
        while len(words) < vocab:
            words.add("".join(self.rnd.choice(syll) for _ in range(self.rnd.randint(2, 4))))
        self.words = sorted(words)
        self.weights = [1 / (i + 1) for i in range(len(self.words))]  # Zipf-like

    def sentence(self, zh: bool) -> str:
        if zh:
            return "".join(self.rnd.choices(ZH_WORDS, k=self.rnd.randint(6, 12))) + "。"
        ws = self.rnd.choices(self.words, self.weights, k=self.rnd.randint(8, 16))
        return " ".join(ws).capitalize() + "."

    def document(self, i: int, sections: int = 10) -> str:
        zh = i % 5 == 4
        out = [f"# Document {i}\n"]
        for j in range(sections):
            out.append(f"## Section {j}\n")
            para, target = [], (160 if zh else 420)
            while sum(len(s) + 1 for s in para) < target:
                para.append(self.sentence(zh))
            out.append(("" if zh else " ").join(para) + "\n")
        return "\n".join(out)

    def query(self) -> str:
        if self.rnd.random() < 0.2:
            return "".join(self.rnd.sample(ZH_WORDS, 2))
        return " ".join(self.rnd.choices(self.words[50:2000], k=self.rnd.randint(2, 4)))


def run(target_chunks: int, queries: int, seed: int = 7) -> dict:
    from shared.knowledge import retrieval
    from shared.knowledge.indexer import doc_key, read_latest, reconcile
    from shared.store.disk import DiskStore

    store = DiskStore(tempfile.mkdtemp(prefix="troupe-kb-bench-"))
    corpus = Corpus(seed)
    kb = "bench"
    docs, chunks, i = 0, 0, 0
    index_s = 0.0
    per_doc_requests = None
    while chunks < target_chunks:
        store.put(doc_key(kb, f"docs/d{i:05d}.md"), corpus.document(i).encode("utf-8"))
        before = store.total_requests()
        t = time.perf_counter()
        out = reconcile(store, kb, f"docs/d{i:05d}.md")
        index_s += time.perf_counter() - t
        per_doc_requests = store.total_requests() - before
        chunks += out["chunks"]
        docs += 1
        i += 1
    _, man = read_latest(store, kb)
    manifest_bytes = len(store.get(store.list(f"knowledge-index/{kb}/manifest/", max_keys=1).objects[0].key))

    retrieval.clear_cache()
    qs = [corpus.query() for _ in range(queries)]
    before = store.total_requests()
    t = time.perf_counter()
    retrieval.search(store, kb, qs[0], k=3)
    cold_ms = (time.perf_counter() - t) * 1000
    cold_requests = store.total_requests() - before
    warm = []
    before = store.total_requests()
    for q in qs:
        t = time.perf_counter()
        retrieval.search(store, kb, q, k=3)
        warm.append((time.perf_counter() - t) * 1000)
    warm_requests = (store.total_requests() - before) / len(qs)
    # one document changes: the next search refreshes only it
    store.put(doc_key(kb, "docs/d00000.md"), corpus.document(10 ** 6).encode("utf-8"))
    reconcile(store, kb, "docs/d00000.md")
    before = store.total_requests()
    t = time.perf_counter()
    retrieval.search(store, kb, qs[1], k=3)
    refresh_ms = (time.perf_counter() - t) * 1000
    refresh_requests = store.total_requests() - before
    return {"chunks": man["chunks"], "docs": docs, "docs_per_s": docs / index_s, "chunks_per_s": chunks / index_s,
            "index_requests": per_doc_requests, "manifest_kb": manifest_bytes / 1024,
            "cold_ms": cold_ms, "cold_requests": cold_requests,
            "warm_p50": pct(warm, 50), "warm_p95": pct(warm, 95), "warm_mean": statistics.mean(warm),
            "warm_requests": warm_requests, "refresh_ms": refresh_ms, "refresh_requests": refresh_requests}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the 1,000-chunk knowledge base")
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args(argv)
    from shared.knowledge.text import tokenize

    tokenize("预热 warm up")  # jieba's dictionary: loaded once per process (~0.5 s), not part of the figures
    sizes = [1000] if args.quick else [1000, 10000]
    rows = [run(n, args.queries) for n in sizes]
    print("knowledge bases (DiskStore on local disk: no network latency; one process; k=3)")
    head = (f"{'chunks':>7} {'docs':>5} | {'index docs/s':>12} {'chunks/s':>9} {'req/doc':>7} {'manifest':>9} | "
            f"{'cold ms':>8} {'cold req':>8} | {'warm p50':>8} {'warm p95':>8} {'req/search':>10} | "
            f"{'1 doc changed: ms':>17} {'req':>4}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['chunks']:>7} {r['docs']:>5} | {r['docs_per_s']:>12.1f} {r['chunks_per_s']:>9.0f} "
              f"{r['index_requests']:>7} {r['manifest_kb']:>7.0f}KB | {r['cold_ms']:>8.1f} {r['cold_requests']:>8} | "
              f"{r['warm_p50']:>8.2f} {r['warm_p95']:>8.2f} {r['warm_requests']:>10.1f} | "
              f"{r['refresh_ms']:>17.1f} {r['refresh_requests']:>4}")


if __name__ == "__main__":
    main()
