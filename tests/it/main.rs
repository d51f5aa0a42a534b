//! The behaviour contract, tested: one module per section of the contract, in its order,
//! then what holds across sections (database faults, hostile input, properties).

#[macro_use]
mod support;

mod capture; // 5. Capturing the reply
mod management_api; // 8. Management endpoints
mod modes; // 2. Which requests it touches; 3. Modes
mod owners; // 7. Owners
mod proxy; // 9. The example proxy
mod scaling;
mod splicing; // 4. Splicing history
mod storage; // 6. Storage
mod tower_layer; // 1. What it is // 10. Scaling out

mod faults;
mod hostile_input;
mod properties;
