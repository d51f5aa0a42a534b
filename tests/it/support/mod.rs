//! What the integration tests share: a fresh database per test, a test upstream that
//! speaks OpenAI-compatible SSE, servers on loopback, and the example proxy as a child
//! process.

pub mod api;
pub mod cluster;
#[macro_use]
pub mod db;
pub mod dropped;
pub mod echo;
pub mod faults;
pub mod memory;
pub mod pgbouncer;
pub mod process;
pub mod server;
pub mod store;
pub mod tls;
pub mod turns;
pub mod upstream;
