//! Servers on loopback for tests: owned by the layer tests.
