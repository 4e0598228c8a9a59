//! Small helpers shared by the test bed.
