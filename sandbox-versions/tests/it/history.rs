//! Version history: numbering, a checksum as identity, retention and rollback targets.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use insta::{assert_json_snapshot, assert_snapshot};
use sandbox_versions::{
    Error, NewVersion, Recorded, VersionHistory, VersionNumber, DEFAULT_RETENTION,
};

/// What the tests return: `?` works on every error they meet.
type TestResult = Result<(), Box<dyn std::error::Error>>;

fn artifact(sha: &str) -> NewVersion {
    NewVersion {
        artifact_sha256: sha.to_owned(),
        source_hash: format!("src-{sha}"),
        dependencies: vec!["tokenize".to_owned()],
        module_version: "0.1.0".to_owned(),
        schema: 1,
    }
}

fn at(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

fn history(retention: usize) -> VersionHistory {
    VersionHistory::new("score", retention).expect("retention is valid")
}

/// Records `sha` and returns its number, failing if it was not new.
fn record_new(history: &mut VersionHistory, sha: &str) -> VersionNumber {
    match history.record(artifact(sha), at(1_000)) {
        Recorded::New(record) => record.number,
        Recorded::Existing(record) => panic!("{sha} was already version {}", record.number),
    }
}

#[test]
fn numbers_start_at_one_and_grow_by_one() -> TestResult {
    let mut history = history(DEFAULT_RETENTION);
    let numbers: Vec<_> = ["a1", "b2", "c3", "d4"]
        .iter()
        .map(|sha| record_new(&mut history, sha))
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    assert_eq!(history.retained_numbers(), [1, 2, 3, 4]);
    assert_eq!(history.latest().map(|r| r.number), Some(4));
    Ok(())
}

#[test]
fn record_keeps_what_it_was_given() -> TestResult {
    let mut history = history(DEFAULT_RETENTION);
    let recorded = history.record(artifact("a1"), at(1_700_000_000_123));
    assert!(recorded.is_new());
    let record = recorded.into_record();
    assert_eq!(record.number, 1);
    assert_eq!(record.artifact_sha256, "a1");
    assert_eq!(record.source_hash, "src-a1");
    assert_eq!(record.dependencies, ["tokenize"]);
    assert_eq!(record.module_version, "0.1.0");
    assert_eq!(record.schema, 1);
    assert_eq!(record.loaded_at, at(1_700_000_000_123));
    assert_eq!(history.get(1), Some(&record));
    Ok(())
}

#[test]
fn default_retention_is_ten() -> TestResult {
    let mut history = VersionHistory::with_default_retention("score");
    assert_eq!(history.retention(), DEFAULT_RETENTION);
    assert_eq!(DEFAULT_RETENTION, 10);
    for i in 0..15 {
        record_new(&mut history, &format!("sha{i}"));
    }
    assert_eq!(history.len(), 10);
    assert_eq!(history.take_evicted().len(), 5);
    Ok(())
}

#[test]
fn same_checksum_is_the_same_version() -> TestResult {
    let mut history = history(DEFAULT_RETENTION);
    record_new(&mut history, "a1");
    record_new(&mut history, "b2");
    let again = history.record(artifact("b2"), at(9_000));
    assert_eq!(
        again,
        Recorded::Existing(history.get(2).cloned().expect("version 2 is retained"))
    );
    assert!(!again.is_new());
    assert_eq!(
        again.record().loaded_at,
        at(1_000),
        "the existing record is unchanged"
    );
    // Checksums are hex: case does not make a new version.
    assert_eq!(history.record(artifact("B2"), at(9_000)).record().number, 2);
    assert_eq!(history.retained_numbers(), [1, 2]);
    // A new artifact still gets the next number: none was consumed.
    assert_eq!(record_new(&mut history, "c3"), 3);
    Ok(())
}

#[test]
fn same_checksum_as_a_retained_non_current_version_is_a_rollback() -> TestResult {
    let mut history = history(DEFAULT_RETENTION);
    record_new(&mut history, "a1");
    record_new(&mut history, "b2");
    history.set_current(2)?;
    let again = history.record(artifact("a1"), at(5_000));
    assert!(matches!(&again, Recorded::Existing(record) if record.number == 1));
    assert_eq!(history.current().map(|r| r.number), Some(2));
    let target = history.rollback_target(again.record().number);
    assert_eq!(target.map(|r| r.number), Ok(1));
    Ok(())
}

#[test]
fn record_does_not_change_current() -> TestResult {
    let mut history = history(DEFAULT_RETENTION);
    assert_eq!(history.current(), None);
    record_new(&mut history, "a1");
    assert_eq!(history.current(), None);
    history.set_current(1)?;
    record_new(&mut history, "b2");
    assert_eq!(history.current().map(|r| r.number), Some(1));
    Ok(())
}

#[test]
fn bound_holds_keeps_current_and_never_reuses_numbers() -> TestResult {
    let mut history = history(3);
    record_new(&mut history, "sha1");
    history.set_current(1)?;
    for i in 2..=10 {
        record_new(&mut history, &format!("sha{i}"));
        assert!(history.len() <= 3, "bound broken after recording {i}");
    }
    // The current version stays although it is the oldest.
    assert_eq!(history.retained_numbers(), [1, 9, 10]);
    assert_eq!(history.current().map(|r| r.number), Some(1));
    let evicted: Vec<_> = history.take_evicted().iter().map(|r| r.number).collect();
    assert_eq!(evicted, [2, 3, 4, 5, 6, 7, 8]);
    assert!(
        history.take_evicted().is_empty(),
        "evicted records are handed out once"
    );
    // An evicted artifact comes back as a new version under a new number.
    assert_eq!(record_new(&mut history, "sha2"), 11);
    assert_eq!(history.retained_numbers(), [1, 10, 11]);
    assert_eq!(
        history
            .take_evicted()
            .iter()
            .map(|r| r.number)
            .collect::<Vec<_>>(),
        [9]
    );
    Ok(())
}

#[test]
fn retention_one_keeps_current_and_candidate_until_the_switch() -> TestResult {
    let mut history = history(1);
    record_new(&mut history, "a1");
    history.set_current(1)?;
    record_new(&mut history, "b2");
    assert_eq!(history.retained_numbers(), [1, 2]);
    assert!(history.take_evicted().is_empty());
    history.set_current(2)?;
    assert_eq!(history.retained_numbers(), [2]);
    assert_eq!(
        history
            .take_evicted()
            .iter()
            .map(|r| r.number)
            .collect::<Vec<_>>(),
        [1]
    );
    Ok(())
}

#[test]
fn lowering_retention_evicts_at_once() -> TestResult {
    let mut history = history(5);
    for sha in ["a", "b", "c", "d", "e"] {
        record_new(&mut history, sha);
    }
    history.set_current(3)?;
    history.set_retention(2)?;
    assert_eq!(history.retained_numbers(), [3, 5]);
    assert_eq!(
        history
            .take_evicted()
            .iter()
            .map(|r| r.number)
            .collect::<Vec<_>>(),
        [1, 2, 4]
    );
    assert_eq!(
        history.set_retention(0),
        Err(Error::InvalidRetention { retention: 0 })
    );
    assert_eq!(history.retention(), 2);
    Ok(())
}

#[test]
fn zero_retention_is_refused() -> TestResult {
    let error = VersionHistory::new("score", 0).map(|_| ()).unwrap_err();
    assert_snapshot!(error, @"version retention must be at least 1, got 0; use 1 to keep only the current version");
    Ok(())
}

#[test]
fn rollback_targets() -> TestResult {
    let mut history = history(3);
    for sha in ["a", "b", "c", "d"] {
        record_new(&mut history, sha);
    }
    history.set_current(4)?;
    assert_eq!(
        history
            .rollback_target(2)
            .map(|r| r.artifact_sha256.as_str()),
        Ok("b")
    );
    assert_eq!(history.previous().map(|r| r.number), Some(3));

    let current = history.rollback_target(4).unwrap_err();
    assert_eq!(
        current,
        Error::AlreadyCurrent {
            module: "score".into(),
            version: 4
        }
    );
    assert_snapshot!(current, @"version 4 of module `score` is already current; pick another retained version to roll back to");

    let evicted = history.rollback_target(1).unwrap_err();
    assert_eq!(
        evicted,
        Error::UnknownVersion {
            module: "score".into(),
            requested: 1,
            retained: vec![2, 3, 4]
        }
    );
    assert_snapshot!(evicted, @"module `score` has no version 1 (retained: 2, 3, 4); pick one of the retained versions");
    let never = history.rollback_target(99).unwrap_err();
    assert_snapshot!(never, @"module `score` has no version 99 (retained: 2, 3, 4); pick one of the retained versions");
    Ok(())
}

#[test]
fn set_current_to_an_unknown_version_changes_nothing() -> TestResult {
    let mut history = history(3);
    let error = history.set_current(1).unwrap_err();
    assert_snapshot!(error, @"module `score` has no version 1 (retained: none); pick one of the retained versions");
    record_new(&mut history, "a");
    history.set_current(1)?;
    assert!(history.set_current(7).is_err());
    assert_eq!(history.current().map(|r| r.number), Some(1));
    Ok(())
}

#[test]
fn previous_steps_back_by_number() -> TestResult {
    let mut history = history(DEFAULT_RETENTION);
    assert_eq!(history.previous(), None);
    for sha in ["a", "b", "c"] {
        record_new(&mut history, sha);
    }
    assert_eq!(history.previous(), None, "no current version yet");
    history.set_current(1)?;
    assert_eq!(history.previous(), None, "nothing older than the oldest");
    history.set_current(3)?;
    assert_eq!(history.previous().map(|r| r.number), Some(2));
    history.set_current(2)?;
    assert_eq!(history.previous().map(|r| r.number), Some(1));
    Ok(())
}

#[test]
fn list_is_oldest_first() -> TestResult {
    let mut history = history(DEFAULT_RETENTION);
    for sha in ["a", "b", "c"] {
        record_new(&mut history, sha);
    }
    let shas: Vec<_> = history
        .list()
        .iter()
        .map(|r| r.artifact_sha256.as_str())
        .collect();
    assert_eq!(shas, ["a", "b", "c"]);
    assert_eq!(history.module(), "score");
    assert!(!history.is_empty());
    Ok(())
}

#[test]
fn records_serialize_load_time_as_unix_millis() -> TestResult {
    let mut history = history(DEFAULT_RETENTION);
    // Sub-millisecond precision is dropped when recording, so a record
    // survives a round trip unchanged.
    let now = at(1_700_000_000_123) + Duration::from_nanos(456_789);
    let record = history.record(artifact("a1"), now).into_record();
    assert_eq!(record.loaded_at, at(1_700_000_000_123));
    assert_json_snapshot!(record, @r#"
    {
      "number": 1,
      "artifact_sha256": "a1",
      "source_hash": "src-a1",
      "loaded_at": 1700000000123,
      "dependencies": [
        "tokenize"
      ],
      "module_version": "0.1.0",
      "schema": 1
    }
    "#);
    let json = serde_json::to_string(&record)?;
    let back: sandbox_versions::VersionRecord = serde_json::from_str(&json)?;
    assert_eq!(back, record);
    Ok(())
}

#[test]
fn load_times_before_the_epoch_round_trip() -> TestResult {
    let mut history = history(DEFAULT_RETENTION);
    let before = UNIX_EPOCH - Duration::from_micros(1_500);
    let record = history.record(artifact("a1"), before).into_record();
    // Truncated towards the past.
    assert_eq!(record.loaded_at, UNIX_EPOCH - Duration::from_millis(2));
    let json = serde_json::to_value(&record)?;
    assert_eq!(json["loaded_at"], -2);
    let back: sandbox_versions::VersionRecord = serde_json::from_value(json)?;
    assert_eq!(back, record);
    Ok(())
}
