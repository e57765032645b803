"""Metrics and profiling of trained models."""

from kdistill.evaluate.profile import count_parameters, cpu_latency_ms, size_on_disk_bytes

__all__ = ["count_parameters", "cpu_latency_ms", "size_on_disk_bytes"]
