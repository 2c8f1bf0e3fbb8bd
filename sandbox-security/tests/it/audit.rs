//! The hash-chained audit log: entries verify, an edit is named, reopening and shared writers keep the chain.

use sandbox_security::{AuditEvent, AuditLog, Error, GENESIS_HASH};

fn event(n: u32) -> AuditEvent {
    AuditEvent::new("alice", "reload")
        .sandbox(format!("box-{n}"))
        .detail(format!("reload #{n}"))
}

#[test]
fn appended_entries_verify_and_chain() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path)?;
    assert_eq!(log.head(), (0, GENESIS_HASH.to_owned()));
    let written: Vec<_> = (0..3)
        .map(|n| log.append(event(n)))
        .collect::<Result<_, _>>()?;
    log.sync()?;
    assert_eq!(log.head(), (3, written[2].hash.clone()));
    assert_eq!(AuditLog::verify(&path)?, 3);

    let read = AuditLog::entries(&path)?;
    assert_eq!(read, written);
    assert_eq!(read[0].prev_hash, GENESIS_HASH);
    assert_eq!(read[1].prev_hash, read[0].hash);
    assert_eq!(read[2].seq, 2);
    assert_eq!(read[2].sandbox.as_deref(), Some("box-2"));
    assert_eq!(std::fs::read_to_string(&path)?.lines().count(), 3);
    Ok(())
}

#[test]
fn an_edited_line_fails_verification_naming_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path)?;
    for n in 0..3 {
        log.append(event(n))?;
    }
    drop(log);
    let text = std::fs::read_to_string(&path)?;
    let tampered = text
        .replacen("\"actor\":\"alice\"", "\"actor\":\"mallory\"", 2)
        .replacen("\"actor\":\"mallory\"", "\"actor\":\"alice\"", 1);
    assert_ne!(tampered, text);
    std::fs::write(&path, &tampered)?;

    let err = AuditLog::verify(&path)
        .map(|_| ())
        .expect_err("line 2 was edited");
    assert!(matches!(err, Error::AuditBroken { line: 2, .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("is broken at line 2: its hash does not match its content"),
        "{err}"
    );
    let refused = AuditLog::open(&path)
        .map(|_| ())
        .expect_err("open verifies too");
    assert!(
        matches!(refused, Error::AuditBroken { line: 2, .. }),
        "{refused:?}"
    );

    // Removing a line breaks the chain at the line after the gap.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(1);
    std::fs::write(&path, lines.join("\n") + "\n")?;
    let err = AuditLog::verify(&path)
        .map(|_| ())
        .expect_err("line removed");
    assert!(matches!(err, Error::AuditBroken { line: 2, .. }), "{err:?}");

    // A half-written last line is reported too.
    std::fs::write(&path, &text[..text.len() - 10])?;
    let err = AuditLog::verify(&path).map(|_| ()).expect_err("truncated");
    assert!(matches!(err, Error::AuditBroken { line: 3, .. }), "{err:?}");
    Ok(())
}

#[test]
fn reopening_continues_the_chain() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("audit.jsonl");
    let first = AuditLog::open(&path)?;
    first.append(event(0))?;
    let last = first.append(event(1))?;
    drop(first);

    let again = AuditLog::open(&path)?;
    assert_eq!(again.head(), (2, last.hash.clone()));
    let next = again.append(event(2))?;
    assert_eq!(next.seq, 2);
    assert_eq!(next.prev_hash, last.hash);
    assert_eq!(AuditLog::verify(&path)?, 3);
    Ok(())
}

#[test]
fn writers_sharing_a_file_chain_onto_each_other() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("audit.jsonl");
    let a = AuditLog::open(&path)?;
    let b = AuditLog::open(&path)?;
    a.append(event(0))?;
    let from_b = b.append(event(1))?;
    assert_eq!(from_b.seq, 1, "b chains onto a's entry");
    std::thread::scope(|s| {
        for log in [&a, &b] {
            s.spawn(move || {
                for n in 0..20 {
                    log.append(event(n)).expect("append");
                }
            });
        }
    });
    assert_eq!(AuditLog::verify(&path)?, 42);
    assert_eq!(a.append(event(99))?.seq, 42);

    // A writer refuses to chain onto entries another one forged.
    let text = std::fs::read_to_string(&path)?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.push(lines[lines.len() - 1].replace("alice", "mallory"));
    std::fs::write(&path, lines.join("\n") + "\n")?;
    let err = b
        .append(event(7))
        .map(|_| ())
        .expect_err("the forged line breaks the chain");
    assert!(
        matches!(err, Error::AuditBroken { line: 44, .. }),
        "{err:?}"
    );
    Ok(())
}
