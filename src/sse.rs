//! An incremental Server-Sent Events parser: plain synchronous code, fed byte slices.
