//! sandbox-security
