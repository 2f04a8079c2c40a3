"""The lecture's gallery: one HTML report of every section."""

from pushforward.gallery.report import Report, Section, run_demo

__all__ = ["Report", "Section", "run_demo"]
