//! Call lanes: a socket pair per calling host thread (up to
//! [`MAX_LANES`]), whose worker end a thread of the worker serves, so the
//! caller writes its request and reads its reply itself — two wake-ups per
//! call instead of also waking the channel's reader. Calls beyond the lanes,
//! and every call once the worker cannot serve one, go on the channel.

use std::io::BufReader;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::conn::{Conn, Reply};
use super::fds::{send_all, send_with_fds};
use super::wire::{self, FromWorker, Op, ToWorker};
use crate::error::Error;

/// Most call lanes per worker (one per host thread calling at once); calls
/// beyond them share the channel.
const MAX_LANES: usize = 8;

/// The host's end of a call lane.
struct Lane {
    reader: BufReader<UnixStream>,
    timeout: Option<Duration>,
}

/// A worker's lanes, as its [`Conn`] keeps them.
#[derive(Default)]
pub(super) struct Lanes {
    /// Lanes no call is using.
    idle: Mutex<Vec<Lane>>,
    /// Lanes open, idle or not.
    open: AtomicUsize,
    /// Set when the worker could not serve a lane: calls use the channel.
    off: AtomicBool,
}

impl Conn {
    /// Calls `module` on a lane of its own: the caller writes the request
    /// and reads the reply itself, so a call costs two wake-ups (the
    /// worker's and the caller's) instead of also waking the channel's
    /// reader. `None`: no lane to be had (all in use, or the worker cannot
    /// serve one) — use the channel.
    pub(super) fn call_on_lane(
        &self,
        module: &str,
        request: &[u8],
        timeout: Option<Duration>,
    ) -> Option<Reply> {
        if self.lanes.off.load(Ordering::Acquire) || self.dead().is_some() {
            return None;
        }
        let popped = self.lanes.idle.lock().pop();
        let mut lane = match popped {
            Some(lane) => lane,
            None => self.open_lane()?,
        };
        let frame = wire::encode(&ToWorker::Request {
            id: 0,
            op: Op::Call {
                module: module.to_owned(),
                request: request.to_vec(),
            },
        })
        .ok()?;
        if lane.timeout != timeout {
            if lane.reader.get_ref().set_read_timeout(timeout).is_err() {
                return self.lane_broke(lane);
            }
            lane.timeout = timeout;
        }
        if send_all(lane.reader.get_ref(), &frame).is_err() {
            return self.lane_broke(lane);
        }
        match wire::read_frame(&mut lane.reader) {
            Ok(Some(body)) => match wire::decode::<FromWorker>(&body) {
                Ok(FromWorker::Reply { result, .. }) => {
                    self.lanes.idle.lock().push(lane);
                    Some(result.map_err(Error::from))
                }
                _ => {
                    self.kill_for("it sent a malformed reply on a call lane".into(), None);
                    self.lane_broke(lane)
                }
            },
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                drop(lane);
                self.lanes.open.fetch_sub(1, Ordering::AcqRel);
                Some(Err(self.overran(module, timeout)))
            }
            Ok(None) | Err(_) => self.lane_broke(lane),
        }
    }

    /// Opens a lane: a socket pair whose other end goes to the worker over
    /// the channel. `None` past [`MAX_LANES`] or when that fails.
    fn open_lane(&self) -> Option<Lane> {
        let open = self
            .lanes
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_LANES).then_some(n + 1)
            });
        if open.is_err() {
            return None;
        }
        let opened = (|| {
            let (ours, theirs) = UnixStream::pair().ok()?;
            let frame = wire::encode(&ToWorker::Lane).ok()?;
            send_with_fds(&self.writer.lock(), &frame, &[theirs.as_fd()]).ok()?;
            Some(Lane {
                reader: BufReader::with_capacity(64 << 10, ours),
                timeout: None,
            })
        })();
        if opened.is_none() {
            self.lanes.open.fetch_sub(1, Ordering::AcqRel);
        }
        opened
    }

    /// A lane closed under a call. If the worker died, the caller gets why
    /// (once the reader thread knows); if it lives on, it had no thread for
    /// the lane and never read the request, so the call goes on the channel
    /// (`None`), as every later one does.
    fn lane_broke(&self, lane: Lane) -> Option<Reply> {
        drop(lane);
        self.lanes.open.fetch_sub(1, Ordering::AcqRel);
        if !self.exits_within(Duration::from_millis(200)) {
            self.lanes.off.store(true, Ordering::Release);
            return None;
        }
        let mut pending = self.pending.lock();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pending.dead.is_none() {
            if self.died.wait_until(&mut pending, deadline).timed_out() {
                break;
            }
        }
        Some(Err(Error::WorkerDied {
            cause: pending
                .dead
                .clone()
                .unwrap_or_else(|| "the worker went away".into()),
        }))
    }
}
