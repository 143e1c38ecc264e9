"""`Index`: the base class every towerkit retrieval index derives from."""

import abc
import logging
import sys
import time
import warnings
from typing import ClassVar, Dict, Optional, Tuple, Union

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from towerkit.index.unique_top_k import unique_top_k

_LOG = logging.getLogger("towerkit.index")

Queries = Union[tf.Tensor, np.ndarray, Dict[str, tf.Tensor]]


class Index(tfrs.layers.factorized_top_k.TopK, abc.ABC):
    """A top-k retrieval index over candidate embeddings (drop-in for TFRS `TopK` layers).

    The base class owns everything that is common to all indexes: the optional query model,
    input validation, candidate identifiers (strings or integers), `k` at call time up to the
    `k` fixed at construction (`max_k`), query-time exclusions and multi-vector queries
    `[batch, num_interests, dim]`, which are searched per interest and merged by max score with
    duplicate candidates removed. A subclass only implements:

    - `_build(candidates)`: build its structures from a validated float32 `[n, dim]` array.
    - `_search(queries, k)`: float32 `[batch, dim]` embeddings and an int (or int32 scalar
        tensor) `k <= n` -> `(scores [batch, k] float32, rows [batch, k] int32)`, best first,
        `rows` indexing the candidates as given to `index`. Traceable in a `tf.function`; it must
        read only variables created by `_build` (with `self._add_state(name, value)`, which
        also counts them in `size_bytes()`) so that the index saves right after building.
    - `is_exact()`, and optionally `custom_ops` (ops a SavedModel needs beyond stock TF).

    Approximate indexes plug into `towerkit.index.tune_for_recall` by adding
    `tuning_grid(k) -> list[dict]` (cheapest setting first) and `set_search_params(**setting)`;
    long builds report steps with `self._progress(message)`.

    Example:

    ```python
    index = towerkit.index.BruteForce(query_model, k=100)
    index.index(candidate_embeddings, identifiers=item_titles)
    scores, titles = index({"user_id": tf.constant(["42"])}, k=10)
    towerkit.index.save_index(index, "/tmp/index")
    ```
    """

    #: Op names a SavedModel of this index needs beyond stock TensorFlow.
    custom_ops: ClassVar[Tuple[str, ...]] = ()

    #: An approximate index over at most this many floats (`n * dim`, 1 MiB of float32) searches
    #: exhaustively by default: one exact query then reads about as much memory as the ANN
    #: graph's fixed cost (~130 us, see NOTES), so exact search costs no more and has recall 1.
    #: `set_exhaustive(False)` (or `tune_for_recall`) switches to the ANN structures.
    EXHAUSTIVE_MAX_FLOATS: ClassVar[int] = 262_144

    def __init__(self, query_model: Optional[tf.keras.Model] = None, k: int = 10,
                 name: Optional[str] = None, verbose: bool = False, **kwargs) -> None:
        """Initializes the index.

        Args:
            query_model: Optional Keras model/layer mapping raw query features to `[batch, dim]`
                or `[batch, num_interests, dim]`. Without it, queries are embeddings.
            k: int. Maximum (and default) number of results per query, fixed at build.
            name: Optional layer name.
            verbose: bool. Print build progress lines to stderr (they are always logged to the
                `towerkit.index` logger at INFO).
            **kwargs: Passed to `tf.keras.Model`.

        Raises:
            ValueError: if `k` is not a positive integer.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(
                f"k must be a positive integer (the maximum number of results); got {k!r}.")
        super().__init__(k=int(k), name=name, **kwargs)
        self.query_model = query_model
        self.verbose = verbose
        self._build_start = None
        self._identifiers = None
        self._num_candidates = None
        self._dim = None
        self._state = []
        self._candidate_embeddings = None
        self._exhaustive_candidates = None
        self.exhaustive = False
        self._id_multiplicity = 1
        self.build_seconds = None

    # ------------------------------------------------------------------ properties
    @property
    def max_k(self) -> int:
        """The largest `k` a call may ask for (the constructor's `k`)."""
        return self._k

    @property
    def num_candidates(self) -> Optional[int]:
        """Number of indexed candidates (None before `index`)."""
        return self._num_candidates

    @property
    def dim(self) -> Optional[int]:
        """Embedding dimension (None before `index`)."""
        return self._dim

    @property
    def identifiers(self) -> Optional[tf.Tensor]:
        """The `[n]` candidate identifiers (row numbers as int32 when none were given)."""
        return None if self._identifiers is None else self._identifiers[1:]

    @property
    def candidate_embeddings(self) -> Optional[np.ndarray]:
        """The float32 `[n, dim]` candidates given to `index` (kept for recall measurements)."""
        return self._candidate_embeddings

    @property
    def is_built(self) -> bool:
        return self._identifiers is not None

    # ---------------------------------------------------------------- subclass API
    @abc.abstractmethod
    def _build(self, candidates: np.ndarray) -> None:
        """Builds the search structures from validated float32 `[n, dim]` candidates."""

    @abc.abstractmethod
    def _search(self, queries: tf.Tensor, k) -> Tuple[tf.Tensor, tf.Tensor]:
        """Searches float32 `[batch, dim]` queries -> `(scores, rows)` `[batch, k]`."""

    def _index_size_bytes(self) -> int:
        """Bytes held by the built structures (default: the variables made by `_add_state`)."""
        return sum(_variable_bytes(v) for v in self._state)

    def _progress(self, message: str) -> None:
        """Reports a build step (`[towerkit.index] Annoy 12.3s: message`)."""
        elapsed = time.perf_counter() - self._build_start if self._build_start else 0.0
        line = f"{type(self).__name__} {elapsed:.1f}s: {message}"
        _LOG.info(line)
        if self.verbose:
            print(f"[towerkit.index] {line}", file=sys.stderr, flush=True)

    def _add_state(self, name: str, value) -> tf.Variable:
        """Creates a non-trainable variable holding part of the built index (counted in size)."""
        with tf.init_scope():
            variable = tf.Variable(value, trainable=False, name=name)
        self._state.append(variable)
        return variable

    # ------------------------------------------------------------------- building
    def index(self, candidates, identifiers=None) -> "Index":
        """Builds the index (replacing any previous one).

        Args:
            candidates: float `[n, dim]` candidate embeddings (tensor or array).
            identifiers: Optional `[n]` identifiers, all strings/bytes or all integers (unique
                ones recommended; see below). Defaults to row numbers (int32), like TFRS.

        Returns:
            Self.

        Raises:
            ValueError: empty candidates, wrong rank, NaN/Inf values, `k` larger than the
                catalogue or identifier count mismatch.
            TypeError: non-numeric candidates, identifiers of an unsupported dtype, or a mix
                of string and integer identifiers.

        Duplicate identifiers are accepted with a `UserWarning`, as TFRS's layers accept them:
        each row stays a separate candidate, so a result may hold the same identifier more
        than once (one per matching row), and `query_with_exclusions` excludes all its rows.
        """
        matrix = _as_candidate_matrix(candidates)
        n, dim = matrix.shape
        ids = _as_identifiers(identifiers, n)
        self._id_multiplicity = int(np.unique(ids, return_counts=True)[1].max())
        if self._k > n:
            raise ValueError(
                f"k={self._k} is larger than the catalogue ({n} candidates): the index could "
                f"never return k distinct results. Construct the index with k <= {n}.")
        self._build_start = start = time.perf_counter()
        self._progress(f"building over {n} candidates x {dim} dims")
        self._num_candidates, self._dim = n, dim
        self._state = []
        self._candidate_embeddings = matrix
        self._build(matrix)
        self._exhaustive_candidates = None
        self.exhaustive = False
        if not self.is_exact() and n * dim <= self.EXHAUSTIVE_MAX_FLOATS:
            self._exhaustive_candidates = self._add_state("exhaustive_candidates", matrix)
            self.exhaustive = True
            self._progress(f"small catalogue ({n} x {dim}): exact search by default")
        # Stored after the identifier of "nothing found" (b"" or -1), so that a row r in
        # [-1, n) maps to its identifier with one gather at r + 1 (`_gather_ids`).
        missing = np.array([b"" if ids.dtype == object else -1], ids.dtype)
        with tf.init_scope():
            self._identifiers = tf.Variable(np.concatenate([missing, ids]), trainable=False,
                                            name="identifiers")
        self.build_seconds = time.perf_counter() - start
        self._progress(f"built: {self.size_bytes() / 1e6:.1f} MB")
        self._reset_tf_function_cache()
        return self

    def index_from_dataset(self, candidates: tf.data.Dataset,
                           candidate_model: Optional[tf.keras.Model] = None) -> "Index":
        """Builds the index from a batched dataset.

        Args:
            candidates: `tf.data.Dataset` of batched embeddings `[b, dim]`, of
                `(identifiers [b], embeddings [b, dim])`, or of `(identifiers, features)` when
                `candidate_model` maps the features to embeddings.
            candidate_model: Optional Keras model applied to each batch's second element.

        Returns:
            Self.

        Raises:
            ValueError: if the dataset is not batched or yields the wrong structure.
        """
        if not isinstance(candidates, tf.data.Dataset):
            raise TypeError(
                f"index_from_dataset expects a tf.data.Dataset; got {type(candidates)}. "
                "Use index(embeddings, identifiers) for tensors and arrays.")
        spec = candidates.element_spec
        if isinstance(spec, tuple) and len(spec) != 2:
            raise ValueError("The dataset must yield embeddings or (identifiers, embeddings or "
                             f"features) pairs; got an element spec of {spec}.")
        ids, embs = [], []
        for element in candidates:
            ident, x = element if isinstance(spec, tuple) else (None, element)
            if candidate_model is not None:
                x = candidate_model(x)
            x = tf.convert_to_tensor(x)
            if x.shape.rank != 2:
                raise ValueError(
                    f"Dataset batches must be [batch, dim] embeddings; got shape {x.shape}. "
                    "Batch the dataset (ds.batch(1024)) or pass candidate_model=.")
            embs.append(x.numpy())
            if ident is not None:
                ids.append(np.asarray(ident.numpy()))
        if not embs:
            raise ValueError(
                "The candidate dataset is empty: an index needs at least k candidates.")
        return self.index(np.concatenate(embs), np.concatenate(ids) if ids else None)

    def set_exhaustive(self, exhaustive: bool) -> "Index":
        """Turns the exact search of a small catalogue on or off (see `EXHAUSTIVE_MAX_FLOATS`).

        Raises:
          ValueError: `exhaustive=True` on an index whose catalogue is too large (it keeps no
            copy of the candidates for exact search: use `BruteForce`).
        """
        self._check_built()
        if exhaustive and self._exhaustive_candidates is None and not self.is_exact():
            raise ValueError(f"This {type(self).__name__} is over {self._num_candidates} x "
                             f"{self._dim} > {self.EXHAUSTIVE_MAX_FLOATS} floats and keeps no "
                             "copy for exact search; use towerkit.index.BruteForce instead.")
        self.exhaustive = bool(exhaustive) and self._exhaustive_candidates is not None
        self._reset_tf_function_cache()
        return self

    # ------------------------------------------------------------------- querying
    def query_embedding(self, queries: Queries) -> tf.Tensor:
        """Maps queries to float32 `[batch, dim]` or `[batch, num_interests, dim]` embeddings."""
        self._check_built()
        x = self.query_model(queries) if self.query_model is not None else queries
        if isinstance(x, dict):
            raise TypeError("Queries are a feature dict but the index has no query_model: pass "
                            "query_model= to the index or give it query embeddings.")
        x = tf.convert_to_tensor(x)
        if not (x.dtype.is_floating):
            raise TypeError(f"Query embeddings must be floating point; got {x.dtype.name}. Pass "
                            "raw features only to an index built with a query_model.")
        if x.shape.rank not in (2, 3):
            raise ValueError("Query embeddings must be [batch, dim] or [batch, num_interests, "
                             f"dim]; got shape {x.shape}.")
        if x.shape[-1] is not None and x.shape[-1] != self._dim:
            raise ValueError(f"Query embedding dimension {x.shape[-1]} does not match the indexed "
                             f"candidates' dimension {self._dim}: use the query tower trained with "
                             "this candidate tower.")
        x = tf.cast(x, tf.float32)
        if tf.executing_eagerly():
            values = x.numpy()
            finite = np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1) if (
                values.size) else np.ones(values.shape[0], bool)
            if not finite.all():
                rows = np.flatnonzero(~finite)
                raise ValueError(
                    f"Query embeddings contain NaN or Inf in {len(rows)} of {len(finite)} rows "
                    f"(first row {int(rows[0])}): check those queries' raw features (e.g. a NaN "
                    "numeric feature) or the query model; non-finite queries have no ranking.")
            return x
        # In a traced graph (and the SavedModel): stock CheckNumerics op, fails the request
        # with InvalidArgument instead of returning arbitrary ids. `check_numerics` returns its
        # input (`assert_all_finite` adds an identity op per call).
        return tf.debugging.check_numerics(
            x, "Query embeddings contain NaN or Inf: check the raw query features (e.g. a NaN "
               "numeric feature); non-finite queries have no ranking")

    def call(self, queries: Queries, k=None) -> Tuple[tf.Tensor, tf.Tensor]:
        """Retrieves the top `k` candidates.

        Args:
            queries: raw query features (with a query model) or embeddings `[batch, dim]` /
                `[batch, num_interests, dim]`.
            k: Optional int (or int32 scalar tensor) `<= max_k`; defaults to `max_k`.

        Returns:
            `(scores [batch, k] float32, identifiers [batch, k])`.
        """
        k = self._resolve_k(k)
        scores, rows = self._search_rows(self.query_embedding(queries), k)
        return scores, self._gather_ids(rows)

    def query_with_exclusions(self, queries: Queries, exclusions, k=None):
        """Retrieves the top `k` candidates, skipping `exclusions` (e.g. already-seen items).

        Args:
            queries: as in `call`.
            exclusions: `[batch, num_excluded]` identifiers (same kind as the index's ids).
            k: Optional int `<= max_k`.

        Returns:
            `(scores [batch, k], identifiers [batch, k])`. If fewer than `k` candidates remain, the
            tail holds score `-inf` and identifier `b""` (or -1). An excluded identifier that
            covers several rows (duplicates) is excluded from all of them.
        """
        k = self._resolve_k(k)
        exclusions = tf.convert_to_tensor(exclusions)
        id_dtype = self._identifiers.dtype
        if (exclusions.dtype == tf.string) != (id_dtype == tf.string):
            raise TypeError(f"Exclusions are {exclusions.dtype.name} but the index identifiers "
                            f"are {id_dtype.name}: pass exclusions of the same kind as the "
                            "identifiers.")
        if exclusions.shape.rank != 2:
            raise ValueError(
                f"exclusions must be [batch, num_excluded]; got shape {exclusions.shape}.")
        exclusions = tf.cast(exclusions, id_dtype)
        num_excluded = exclusions.shape[1]
        if num_excluded is None:
            num_excluded = tf.shape(exclusions)[1]
        # An identifier can cover several rows (duplicates): widen by its largest multiplicity.
        num_excluded = num_excluded * self._id_multiplicity
        if isinstance(k, int) and isinstance(num_excluded, int):
            wide_k = min(k + num_excluded, self._num_candidates)
        else:
            wide_k = tf.minimum(k + num_excluded, self._num_candidates)
        scores, rows = self._search_rows(self.query_embedding(queries), wide_k)
        ids = self._gather_ids(rows)
        excluded = tf.reduce_any(tf.equal(ids[:, :, None], exclusions[:, None, :]), axis=-1)
        scores = tf.where(excluded, tf.fill(tf.shape(scores), float("-inf")), scores)
        missing = tf.fill(tf.shape(ids), b"" if ids.dtype == tf.string else -1)
        ids = tf.where(excluded, tf.cast(missing, ids.dtype), ids)
        scores, top = tf.math.top_k(scores, k=k)
        return scores, tf.gather(ids, top, batch_dims=1)

    # -------------------------------------------------------------------- helpers
    def size_bytes(self) -> int:
        """Bytes of the built index (search structures plus identifiers; not the query model)."""
        self._check_built()
        return int(self._index_size_bytes() + _variable_bytes(self._identifiers))

    def _check_built(self) -> None:
        if self._identifiers is None:
            raise ValueError(f"The {type(self).__name__} index is empty: call index(candidates, "
                             "identifiers) or index_from_dataset(ds) before querying or saving it.")

    def _gather_ids(self, rows: tf.Tensor) -> tf.Tensor:
        """Identifiers of candidate rows; row -1 (nothing found) maps to b"" or -1.

        One gather at `rows + 1` from the identifiers stored after the missing one (two
        executed ops in a SavedModel: on small searches the op count sets the speed).
        """
        return tf.gather(self._identifiers, rows + 1)

    def _resolve_k(self, k):
        if k is None:
            return self._k
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            if not 1 <= k <= self._k:
                raise ValueError(f"k={int(k)} is outside [1, max_k={self._k}]: build the index "
                                 "with a larger k (the constructor's k is the maximum).")
            return int(k)
        k = tf.convert_to_tensor(k, tf.int32)
        with tf.control_dependencies([
            tf.debugging.assert_less_equal(k, self._k, message=f"k exceeds max_k={self._k}"),
            tf.debugging.assert_positive(k, message="k must be >= 1")]):
            return tf.identity(k)

    def _exact_search(self, queries: tf.Tensor, k) -> Tuple[tf.Tensor, tf.Tensor]:
        scores = tf.matmul(queries, self._exhaustive_candidates, transpose_b=True)
        return tf.math.top_k(scores, k=k)

    def _search_rows(self, embeddings: tf.Tensor, k) -> Tuple[tf.Tensor, tf.Tensor]:
        """Searches `[batch, dim]` or `[batch, interests, dim]` embeddings -> rows."""
        search = self._exact_search if self.exhaustive else self._search
        if embeddings.shape.rank == 2:
            scores, rows = search(embeddings, k)
            return scores, tf.cast(rows, tf.int32)
        batch, interests = tf.shape(embeddings)[0], tf.shape(embeddings)[1]
        flat = tf.reshape(embeddings, [-1, self._dim])
        scores, rows = search(flat, k)
        scores = tf.reshape(scores, [batch, interests * tf.shape(scores)[1]])
        rows = tf.reshape(tf.cast(rows, tf.int32), tf.shape(scores))
        return unique_top_k(scores, rows, k)


def _variable_bytes(v) -> int:
    if v.dtype == tf.string:
        return int(sum(len(s) for s in np.ravel(v.numpy())))
    return int(np.prod(v.shape)) * v.dtype.size


def _as_candidate_matrix(candidates) -> np.ndarray:
    if isinstance(candidates, (tf.Tensor, tf.Variable)):
        candidates = candidates.numpy()
    array = np.asarray(candidates)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating)
                                     or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"Candidate embeddings must be numeric; got dtype {array.dtype}.")
    if array.ndim != 2:
        raise ValueError(f"Candidate embeddings must be a [num_candidates, dim] matrix; got shape "
                         f"{array.shape}.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"The candidate set is empty (shape {array.shape}): index at least k "
                         "candidates with dim >= 1.")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = ~np.isfinite(array)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(f"Candidate embeddings contain NaN or Inf ({int(bad.any(axis=1).sum())} "
                         f"rows, first row {row}): fix the candidate tower or drop those rows.")
    return array


def _as_identifiers(identifiers, n: int) -> np.ndarray:
    if identifiers is None:
        return np.arange(n, dtype=np.int32)
    if isinstance(identifiers, (tf.Tensor, tf.Variable)):
        identifiers = identifiers.numpy()
    if isinstance(identifiers, (list, tuple)):
        # Check the Python values before NumPy turns a mix of ints and strings into strings.
        identifiers = np.array(list(identifiers), dtype=object)
        if identifiers.ndim != 1:
            identifiers = np.asarray(identifiers.tolist())
    ids = np.asarray(identifiers)
    if ids.ndim != 1:
        raise ValueError(f"Identifiers must be a [num_candidates] vector; got shape {ids.shape}.")
    if ids.shape[0] != n:
        raise ValueError(f"Got {ids.shape[0]} identifiers for {n} candidates: pass one identifier "
                         "per candidate row.")
    if ids.dtype == object:
        kinds = {"string" if isinstance(i, (str, bytes, np.str_, np.bytes_)) else
                 "integer" if isinstance(i, (int, np.integer)) and not isinstance(i, bool) else
                 type(i).__name__ for i in ids}
        if kinds == {"integer"}:
            ids = ids.astype(np.int64)
        elif kinds != {"string"}:
            raise TypeError(f"Identifiers must all be strings/bytes or all be integers; got a mix "
                            f"of {', '.join(sorted(kinds))}: convert them to one kind (e.g. "
                            "[str(i) for i in ids]) before indexing.")
    if ids.dtype.kind in "US" or ids.dtype == object:
        ids = np.array([i.encode() if isinstance(i, str) else bytes(i) for i in ids],
                       dtype=object)
    elif ids.dtype.kind in "iu":
        ids = ids.astype(np.int32 if ids.dtype == np.int32 else np.int64)
    else:
        raise TypeError(f"Identifiers must be strings/bytes or integers; got dtype {ids.dtype}.")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != n:
        dups = unique[counts > 1][:5]
        warnings.warn(
            f"{n - len(unique)} candidate identifiers repeat (e.g. {list(dups)}); like TFRS, each "
            "row stays a separate candidate, so one identifier can appear several times in a "
            "result and excluding it excludes all its rows. Deduplicate the candidates if each "
            "identifier should be returned once.", UserWarning, stacklevel=3)
    return ids
