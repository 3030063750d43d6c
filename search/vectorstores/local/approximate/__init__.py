"""The local store's approximate index: faiss HNSW over 8-bit scalar-quantised vectors.

Derived data only (docs/design/approximate-index.md): SQLite and the vector file stay the
truth. The index proposes candidates; every score returned is the exact cosine read from
the vector file. An index row counts only while its slot is live and still holds the
vector generation the row was built from, so deleted, moved and reused slots are never
answered from a stale index. The live slots written since the index (`Snapshot.delta`)
are scored exactly beside its candidates, so every write is searchable at once in every
process; the worker (or `manage.py vectorstore_compact`) merges them into a new index in
the background.

- `index_files`: a generation's files, opened memory-mapped for queries, written durably;
- `queries`: one query's answer from the index's candidates plus the delta;
- `compaction`: building, merging or removing the index.

faiss is imported in this package only, and the package only where the index is used.
"""

from search.vectorstores.local.approximate.compaction import CompactionReport, compact
from search.vectorstores.local.approximate.index_files import (
    ApproximateIndex,
    IndexUnusable,
    open_for_queries,
)
from search.vectorstores.local.approximate.queries import scored

__all__ = [
    "ApproximateIndex",
    "CompactionReport",
    "IndexUnusable",
    "compact",
    "open_for_queries",
    "scored",
]
