# towerkit: {"test_parameters": {"EPOCHS": 2, "NUM_EVENTS": 40000}}
# %% [markdown]
# # Your own data: an interaction log from CSV to an exported retrieval model
#
# Every other tutorial reads MovieLens. This one starts from **your** log: a CSV file with
# your own column names, your own ids (strings here) and your own time format. It shows the
# data layer that knows no data set (`towerkit.data`):
#
# 1. generate a synthetic shop log (customers, products, ISO timestamps, quantities) and a
#    product table, and write them to CSV, as an export from your warehouse would be;
# 2. read them through `towerkit.data.sources` with a `Columns` mapping, and see the one-line
#    errors a bad schema gets;
# 3. split by time, build vocabularies, and build the sequential protocol on this log;
# 4. prepare training shards (the path for logs larger than memory) and stream them with
#    `tf.data`;
# 5. train a two-tower retrieval model on the stream, evaluate it on the later events, and
#    export it for TensorFlow Serving.
#
# References: Yi et al., *Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
# Recommendations*, RecSys 2019 (the two-tower model and its logQ correction),
# https://doi.org/10.1145/3298689.3346996.

# %% tags=["parameters"]
NUM_CUSTOMERS = 3000
NUM_PRODUCTS = 800
NUM_CATEGORIES = 12
NUM_EVENTS = 120_000  # the test suite uses 40,000
EPOCHS = 4            # passes over the training shards (the test suite uses 2)
BATCH_SIZE = 1024
EMBEDDING_DIM = 32
SEED = 0

# %%
import towerkit  # first: switches TensorFlow to the legacy Keras that TFRS needs

import pathlib
import tempfile

import numpy as np
import pandas as pd
import tensorflow as tf

from towerkit import serving
from towerkit.data import (Columns, read_shards, sequential_protocol, sources, split_by_time,
                           write_shards)
from towerkit.features import FeatureSet, IdEmbedding
from towerkit.index import BruteForce
from towerkit.models import Tower, TwoTowerModel
from towerkit.tasks import Retrieval

tf.keras.utils.set_random_seed(SEED)
workdir = pathlib.Path(tempfile.mkdtemp(prefix="towerkit-own-data-"))
print("working in a temporary directory; towerkit", towerkit.__version__)

# %% [markdown]
# ## 1. A synthetic shop log
#
# Each customer has a favourite product category and buys from it 80% of the time, otherwise
# anywhere; within a category, products are zipf-popular. Events are spread over 60 days.
# That is enough structure for a retrieval model to learn something a popularity list cannot.

# %%
rng = np.random.default_rng(SEED)
category_of_product = rng.integers(0, NUM_CATEGORIES, NUM_PRODUCTS)
popularity = 1.0 / np.arange(1, NUM_PRODUCTS + 1) ** 0.9
rng.shuffle(popularity)
favourite = rng.integers(0, NUM_CATEGORIES, NUM_CUSTOMERS)

customers = rng.integers(0, NUM_CUSTOMERS, NUM_EVENTS)
in_favourite = rng.random(NUM_EVENTS) < 0.8
products = np.empty(NUM_EVENTS, dtype=np.int64)
for c in range(NUM_CATEGORIES):
    members = np.flatnonzero(category_of_product == c)
    p = popularity[members] / popularity[members].sum()
    rows = np.flatnonzero(in_favourite & (favourite[customers] == c))
    products[rows] = rng.choice(members, len(rows), p=p)
rows = np.flatnonzero(~in_favourite)
products[rows] = rng.choice(NUM_PRODUCTS, len(rows), p=popularity / popularity.sum())
seconds = rng.integers(0, 60 * 24 * 3600, NUM_EVENTS)

events = pd.DataFrame({
    "customer": [f"c{c:05d}" for c in customers],
    "product": [f"sku-{p:04d}" for p in products],
    "event_time": (np.datetime64("2026-01-01T00:00:00") + seconds.astype("timedelta64[s]")),
    "quantity": rng.integers(1, 4, NUM_EVENTS),
})
events.to_csv(workdir / "events.csv", index=False)
seen = np.unique(products)
pd.DataFrame({"product": [f"sku-{p:04d}" for p in seen],
              "category": [f"cat-{category_of_product[p]}" for p in seen]}).to_csv(
    workdir / "products.csv", index=False)
print((workdir / "events.csv").read_text().splitlines()[:3])

# %% [markdown]
# ## 2. Read it
#
# A `Columns` mapping says which of your columns is the user, the item, the time, and
# (optionally) the rating and the weight. Ids may be strings or integers; times may be integers
# (e.g. Unix seconds) or dates, which become Unix seconds. The product table joins on its
# `product` column: it must have exactly one row per product of the log.

# %%
columns = Columns(user="customer", item="product", time="event_time", weight="quantity")
log = sources.read(workdir / "events.csv", columns, item_features=workdir / "products.csv")
print(log, "| item features:", list(log.item_features.columns))
print({field: log[field][:3] for field in log.fields})

# %% [markdown]
# Every problem is a one-line error, raised before any work starts. A few of them:

# %%
broken = {
    "a column name that is not in the file": lambda: sources.read(
        workdir / "events.csv", Columns(user="user_id", item="product")),
    "float ids": lambda: sources.from_dataframe(
        pd.DataFrame({"customer": [1.0, 2.0], "product": ["a", "b"]}), columns=Columns(
            user="customer", item="product")),
    "a product table with a duplicate key": lambda: sources.read(
        workdir / "events.csv", columns, item_features=pd.DataFrame(
            {"product": ["sku-0000", "sku-0000"], "category": ["x", "y"]})),
    "an unknown file format": lambda: sources.read(workdir / "events.xlsx", columns),
}
for what, attempt in broken.items():
    try:
        attempt()
    except (ValueError, TypeError) as e:
        print(f"{what}:\n  {type(e).__name__}: {e}")

# %% [markdown]
# ## 3. Splits, vocabularies, the sequential protocol
#
# We hold out the last 10% of events in time: the model is trained on the past and asked
# about the future, as in production. Vocabularies list ids most frequent first; `min_count`
# leaves rare ids to the out-of-vocabulary row.

# %%
train, test = split_by_time(log, test_fraction=0.1)
print(f"train {len(train):,} events, test {len(test):,} events; test starts at "
      f"{np.datetime64(int(test['timestamp'].min()), 's')}")
users = train.vocabulary("user", min_count=2)
items = log.vocabulary("item")  # the whole catalogue is a candidate
print(f"{len(users)} customers with >= 2 training events; {len(items)} products; "
      f"most bought: {items.as_list()[:3]}")

# %% [markdown]
# The sequential benchmark protocol (users split 80/10/10, "history before k -> item k"
# training examples, held-out users' later items as ground truth; see
# `towerkit.data.sequential_protocol`) works on this log too, ready for the sequence models.

# %%
protocol = sequential_protocol(log)
print(f"{protocol.num_items} items, {len(protocol.train_examples['target']):,} training "
      f"examples, {len(protocol.split('valid'))} valid and {len(protocol.split('test'))} test users")
batch = next(iter(protocol.train_dataset(batch_size=4, seed=SEED)))
print({k: v.shape for k, v in batch.items()})

# %% [markdown]
# ## 4. Training shards
#
# For a log that does not fit in memory, `write_shards` reads the source a chunk at a time
# (each chunk checked like a whole log), routes each customer's events to one shard, and
# renames the finished directory into place. `read_shards` streams the shards with `tf.data`
# (interleaved files, parallel parsing, shuffling, prefetching). The Apache Beam pipeline
# `towerkit.data.beam_pipeline.prepare_shards` writes the same shards on many machines.
# Here we shard the training events; the same call takes a CSV or Parquet path (or a glob).

# %%
manifest = write_shards(train, workdir / "shards", num_shards=4, block_rows=2048)
print(manifest["rows_per_shard"], manifest["fields"])
stream = read_shards(workdir / "shards", batch_size=BATCH_SIZE, shuffle_buffer=20_000,
                     seed=SEED)

# %% [markdown]
# ## 5. A two-tower model on the stream
#
# The query tower embeds the customer, the candidate tower the product. The in-batch softmax
# gets the logQ correction from the products' training counts (popular products are in many
# batches as negatives; the correction keeps them from being over-penalised).

# %%
item_counts = train.vocabulary("item")
query_tower = Tower(FeatureSet({"user": IdEmbedding(users.as_list(), EMBEDDING_DIM)}))
candidate_tower = Tower(FeatureSet({"item": IdEmbedding(items.as_list(), EMBEDDING_DIM)}))
model = TwoTowerModel(query_tower, candidate_tower,
                      Retrieval(sampling_vocabulary=item_counts.as_list(),
                                sampling_counts=item_counts.counts),
                      candidate_id_key="item")
model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
history = model.fit(stream, epochs=EPOCHS, verbose=0)
print("training loss per epoch:", [round(v) for v in history.history["loss"]])

# %% [markdown]
# **Evaluation** on the held-out later events: for each, is the product among the customer's
# top 10 out of the whole catalogue? A popularity list (the 10 most-bought training products
# for everyone) is the baseline to beat.

# %%
K = 10
catalogue = np.array(items.values)
index = BruteForce(query_model=query_tower, k=50)
index.index(candidate_tower({"item": tf.constant(catalogue)}), identifiers=catalogue)
_, top = index({"user": tf.constant(test["user"].astype(bytes))})
model_hits = (top.numpy()[:, :K] == test["item"].astype(bytes)[:, None]).any(axis=1).mean()
popular = item_counts.values[:K]
popularity_hits = np.isin(test["item"].astype(bytes), popular.astype(bytes)).mean()
print(f"top-{K} hit rate on later events: two-tower {model_hits:.3f}, "
      f"popularity {popularity_hits:.3f}, random {K / len(catalogue):.3f}")
assert model_hits > popularity_hits > K / len(catalogue)

# %% [markdown]
# ## 6. Export
#
# The index with the query tower inside is the servable: a request carries a customer id and
# gets product ids back. `serving.export` writes a numbered version directory atomically;
# `LocalModel` answers exactly like TF Serving would, from this process.

# %%
base = workdir / "exports" / "shop"
version = serving.export(index, base, query_signature={"user": tf.TensorSpec([None], tf.string)},
                         warmup_queries={"user": test["user"][:3].astype(bytes)})
local = serving.LocalModel(base)
customer = test["user"][0].decode()
answer = local.predict({"user": [customer]}, k=5)
print(f"exported {version.name}; top 5 for {customer}: {answer.ids}")
np.testing.assert_array_equal(np.asarray(answer.ids).astype(bytes)[0], top.numpy()[0, :5])

# %% [markdown]
# ## 7. The same log through `towerkit train`
#
# Every recipe also trains on your files from the command line (or `make_run_config(...,
# data=file_data(...))` from Python): `--data` names the log and `--user-column`,
# `--item-column`, `--time-column` and `--rating-column` say which columns hold what. Feature
# tables (`--item-features PATH --item-key C`, `--user-features PATH --user-key C`) name their
# columns by role: items `title` and `genres`, users `age`, `age_bucket`, `gender`,
# `occupation` and `zip_code`. Here SASRec on the shop log; `evaluate` and `export` treat the
# run like any other, and the exported model answers with your product ids.

# %%
from towerkit.cli.main import main as towerkit_cli
from towerkit.recipes import load_run

run = workdir / "runs" / "sasrec"
assert towerkit_cli(["train", "--model", "sasrec", "--data", str(workdir / "events.csv"),
                     "--user-column", "customer", "--item-column", "product",
                     "--time-column", "event_time", "--epochs", str(EPOCHS),
                     "--embedding-dim", str(EMBEDDING_DIM), "--seed", str(SEED),
                     "--out", str(run)]) == 0
assert towerkit_cli(["evaluate", str(run), "--split", "test"]) == 0
assert towerkit_cli(["export", str(run), "--model-base-path",
                     str(workdir / "exports" / "sasrec")]) == 0
recipe, _ = load_run(run)
queries = recipe.index_inputs(run).sample_queries
answer = serving.LocalModel(workdir / "exports" / "sasrec").predict(
    {name: values[:1] for name, values in queries.items()}, k=5)
print("SASRec's top 5 for a held-out customer:", answer.ids)
assert all(np.char.startswith(np.asarray(answer.ids).astype(str), "sku-").ravel())
