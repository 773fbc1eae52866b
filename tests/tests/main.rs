//! Kappa's end-to-end tests: one binary, one module per capability.

mod cli;
mod engine;
mod lineage;
mod pipeline_errors;
mod security;
mod shop;
mod sources;
