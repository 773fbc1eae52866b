//! `kappa`: the terminal front end of Kappa and its headless subcommands. Everything that is not drawing, input or
//! printing lives in `kappa_core`.

pub mod app;
pub mod cli;
pub mod layout;
pub mod live;
pub mod report;
pub mod terminal;
pub mod ui;
