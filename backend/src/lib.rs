//! Postern, a self-hosted OpenID Connect provider.

pub mod audit;
pub mod claims;
pub mod cli;
pub mod clients;
pub mod config;
pub mod http;
pub mod kek;
pub mod keys;
pub mod metrics;
pub mod password;
pub mod private_files;
pub mod server;
pub mod store;
pub mod throttle;
pub mod tokens;
pub mod upstream;
pub mod users;
