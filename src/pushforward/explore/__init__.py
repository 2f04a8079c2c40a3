"""The explorer: one offline HTML page to explore a trained model live."""

from pushforward.explore.page import (
    JS_ACTIVATIONS,
    MAX_FRAMES,
    MAX_GRID_VALUES,
    Explorer,
    explore_run,
    explorer_page,
)

__all__ = [
    "JS_ACTIVATIONS",
    "MAX_FRAMES",
    "MAX_GRID_VALUES",
    "Explorer",
    "explore_run",
    "explorer_page",
]
