//! Kappa's end-to-end tests: one binary, one module per capability.

mod audit;
mod cdc;
mod checkpoint;
mod cli;
mod cluster;
mod concurrent;
mod contract;
mod corpora;
mod engine;
mod gui;
mod kafka;
mod lineage;
mod live;
mod pipeline_errors;
mod postgres;
mod pty;
mod replay;
mod responsive;
mod retract;
mod s3;
mod security;
mod shop;
mod sources;
mod store;
mod tui;
mod verify;
