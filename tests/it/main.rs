//! Integration tests: real redis-server processes, real replicas, real gRPC.

mod binary;
mod harness;

mod access;
mod admin;
mod cluster;
mod compose;
mod connections;
mod console;
mod core;
mod events;
mod faults;
mod leases;
mod liveness;
mod model;
mod netns;
mod ops;
mod outage;
mod partition;
mod sentinel;
mod sessions;
mod split;
mod storage;
