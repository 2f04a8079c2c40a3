"""The explorer: one offline HTML page to explore a trained model live."""

from pushforward.explore.page import (
    JS_ACTIVATIONS,
    MAX_FRAMES,
    MAX_GRID_VALUES,
    PALETTE,
    Explorer,
    explore_run,
    explorer_page,
    legend,
)

__all__ = [
    "JS_ACTIVATIONS",
    "MAX_FRAMES",
    "MAX_GRID_VALUES",
    "PALETTE",
    "Explorer",
    "explore_run",
    "explorer_page",
    "legend",
]
