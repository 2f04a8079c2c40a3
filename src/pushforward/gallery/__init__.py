"""The lecture's gallery: one HTML report of every section (``pushforward demo``).

:func:`run_demo` makes it; :class:`Report` and :class:`Section` are its page. The sections live
in :mod:`pushforward.gallery.sections`, the mixture sections' chains in
:mod:`pushforward.gallery.chain` and the second process in :mod:`pushforward.gallery.processes`.
"""

from pushforward.gallery.demo import run_demo
from pushforward.gallery.page import Report, Section

__all__ = ["Report", "Section", "run_demo"]
