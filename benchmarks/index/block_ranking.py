"""NumPy model of the portable search: recall@10 against blocks scored, for block-ranking scores.

Reproduces the block-score table of RESULTS.md ("blocks ranked by their radius"). Needs the
workdir of a `run_benchmark.py` run at 1M (its serialized ScaNN searcher and exact truth):

  python benchmarks/index/block_ranking.py --workdir /tmp/tk_index_bench --queries 300

Leaves are ranked by `q . centre + |q| * spread` (the index's leaf score; the exact top
`--leaves`, where the index uses a sampled cut on large partitions), then the blocks of those
leaves by each score below, then the best B blocks are scored exactly.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from clustered_data import clustered_dataset  # noqa: E402

from towerkit.index import portable_scann, portable_search  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/towerkit_index_bench")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--generated-queries", type=int, default=1300,
                        help="--num-queries + --num-tuning-queries of that run (the data "
                             "generator draws candidates and queries together)")
    parser.add_argument("--leaves", type=int, default=200)
    parser.add_argument("--blocks", type=int, nargs="+", default=[16, 24, 32, 48, 64])
    args = parser.parse_args()
    work = pathlib.Path(args.workdir) / str(args.n)
    candidates, queries = clustered_dataset(args.n, args.generated_queries, seed=0)
    queries = queries[:args.queries]
    if not np.array_equal(queries, np.load(work / "queries.npy")[:args.queries]):
        raise SystemExit(f"the queries differ from {work / 'queries.npy'}: pass the run's "
                         "--num-queries + --num-tuning-queries as --generated-queries")
    truth = np.load(work / "truth.npy")[:args.queries]
    partition = portable_scann.read_scann_partition(work / "scann", expected_size=args.n)
    layout = portable_search.build_layout(candidates, partition.centroids, partition.assignment)
    dim = candidates.shape[1]
    leaf_keys, leaf_blocks = layout["leaf_keys"], layout["leaf_blocks"]
    blocks, rows = layout["blocks"], layout["block_rows"]
    real = rows >= 0
    counts = real.sum(1)
    centres = blocks.sum(1) / counts[:, None]
    residual = np.where(real[..., None], blocks - centres[:, None], 0.0)
    spread = np.sqrt((residual ** 2).sum((1, 2)) / (counts * dim))
    radius = np.sqrt((residual ** 2).sum(2).max(1))
    scores = {f"centre + {w} |q| spread": (spread, w) for w in (1.0, 2.0, 3.0)}
    scores.update({f"centre + {w} |q| radius": (radius, w)
                   for w in (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)})
    for name, (size, weight) in scores.items():
        found = {b: 0.0 for b in args.blocks}
        for q, true in zip(queries, truth):
            norm = np.linalg.norm(q)
            leaf_score = q @ leaf_keys[:dim] + norm * leaf_keys[dim] + leaf_keys[dim + 1]
            leaves = np.argpartition(-leaf_score, args.leaves)[:args.leaves]
            ids = np.concatenate([np.arange(leaf_blocks[l], leaf_blocks[l + 1]) for l in leaves])
            ranked = ids[np.argsort(-(centres[ids] @ q + weight * norm * size[ids]))]
            for b in args.blocks:
                chosen = ranked[:b]
                exact = np.where(real[chosen], blocks[chosen] @ q, -np.inf).ravel()
                top = rows[chosen].ravel()[np.argsort(-exact)[:10]]
                found[b] += len(set(top) & set(true)) / 10
        print(name, json.dumps({b: round(v / len(queries), 4) for b, v in found.items()}),
              flush=True)


if __name__ == "__main__":
    main()
