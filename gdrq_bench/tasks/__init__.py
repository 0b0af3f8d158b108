"""Tasks: each builds its model and data from config, trains one step and evaluates; TASKS
finds one by the name `task.name` gives it."""

from gdrq_bench.tasks.base import Task
from gdrq_bench.tasks.classification import ClassificationTask
from gdrq_bench.tasks.detection import DetectionTask
from gdrq_bench.tasks.segmentation import SegmentationTask

TASKS: dict[str, type[Task]] = {
    task.name: task for task in (ClassificationTask, DetectionTask, SegmentationTask)
}

__all__ = ["TASKS", "Task"]
