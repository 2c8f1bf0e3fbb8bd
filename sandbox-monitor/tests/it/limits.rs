//! Limits: warnings and exceedances, defaults, validation, and the enforcement actions alerts map to.

use std::time::Duration;

use sandbox_monitor::{
    Alert, AlertLevel, Enforcement, EnforcementPolicy, Limit, ResourceLimits, Usage,
};

fn usage() -> Usage {
    Usage {
        memory_bytes: 900,
        virtual_bytes: 10_000,
        cpu_percent: 50.0,
        cpu_seconds: 2.0,
        threads: 4,
        child_processes: 1,
        uptime: Duration::from_secs(3),
        open_files: 10,
    }
}

fn levels(alerts: &[Alert]) -> Vec<(Limit, AlertLevel)> {
    alerts.iter().map(|a| (a.resource, a.level)).collect()
}

#[test]
fn evaluate_warns_above_the_fraction_and_exceeds_above_the_limit() {
    let limits = ResourceLimits {
        memory_bytes: Some(1000), // 90 %: warning
        cpu_seconds: Some(1),     // 200 %: exceeded
        cpu_percent: Some(100.0), // 50 %: fine
        threads: Some(4),         // at the limit: warning, not exceeded
        processes: Some(0),       // 1 > 0: exceeded
        open_files: Some(256),    // fine
        ..ResourceLimits::unlimited()
    };
    let alerts = limits.evaluate("k", &usage(), 0.8);
    assert_eq!(
        levels(&alerts),
        [
            (Limit::Memory, AlertLevel::Warning),
            (Limit::Cpu, AlertLevel::Exceeded),
            (Limit::Threads, AlertLevel::Warning),
            (Limit::Processes, AlertLevel::Exceeded),
        ]
    );
    assert_eq!(alerts[0].key, "k");
    assert_eq!((alerts[0].value, alerts[0].limit), (900.0, 1000.0));
    assert_eq!(
        alerts[1].to_string(),
        "`k`: cpu time exceeded its limit (2 of 1)"
    );
}

#[test]
fn unlimited_raises_nothing_and_zero_limit_only_exceeds() {
    assert!(ResourceLimits::unlimited()
        .evaluate("k", &usage(), 0.8)
        .is_empty());
    let none = ResourceLimits {
        processes: Some(0),
        ..ResourceLimits::unlimited()
    };
    let idle = Usage {
        child_processes: 0,
        ..usage()
    };
    assert!(none.evaluate("k", &idle, 0.8).is_empty());
}

#[test]
fn defaults_are_the_documented_ones() {
    let d = ResourceLimits::default();
    assert_eq!(d.memory_bytes, Some(512 * 1024 * 1024));
    assert_eq!(d.cpu_seconds, Some(60));
    assert_eq!(d.cpu_percent, None);
    assert_eq!(d.threads, Some(64));
    assert_eq!(d.processes, Some(0));
    assert_eq!(d.open_files, Some(256));
    assert_eq!(d.file_size_bytes, Some(64 * 1024 * 1024));
    assert_eq!(d.disk_bytes, Some(256 * 1024 * 1024));
    assert_eq!(d.call_timeout, Some(Duration::from_secs(30)));
}

#[test]
fn partial_config_fills_in_defaults() -> anyhow::Result<()> {
    let limits: ResourceLimits =
        serde_json::from_str(r#"{"memory_bytes": 1024, "threads": null}"#)?;
    assert_eq!(limits.memory_bytes, Some(1024));
    assert_eq!(limits.threads, None);
    assert_eq!(limits.cpu_seconds, ResourceLimits::default().cpu_seconds);
    let back: ResourceLimits = serde_json::from_str(&serde_json::to_string(&limits)?)?;
    assert_eq!(back, limits);
    Ok(())
}

#[test]
fn invalid_limits_are_refused() {
    let bad = ResourceLimits {
        cpu_percent: Some(f64::NAN),
        ..ResourceLimits::default()
    };
    let err = bad.validate().map(|_| ()).expect_err("NaN cpu percent");
    assert!(
        err.to_string()
            .starts_with("invalid resource limits: cpu_percent is NaN"),
        "{err}"
    );
    let zero = ResourceLimits {
        call_timeout: Some(Duration::ZERO),
        ..ResourceLimits::default()
    };
    assert!(zero.validate().is_err());
}

#[test]
fn enforcement_policy_maps_alerts_to_actions() {
    let alert = |resource, level| Alert {
        key: "k".into(),
        resource,
        value: 2.0,
        limit: 1.0,
        level,
    };
    let policy = EnforcementPolicy::default();
    assert_eq!(
        policy.action_for(&alert(Limit::Memory, AlertLevel::Warning)),
        Enforcement::None
    );
    assert_eq!(
        policy.action_for(&alert(Limit::Memory, AlertLevel::Exceeded)),
        Enforcement::Kill
    );
    assert_eq!(
        policy.action_for(&alert(Limit::CpuPercent, AlertLevel::Exceeded)),
        Enforcement::Throttle
    );
    assert_eq!(
        policy.action_for(&alert(Limit::CallTimeout, AlertLevel::Exceeded)),
        Enforcement::Restart
    );
    let lenient = policy.with_override(Limit::Memory, Enforcement::Restart);
    assert_eq!(
        lenient.action_for(&alert(Limit::Memory, AlertLevel::Exceeded)),
        Enforcement::Restart
    );
    let all = [
        alert(Limit::CpuPercent, AlertLevel::Exceeded),
        alert(Limit::Threads, AlertLevel::Warning),
    ];
    assert_eq!(lenient.action_for_all(&all), Enforcement::Throttle);
    assert_eq!(lenient.action_for_all(&[]), Enforcement::None);
}

#[test]
fn a_limit_serializes_to_its_protocol_name_and_back() {
    // The names `limit_exceeded` (`resource`) and `crashed` (`limit`) events
    // carry in the `sandbox run` protocol.
    let documented = [
        ("memory", Limit::Memory),
        ("address_space", Limit::AddressSpace),
        ("cpu", Limit::Cpu),
        ("cpu_percent", Limit::CpuPercent),
        ("threads", Limit::Threads),
        ("processes", Limit::Processes),
        ("open_files", Limit::OpenFiles),
        ("file_size", Limit::FileSize),
        ("disk", Limit::Disk),
        ("output", Limit::Output),
        ("call_timeout", Limit::CallTimeout),
        ("lifecycle_timeout", Limit::LifecycleTimeout),
        ("stack", Limit::Stack),
        ("seccomp", Limit::Seccomp),
    ];
    assert_eq!(
        documented.len(),
        Limit::ALL.len(),
        "a limit is not documented here"
    );
    for (name, limit) in documented {
        assert_eq!(
            serde_json::to_string(&limit).unwrap(),
            format!("\"{name}\"")
        );
        assert_eq!(
            serde_json::from_str::<Limit>(&format!("\"{name}\"")).unwrap(),
            limit
        );
        assert_eq!(name.parse::<Limit>(), Ok(limit));
        assert_eq!(limit.as_str(), name);
    }
    // The name the monitor gave the call timeout before it was a limit of its own.
    assert_eq!(
        serde_json::from_str::<Limit>("\"call_time\"").unwrap(),
        Limit::CallTimeout
    );
    let err = "ram".parse::<Limit>().unwrap_err();
    assert!(err.contains("address_space"), "{err}");
}

#[test]
fn resident_memory_and_address_space_are_two_limits_with_one_default_each() {
    let d = ResourceLimits::default();
    assert_eq!(
        d.memory_bytes,
        Some(sandbox_monitor::defaults::MEMORY_BYTES)
    );
    assert_eq!(
        d.address_space_bytes,
        Some(sandbox_monitor::defaults::ADDRESS_SPACE_BYTES)
    );
    assert_eq!(Limit::Memory.field(), Some("memory_bytes"));
    assert_eq!(Limit::AddressSpace.field(), Some("address_space_bytes"));
    let parsed: ResourceLimits =
        serde_json::from_str(r#"{"address_space_bytes": 1073741824}"#).unwrap();
    assert_eq!(parsed.address_space_bytes, Some(1 << 30));
    assert_eq!(parsed.memory_bytes, d.memory_bytes);
}
