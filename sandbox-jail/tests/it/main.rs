//! The jail crate's integration tests: children started through the
//! chokepoint, how they are killed and reaped, and runs to a deadline.

mod child;
mod run;
mod support;
