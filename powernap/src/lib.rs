//! powernapd and powerwake.
