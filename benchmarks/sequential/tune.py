"""Per-epoch validation curve of one sequential recipe setting (tuning uses the valid users only).

Usage:
  python benchmarks/sequential/tune.py youtube_dnn 12 '{"loss": "sampled", "num_negatives": 500}'
  python benchmarks/sequential/tune.py comirec_dr 8 \
      '{"l2_normalize": true, "temperature": 0.1, "weight_decay": 1e-3}'
Prints, after each epoch, the training loss (of the epoch's last batch, without the weight-decay
penalty) and Recall@20/50 of the valid users; `"seed"` in the JSON picks the seed (default 0).
Params not given take `SequentialRecipe.resolve_params`'s defaults (raw dot products,
temperature 1), not the CLI defaults of a recipe: give the multi-interest recipes'
`"l2_normalize": true, "temperature": 0.1` explicitly. Test users are never scored here.
"""

import json
import sys
import time

import tensorflow as tf

import towerkit  # noqa: F401  (legacy Keras switch)
from towerkit.recipes import get_recipe
from towerkit.recipes import sequential


def main(argv) -> None:
    name, epochs = argv[0], int(argv[1])
    params = json.loads(argv[2]) if len(argv) > 2 else {}
    seed = int(params.pop("seed", 0))
    recipe = get_recipe(name)()
    config = {"dataset": "movielens/100k-ratings", "params": params}
    full = recipe.resolve_params(config)
    protocol = sequential.load_protocol(config)
    tf.keras.utils.set_random_seed(seed)
    model = recipe.build_model(full, protocol)
    model.compile(optimizer=tf.keras.optimizers.Adam(full["learning_rate"]),
                  steps_per_execution=32)
    data = protocol.train_dataset(int(full["batch_size"]), seed=seed)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        loss = model.fit(data, epochs=1, verbose=0).history["loss"][-1]
        valid = sequential._metrics(protocol, "valid", recipe.top_n(model, protocol, "valid"))
        print(f"{name} {json.dumps(params)} epoch {epoch} loss {loss:.3f} "
              f"valid recall@50 {valid['recall@50']:.4f} recall@20 {valid['recall@20']:.4f} "
              f"({time.perf_counter() - start:.0f}s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
