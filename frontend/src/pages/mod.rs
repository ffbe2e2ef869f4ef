//! One module per page.

mod callback;
mod home;
mod login;
mod simple;

pub use callback::Callback;
pub use home::Home;
pub use login::Login;
pub use simple::{ErrorPage, NotFound, SignedOut};
