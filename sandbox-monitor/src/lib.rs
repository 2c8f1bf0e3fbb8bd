//! sandbox-monitor
