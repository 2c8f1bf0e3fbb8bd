//! sandbox-testkit
