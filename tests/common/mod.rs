//! What the integration tests share: a fresh database per test, a test upstream that
//! speaks OpenAI-compatible SSE, and servers on loopback. Each test binary uses a part.
#![allow(dead_code, unused_macros, unused_imports)]

pub mod db;
pub mod dropped;
pub mod echo;
pub mod faults;
pub mod memory;
pub mod server;
pub mod turns;
pub mod upstream;
