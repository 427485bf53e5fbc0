//! The load benchmark's parts: a fake model with a chosen delay ([`model`]), the stack as
//! separate processes with their CPU and memory read from `/proc` ([`stack`]), and customers
//! talking to the web chat API ([`load`]).

pub mod load;
pub mod model;
pub mod stack;
