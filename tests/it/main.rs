//! The integration tests, in one binary.

#[macro_use]
mod support;

mod api;
mod hardening_clients;
mod hardening_db_faults;
mod hardening_hostile;
mod hardening_instances;
mod hardening_limits;
mod hardening_memory;
mod hardening_properties;
mod layer_capture;
mod layer_modes;
mod layer_storage;
mod layer_tower;
mod proxy;
mod store;
