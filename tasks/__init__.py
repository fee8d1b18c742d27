"""Token tasks: the protocol a task meets, the built-in tasks, and the loader for user tasks.

``cram.tasks`` sits beside ``cram.models``: it imports ``cram.core`` and numpy only (torch lazily,
for ``TokenBatch.to_torch`` and SRCD's extra loss); the consolidation layer imports it. See
docs/tasks.md.
"""

from .batch import IGNORE_INDEX, TaskBatchError, TaskError, TaskLoadError, TokenBatch
from .mqar import MQARConfig, MQARTask
from .phrases import PhrasesConfig, PhrasesTask
from .protocol import TokenTask, check_task
from .recall import RecallConfig, RecallTask
from .registry import get_task, list_tasks, load_task
from .srcd import SRCDTask, srcd_task
from .stats import batch_stats, describe

__all__ = [
    "IGNORE_INDEX",
    "MQARConfig",
    "MQARTask",
    "PhrasesConfig",
    "PhrasesTask",
    "RecallConfig",
    "RecallTask",
    "SRCDTask",
    "TaskBatchError",
    "TaskError",
    "TaskLoadError",
    "TokenBatch",
    "TokenTask",
    "batch_stats",
    "check_task",
    "describe",
    "get_task",
    "list_tasks",
    "load_task",
    "srcd_task",
]
