//! The behaviour contract, tested: a module per section of the contract, then what holds
//! across sections.
//!
//! | section | module |
//! |---|---|
//! | 1. What it is | `tower_layer` |
//! | 2. Which requests it touches, 3. Modes | `modes` |
//! | 4. Splicing history | `splicing` |
//! | 5. Capturing the reply | `capture` |
//! | 6. Storage | `storage` |
//! | 7. Owners | `owners` |
//! | 8. Management endpoints | `management_api` |
//! | 9. The example proxy | `proxy` |
//! | running the proxy: keys, health, metrics, start-up errors | `operations` |
//! | 10. Scaling out | `scaling` |
//! | 12. The Responses API | `responses`, `responses_stream`, `responses_proxy` |
//! | 13. PostgreSQL in production | `production_postgres` |
//! | when the database fails (3, 5) | `faults` |
//! | hostile input, deep JSON | `hostile_input` |
//! | properties over HTTP (4, 5) | `properties` |
//!
//! One resident-memory test has a binary of its own: `tests/resident_memory.rs`.
//! The soaks are `#[ignore = "soak: ..."]`; `cargo test -- --include-ignored` runs them.

#[macro_use]
mod support;

mod capture;
mod conversation_items;
mod conversation_list;
mod faults;
mod hostile_input;
mod items;
mod management_api;
mod modes;
mod openai_sdk;
mod operations;
mod owners;
mod production_postgres;
mod properties;
mod proxy;
mod responses;
mod responses_proxy;
mod responses_stream;
mod retention;
mod scaling;
mod splicing;
mod storage;
mod tower_layer;
