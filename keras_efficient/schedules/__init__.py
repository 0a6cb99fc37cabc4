"""Serializable schedules, pure functions of the training step."""

from keras_efficient.schedules.retention_target import RetentionTargetSchedule

__all__ = [
    "RetentionTargetSchedule",
]
