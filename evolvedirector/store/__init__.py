"""The store: the run's SQLite file (the dynamic dataset, the teacher-call ledger) and its images
as content-addressed PNGs."""

from evolvedirector.store.db import (
    NewSample,
    RefusalRecord,
    RoundRecord,
    Sample,
    Store,
    VerdictRecord,
)
from evolvedirector.store.images import ImageStore, write_atomic
from evolvedirector.store.teacher_calls import BudgetExceeded

__all__ = [
    "BudgetExceeded", "ImageStore", "NewSample", "RefusalRecord", "RoundRecord", "Sample", "Store", "VerdictRecord",
    "write_atomic",
]
