//! The `loader` function's handler. The data-path issue fills this crate; until
//! then it only names the function so that the workspace and the build
//! pipeline have all three crates in place.

/// The function's name as the spec and the templates know it.
pub const NAME: &str = "loader";
