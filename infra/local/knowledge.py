"""Knowledge bases from the command line (the local store by default):

  python -m infra.local.knowledge seed [--kb lumen] [--index]   put the sample kb's documents (where absent)
  python -m infra.local.knowledge reindex --kb lumen            reconcile every document now (a repair)
  python -m infra.local.knowledge search --kb lumen "退款多久到账" [-k 3]

`--data DIR` names the local runtime's data directory (default ./data); with TROUPE_STORE=oss
the bucket of TROUPE_OSS_BUCKET is used instead. Documents put here fire the indexer's trigger
when the local runtime is serving (the store announces them in its event spool, spool.py);
`--index` indexes them in this process instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _store(data: str):
    if os.environ.get("TROUPE_STORE") == "oss":
        from shared.env import build_store

        return build_store()
    from infra.local.spool import local_store

    return local_store(data)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infra.local.knowledge", description="troupe knowledge bases")
    ap.add_argument("--data", default="data", help="the local runtime's data directory (default ./data)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    seed = sub.add_parser("seed", help="put the sample knowledge base's documents where absent")
    seed.add_argument("--kb", default="lumen")
    seed.add_argument("--index", action="store_true", help="index them in this process")
    rx = sub.add_parser("reindex", help="reconcile every document of a knowledge base now")
    rx.add_argument("--kb", required=True)
    se = sub.add_parser("search", help="the best passages for a query")
    se.add_argument("--kb", required=True)
    se.add_argument("query")
    se.add_argument("-k", type=int, default=3)
    args = ap.parse_args(argv)

    from shared.errors import TroupeError
    from shared.knowledge import documents, indexer, retrieval

    store = _store(args.data)
    try:
        if args.cmd == "seed":
            written = documents.seed_samples(store, args.kb)
            print(json.dumps({"kb": args.kb, "written": written}, ensure_ascii=False))
            if args.index:
                for o in indexer.reindex(store, args.kb):
                    print(json.dumps(o, ensure_ascii=False))
        elif args.cmd == "reindex":
            for o in indexer.reindex(store, args.kb):
                print(json.dumps(o, ensure_ascii=False))
        else:
            for p in retrieval.search(store, args.kb, args.query, args.k):
                print(json.dumps(p, ensure_ascii=False))
    except TroupeError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
