"""An embedded vector store: exact cosine search, shared by processes through the disk.

One directory holds two files:

- `index.sqlite3` (WAL mode) maps each id to a slot and keeps its metadata, the store's
  dimension and a generation counter that every write bumps;
- `vectors.f32` is a flat float32 array of slots, `dimension` floats each (`vectors.f16`,
  float16, in a store made or converted with LOCAL_STORE_PRECISION=float16: half the disk
  and memory; scores are float32 all the same).

Writers serialise on SQLite's write lock (`BEGIN IMMEDIATE`), write vector bytes into
slots no reader is using, make them durable, then commit the rows that point at them.
Readers memory-map the vector file (so every process shares one copy through the page
cache) and keep a small in-process index (slot -> id, live slots, metadata postings for
filters). Each query first reads the generation; only when it moved does the reader
fetch what changed since, so a query costs one tiny SQLite read plus a matrix-vector
product. No Django here on purpose: it is tested and benchmarked without settings.

The modules: `store` (LocalVectorStore and its public methods), `index_db` (the SQLite
schema, meta values, connections and slot bookkeeping), `files` (writing, growing and
mapping the vector file), `snapshot` (the in-process index and the snapshots queries
read), `scoring` (gathered products and the top k) and `approximate` (the optional faiss
HNSW index of large stores, its candidates re-scored exactly; LOCAL_STORE_INDEX).
"""

from search.vectorstores.local.files import _GROWTH_SLOTS as _GROWTH_SLOTS
from search.vectorstores.local.index_db import FORMAT_VERSION
from search.vectorstores.local.store import LocalVectorStore

# A freed slot is rewritten only after this long. A reader may still be scoring a slot
# it saw live when its query began; a query takes tens of milliseconds, so waiting
# seconds means no reader ever scores a half-written vector under another id's name.
# Writers read it here at each write, so it can be changed on this package.
SLOT_REUSE_GRACE_SECONDS = 10.0

__all__ = ["FORMAT_VERSION", "SLOT_REUSE_GRACE_SECONDS", "LocalVectorStore"]
