"""Times a serialized native ScaNN searcher in its own process (one search thread).

Run by `run_benchmark.py` in alternating rounds with `measure_saved_model.py`, so that native
ScaNN and the SavedModels are each timed in a fresh process of their own; prints one JSON line.

  python measure_scann.py SCANN_DIR QUERIES.npy TRUTH.npy \
      '[{"leaves_to_search": 180, "reorder": 1000}]' --batches 1 256 --budget-s 10
"""

import json

import numpy as np
import scann

from timing import measurement_parser, run_settings


def main() -> None:
    parser = measurement_parser(
        "searcher", 'JSON list of {"leaves_to_search", "reorder"} dicts')
    args = parser.parse_args()
    searcher = scann.scann_ops_pybind.load_searcher(args.searcher)
    searcher.set_num_threads(1)
    k = np.load(args.truth).shape[1]

    def configure(setting):
        leaves, reorder = setting["leaves_to_search"], setting["reorder"]

        def search_for(batch):
            if batch == 1:
                return lambda q: [searcher.search(
                    q[0], final_num_neighbors=k, pre_reorder_num_neighbors=reorder,
                    leaves_to_search=leaves)[0]]
            return lambda q: searcher.search_batched(
                q, final_num_neighbors=k, pre_reorder_num_neighbors=reorder,
                leaves_to_search=leaves)[0]

        return search_for

    print(json.dumps({"rows": run_settings(args, json.loads(args.settings), configure)}))


if __name__ == "__main__":
    main()
