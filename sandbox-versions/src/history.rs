//! The bounded version history of one module.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The number of a version of one module.
///
/// Numbers start at 1, grow by one for every distinct artifact recorded, and
/// are never reused, not even after the version has been evicted.
pub type VersionNumber = u32;

/// How many versions a [`VersionHistory`] keeps unless told otherwise.
pub const DEFAULT_RETENTION: usize = 10;

/// One loaded artifact of a module.
///
/// # Serialization
///
/// `loaded_at` is serialized as an integer: milliseconds since the Unix
/// epoch (negative before it). [`VersionHistory::record`] stores the load
/// time truncated to whole milliseconds, so a record survives a
/// serialize/deserialize round trip unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The version number, unique within the module.
    pub number: VersionNumber,
    /// The sha256 of the artifact (hex); the identity of the version.
    pub artifact_sha256: String,
    /// The checksum of the source tree the artifact was built from.
    pub source_hash: String,
    /// When the version was recorded; serialized as Unix milliseconds.
    #[serde(with = "unix_millis")]
    pub loaded_at: SystemTime,
    /// The modules this version declared it depends on.
    pub dependencies: Vec<String>,
    /// The module's own version string (its crate version).
    pub module_version: String,
    /// The module's state-schema number.
    pub schema: u32,
}

/// What the host knows about an artifact it is about to record.
///
/// The history adds the number and the load time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewVersion {
    /// The sha256 of the artifact (hex); the identity of the version.
    pub artifact_sha256: String,
    /// The checksum of the source tree the artifact was built from.
    pub source_hash: String,
    /// The modules this version declares it depends on.
    pub dependencies: Vec<String>,
    /// The module's own version string (its crate version).
    pub module_version: String,
    /// The module's state-schema number.
    pub schema: u32,
}

/// The outcome of [`VersionHistory::record`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "an `Existing` outcome means no swap should happen"]
pub enum Recorded {
    /// A new artifact: it got the next version number.
    New(VersionRecord),
    /// The artifact checksum equals a retained version's: this is that
    /// version, no swap should happen. If that version is not current,
    /// switching to it is a rollback.
    Existing(VersionRecord),
}

impl Recorded {
    /// The record, new or existing.
    pub fn record(&self) -> &VersionRecord {
        match self {
            Self::New(record) | Self::Existing(record) => record,
        }
    }

    /// The record, new or existing, by value.
    pub fn into_record(self) -> VersionRecord {
        match self {
            Self::New(record) | Self::Existing(record) => record,
        }
    }

    /// Whether the artifact was new.
    pub fn is_new(&self) -> bool {
        matches!(self, Self::New(_))
    }
}

/// The bounded version history of one module.
///
/// The history holds at most `retention` versions, oldest first. When a
/// [`record`](Self::record) or [`set_current`](Self::set_current) takes it
/// over the bound, the oldest versions are evicted, except two that are
/// never evicted: the current version and the newest one (the candidate the
/// host is about to swap in). So with `retention == 1` the history holds two
/// versions between recording a new one and switching to it. Evicted records
/// wait in [`take_evicted`](Self::take_evicted) until the host collects them
/// and releases what it kept for them (artifact copies, saved states).
///
/// Recording does not change the current version; the host calls
/// [`set_current`](Self::set_current) once the swap has succeeded.
#[derive(Debug, Clone)]
pub struct VersionHistory {
    module: String,
    retention: usize,
    /// Ascending by number, which is also oldest first.
    records: Vec<VersionRecord>,
    current: Option<VersionNumber>,
    next: VersionNumber,
    evicted: Vec<VersionRecord>,
}

impl VersionHistory {
    /// An empty history for `module` that keeps `retention` versions.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRetention`] if `retention` is 0.
    pub fn new(module: impl Into<String>, retention: usize) -> Result<Self> {
        check_retention(retention)?;
        Ok(Self {
            module: module.into(),
            retention,
            records: Vec::new(),
            current: None,
            next: 1,
            evicted: Vec::new(),
        })
    }

    /// An empty history for `module` that keeps [`DEFAULT_RETENTION`] versions.
    pub fn with_default_retention(module: impl Into<String>) -> Self {
        Self {
            module: module.into(),
            retention: DEFAULT_RETENTION,
            records: Vec::new(),
            current: None,
            next: 1,
            evicted: Vec::new(),
        }
    }

    /// The module this history is about.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// How many versions the history keeps.
    pub fn retention(&self) -> usize {
        self.retention
    }

    /// Changes how many versions the history keeps, evicting at once if the
    /// new bound is lower.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRetention`] if `retention` is 0; the history is left
    /// unchanged.
    pub fn set_retention(&mut self, retention: usize) -> Result<()> {
        check_retention(retention)?;
        self.retention = retention;
        self.enforce_retention();
        Ok(())
    }

    /// Records a loaded artifact.
    ///
    /// The same checksum twice is the same version: if `version`'s
    /// `artifact_sha256` equals (ignoring ASCII case) a retained version's,
    /// that version comes back as [`Recorded::Existing`] and nothing
    /// changes. Otherwise the artifact gets the next number and comes back as
    /// [`Recorded::New`]; an artifact whose version was evicted is new again,
    /// under a new number. `now` is stored truncated to whole milliseconds.
    ///
    /// Recording never changes the current version. It may evict old
    /// versions: collect them with [`take_evicted`](Self::take_evicted).
    ///
    /// # Panics
    ///
    /// When the module has used up all `u32::MAX` version numbers.
    pub fn record(&mut self, version: NewVersion, now: SystemTime) -> Recorded {
        if let Some(existing) = self.find_checksum(&version.artifact_sha256) {
            tracing::debug!(
                module = %self.module,
                version = existing.number,
                "artifact already recorded"
            );
            return Recorded::Existing(existing.clone());
        }
        let number = self.next;
        self.next = number
            .checked_add(1)
            .expect("a module cannot record more than u32::MAX versions");
        let NewVersion {
            artifact_sha256,
            source_hash,
            dependencies,
            module_version,
            schema,
        } = version;
        let record = VersionRecord {
            number,
            artifact_sha256,
            source_hash,
            loaded_at: unix_millis::truncate(now),
            dependencies,
            module_version,
            schema,
        };
        tracing::debug!(module = %self.module, version = number, "version recorded");
        self.records.push(record.clone());
        self.enforce_retention();
        Recorded::New(record)
    }

    /// Makes version `number` the current one, then evicts what the bound
    /// no longer allows (collect it with [`take_evicted`](Self::take_evicted)).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownVersion`] if the version is not retained; the history
    /// is left unchanged.
    pub fn set_current(&mut self, number: VersionNumber) -> Result<()> {
        if self.get(number).is_none() {
            return Err(self.unknown(number));
        }
        tracing::debug!(
            module = %self.module,
            from = ?self.current,
            to = number,
            "current version set"
        );
        self.current = Some(number);
        self.enforce_retention();
        Ok(())
    }

    /// The current version, once [`set_current`](Self::set_current) has
    /// been called.
    pub fn current(&self) -> Option<&VersionRecord> {
        self.current.and_then(|number| self.get(number))
    }

    /// The retained version `number`.
    pub fn get(&self, number: VersionNumber) -> Option<&VersionRecord> {
        self.records
            .binary_search_by_key(&number, |record| record.number)
            .ok()
            .and_then(|index| self.records.get(index))
    }

    /// The retained version whose artifact has this checksum (ignoring
    /// ASCII case).
    pub fn find_checksum(&self, artifact_sha256: &str) -> Option<&VersionRecord> {
        self.records
            .iter()
            .find(|record| record.artifact_sha256.eq_ignore_ascii_case(artifact_sha256))
    }

    /// The retained versions, oldest first.
    pub fn list(&self) -> &[VersionRecord] {
        &self.records
    }

    /// The numbers of the retained versions, oldest first.
    pub fn retained_numbers(&self) -> Vec<VersionNumber> {
        self.records.iter().map(|record| record.number).collect()
    }

    /// The most recently recorded version that is still retained.
    pub fn latest(&self) -> Option<&VersionRecord> {
        self.records.last()
    }

    /// How many versions are retained.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no version is retained.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The retained version `number`, as a rollback target.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyCurrent`] if `number` is the current version,
    /// [`Error::UnknownVersion`] if it is not retained.
    pub fn rollback_target(&self, number: VersionNumber) -> Result<&VersionRecord> {
        if self.current == Some(number) {
            return Err(Error::AlreadyCurrent {
                module: self.module.clone(),
                version: number,
            });
        }
        self.get(number).ok_or_else(|| self.unknown(number))
    }

    /// The retained version numbered just below the current one: the target
    /// of "roll back one step". `None` without a current version or when
    /// the current version is the oldest retained.
    pub fn previous(&self) -> Option<&VersionRecord> {
        let current = self.current?;
        self.records
            .iter()
            .rev()
            .find(|record| record.number < current)
    }

    /// The number the next new version will get, so a host can load an
    /// artifact under its number before recording it (numbers are never
    /// reused, even after eviction).
    pub fn next_number(&self) -> VersionNumber {
        self.next
    }

    /// The records evicted since the last call, oldest first, so the host
    /// can release what it kept for them.
    pub fn take_evicted(&mut self) -> Vec<VersionRecord> {
        std::mem::take(&mut self.evicted)
    }

    fn enforce_retention(&mut self) {
        while self.records.len() > self.retention {
            let newest = self.records.last().map(|record| record.number);
            let Some(oldest) = self
                .records
                .iter()
                .position(|r| Some(r.number) != self.current && Some(r.number) != newest)
            else {
                break;
            };
            let evicted = self.records.remove(oldest);
            tracing::debug!(module = %self.module, version = evicted.number, "version evicted");
            self.evicted.push(evicted);
        }
    }

    fn unknown(&self, requested: VersionNumber) -> Error {
        Error::UnknownVersion {
            module: self.module.clone(),
            requested,
            retained: self.retained_numbers(),
        }
    }
}

fn check_retention(retention: usize) -> Result<()> {
    if retention == 0 {
        return Err(Error::InvalidRetention { retention });
    }
    Ok(())
}

/// `SystemTime` as signed milliseconds since the Unix epoch.
mod unix_millis {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{de, ser, Deserialize, Deserializer, Serializer};

    /// Milliseconds since the epoch, rounded towards the past; `None` when
    /// they do not fit an `i64`.
    fn to_millis(time: SystemTime) -> Option<i64> {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).ok(),
            Err(before) => {
                let before = before.duration();
                let mut millis = i64::try_from(before.as_millis()).ok()?;
                if before.subsec_nanos() % 1_000_000 != 0 {
                    millis = millis.checked_add(1)?;
                }
                millis.checked_neg()
            }
        }
    }

    fn from_millis(millis: i64) -> Option<SystemTime> {
        let magnitude = Duration::from_millis(millis.unsigned_abs());
        if millis >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
    }

    /// `time` without its sub-millisecond part, or `time` itself when it
    /// cannot be represented in milliseconds.
    pub(super) fn truncate(time: SystemTime) -> SystemTime {
        to_millis(time).and_then(from_millis).unwrap_or(time)
    }

    pub(super) fn serialize<S: Serializer>(
        time: &SystemTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let millis = to_millis(*time).ok_or_else(|| {
            ser::Error::custom("load time is out of range for milliseconds since the unix epoch")
        })?;
        serializer.serialize_i64(millis)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SystemTime, D::Error> {
        let millis = i64::deserialize(deserializer)?;
        from_millis(millis).ok_or_else(|| {
            de::Error::custom(format_args!(
                "load time {millis} ms since the unix epoch is out of range for this platform; expected a realistic timestamp"
            ))
        })
    }
}
