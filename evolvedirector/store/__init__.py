"""The store: the dynamic dataset in SQLite and its images as content-addressed PNGs."""

from evolvedirector.store.db import (
    BudgetExceeded,
    NewSample,
    RefusalRecord,
    RoundRecord,
    Sample,
    Store,
    VerdictRecord,
)
from evolvedirector.store.images import ImageStore, write_atomic

__all__ = [
    "BudgetExceeded", "ImageStore", "NewSample", "RefusalRecord", "RoundRecord", "Sample", "Store", "VerdictRecord",
    "write_atomic",
]
