"""Which concepts each sample carries, as compact CSR arrays (samples x concepts).

The balancing rules (``engine.curation.balancing``) and the manifest builder work on these arrays,
never on Python lists of tags, so 10M samples and ~30M (sample, concept) pairs take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True, eq=False)  # eq=False: the generated __eq__ would compare arrays ambiguously
class ConceptSets:
    """Which concepts each sample carries, as CSR: samples x concepts.

    Row ``i`` carries ``concept_ids[index[offsets[i]:offsets[i + 1]]]``, ascending and unique.
    """

    offsets: np.ndarray  # int64 (n_samples + 1,)
    index: np.ndarray  # int32 (n_pairs,) dense concept index into concept_ids
    concept_ids: np.ndarray  # int64 (n_concepts,), sorted ascending, unique

    @classmethod
    def from_lists(cls, column: pa.Array | pa.ChunkedArray) -> ConceptSets:
        """From an Arrow list<int64> column (null or [] = no concept); duplicate ids inside one
        list are removed (a sample carries a concept once), as are null ids.

        The dense index is a hash dictionary (Arrow ``dictionary_encode``, linear) re-ranked so
        that ``concept_ids`` is ascending, i.e. the same result as ``np.unique(values,
        return_inverse=True)`` without its 30M-element argsort.
        """
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
            raise TypeError(f"concept lists must be list<int64>, got {array.type}")
        n_samples = len(array)
        lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False)
        pair_row = np.repeat(np.arange(n_samples, dtype=np.int64), lengths.astype(np.int64))
        values = array.flatten()  # skips the children of null lists and honours slicing
        return cls.from_pairs(pair_row, values, n_samples)

    @classmethod
    def from_pairs(cls, pair_row: np.ndarray, values: pa.Array | np.ndarray, n_samples: int) -> ConceptSets:
        """From (sample row, concept id) pairs in any order (e.g. a tags table aligned to a pool);
        duplicate pairs and null ids are removed."""
        pair_row = np.asarray(pair_row, dtype=np.int64)
        values = values if isinstance(values, pa.Array) else pa.array(values, pa.int64())
        if values.null_count:
            valid = values.is_valid().to_numpy(zero_copy_only=False)
            values, pair_row = values.filter(pa.array(valid)), pair_row[valid]
        encoded = pc.dictionary_encode(values.cast(pa.int64()))
        dictionary = encoded.dictionary.to_numpy(zero_copy_only=False).astype(np.int64)
        order = np.argsort(dictionary)
        rank = np.empty(len(dictionary), dtype=np.int64)
        rank[order] = np.arange(len(dictionary))
        index = rank[encoded.indices.to_numpy(zero_copy_only=False)]
        n_concepts = len(dictionary)
        # One sortable key per pair puts each row's concepts in ascending order and exposes
        # duplicates; lists written sorted (the usual case) skip the sort.
        key = pair_row * max(n_concepts, 1) + index
        if len(key) > 1 and not np.all(key[1:] > key[:-1]):
            key = np.sort(key)  # not np.unique: numpy 2.3's takes ~100 s on 30M int64 (hash path)
            key = key[np.r_[True, key[1:] != key[:-1]]]
            pair_row = key // n_concepts
            index = key - pair_row * n_concepts
        offsets = np.zeros(n_samples + 1, dtype=np.int64)
        np.cumsum(np.bincount(pair_row, minlength=n_samples), out=offsets[1:])
        return cls(offsets=offsets, index=index.astype(np.int32), concept_ids=dictionary[order])

    @property
    def n_samples(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_concepts(self) -> int:
        return len(self.concept_ids)

    def lengths(self) -> np.ndarray:
        """int64 (n_samples,): number of concepts of each sample."""
        return np.diff(self.offsets)

    def pair_sample(self) -> np.ndarray:
        """int64 (n_pairs,): the sample row of each pair."""
        return np.repeat(np.arange(self.n_samples, dtype=np.int64), self.lengths())

    def counts(self, weights: np.ndarray | None = None) -> np.ndarray:
        """float64 (n_concepts,): sum of sample weights (or 1s) over the samples carrying each concept."""
        pair_weights = None if weights is None else np.repeat(np.asarray(weights, np.float64), self.lengths())
        return np.bincount(self.index, weights=pair_weights, minlength=self.n_concepts).astype(np.float64)

    def subset(self, mask: np.ndarray) -> ConceptSets:
        """The samples where ``mask`` (bool, n_samples) is true, in order; concept_ids unchanged."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.n_samples,):
            raise ValueError(f"mask has shape {mask.shape}, expected ({self.n_samples},)")
        lengths = self.lengths()
        offsets = np.zeros(int(mask.sum()) + 1, dtype=np.int64)
        np.cumsum(lengths[mask], out=offsets[1:])
        return ConceptSets(offsets, self.index[np.repeat(mask, lengths)], self.concept_ids)

    def row_reduce(self, ufunc: np.ufunc, pair_values: np.ndarray, empty: float) -> np.ndarray:
        """float64 (n_samples,): ``ufunc.reduce`` of ``pair_values`` over each sample's pairs;
        ``empty`` for samples without a concept."""
        out = np.full(self.n_samples, empty, dtype=np.float64)
        rows = self.lengths() > 0
        if rows.any():  # reduceat misreads empty segments, so only non-empty rows' starts are passed
            out[rows] = ufunc.reduceat(pair_values, self.offsets[:-1][rows])
        return out
