"""HTML pages: the self-contained document model the gallery and the explorer both write."""

from pushforward.pages.document import (
    BASE_CSS,
    Page,
    embedded_figure,
    embedded_page,
    table,
)

__all__ = ["BASE_CSS", "Page", "embedded_figure", "embedded_page", "table"]
