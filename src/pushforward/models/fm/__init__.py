"""Flow matching."""

from pushforward.models.fm.model import (
    COUPLINGS,
    EXACT_TRACE_MAX_DIM,
    FIELD_NETS,
    HUTCHINSON_ESTIMATE,
    OT_BLOCK,
    RECOMMENDED,
    RECOMMENDED_IMAGES,
    SOLVERS,
    TRACES,
    FlowMatching,
    FlowMatchingConfig,
    UNetField,
    VelocityField,
    ot_pairing,
    stable_target,
)

__all__ = [
    "COUPLINGS",
    "EXACT_TRACE_MAX_DIM",
    "FIELD_NETS",
    "HUTCHINSON_ESTIMATE",
    "OT_BLOCK",
    "RECOMMENDED",
    "RECOMMENDED_IMAGES",
    "SOLVERS",
    "TRACES",
    "FlowMatching",
    "FlowMatchingConfig",
    "UNetField",
    "VelocityField",
    "ot_pairing",
    "stable_target",
]
