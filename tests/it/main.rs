//! Integration tests: real redis-server processes, real replicas, real gRPC.

mod harness;

mod core;
mod events;
mod leases;
