//! NoCloud (cloud-init) seed images.
