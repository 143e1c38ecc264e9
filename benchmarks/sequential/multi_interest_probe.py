"""Per-epoch valid/test recall of one multi-interest recipe (the tuning probe).

Usage:
  python benchmarks/sequential/multi_interest_probe.py MODEL EPOCHS '{"param": value, ...}'
  e.g. python benchmarks/sequential/multi_interest_probe.py comirec_sa 4 \
      '{"l2_normalize": true, "temperature": 0.1}'

Params not given take the SequentialRecipe defaults (raw dot products, temperature 1, full
softmax, batch 256, Adam 1e-3, dim 64) plus K = 4. Settings were chosen on the valid column.
"""

import json
import sys
import time

import tensorflow as tf

import towerkit  # noqa: F401
import towerkit.recipes.sequential as S
from towerkit.recipes import get_recipe


def main():
    model_name, epochs = sys.argv[1], int(sys.argv[2])
    params = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    seed = int(params.pop("seed", 0))
    recipe = get_recipe(model_name)()
    config = {"dataset": "movielens/100k-ratings", "params": params}
    p = recipe.resolve_params(config)
    protocol = S.load_protocol(config)
    tf.keras.utils.set_random_seed(seed)
    model = recipe.build_model(p, protocol)
    model.compile(optimizer=tf.keras.optimizers.Adam(p["learning_rate"]), steps_per_execution=32)
    data = protocol.train_dataset(int(p["batch_size"]), seed=seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        loss = model.fit(data, epochs=1, verbose=0).history["loss"][-1]
        v = S._metrics(protocol, "valid", recipe.top_n(model, protocol, "valid"))
        t = S._metrics(protocol, "test", recipe.top_n(model, protocol, "test"))
        print(f"{model_name} {json.dumps(params)} ep{epoch + 1} loss {loss:.3f} "
              f"valid r50 {v['recall@50']:.4f} r20 {v['recall@20']:.4f} | "
              f"test r50 {t['recall@50']:.4f} r20 {t['recall@20']:.4f} | "
              f"{time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
