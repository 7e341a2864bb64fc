"""Tasks: one module per family, registered by name. Adding a task is one new module imported here."""

from . import addition, maze, multiplication, strings  # noqa: F401  (registration)
from .base import TASKS, Problem, Task, get_task, register_task

__all__ = ["TASKS", "Problem", "Task", "get_task", "register_task"]
